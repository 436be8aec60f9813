//! Field behaviour over real loopback sockets: nothing waits without a word,
//! every wait ends within its bound, and closing is prompt whatever the
//! reader is doing (issue #8). Each test is bounded by `within`.

mod common;

use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{drain, loopback_listener, messages, trace, within};
use pcapovertcp::{Config, Error, Next, Opening, Source};

fn free_port_endpoint() -> String {
    loopback_listener().1
}

fn reconnecting() -> Config {
    Config {
        reconnect: true,
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..Config::default()
    }
}

/// Waits (in `wait_open` steps, as the shim does) until a message that
/// contains `needle` has been logged; all messages so far.
fn wait_for_message(source: &mut Source, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if !source.is_open_or_waiting() {
            break;
        }
        seen.extend(messages(source));
        if seen.iter().any(|m| m.contains(needle)) {
            return seen;
        }
    }
    panic!("no message containing {needle:?} within {limit:?}: {seen:?}");
}

trait Step {
    fn is_open_or_waiting(&mut self) -> bool;
}

impl Step for Source {
    /// One wait step of at most 100 ms; false once opening failed.
    fn is_open_or_waiting(&mut self) -> bool {
        match self.wait_open(Duration::from_millis(100)) {
            Opening::Open(_) => {
                self.wait(Duration::from_millis(100));
                true
            }
            Opening::Waiting => true,
            Opening::Failed(e) => panic!("opening failed: {e}"),
        }
    }
}

/// Waits, in the shim's steps, until opening fails; the error.
fn open_failure(source: &mut Source) -> Error {
    loop {
        match source.wait_open(Duration::from_millis(100)) {
            Opening::Failed(e) => return e,
            Opening::Waiting => {}
            Opening::Open(lt) => panic!("opened (link type {lt}); expected a failure"),
        }
    }
}

// --- 3. a wrong endpoint is reported at once, while the wait goes on -------

#[test]
fn a_refused_endpoint_is_reported_within_two_seconds_and_waited_for() {
    within(Duration::from_secs(30), || {
        let ep = free_port_endpoint();
        let mut source = Source::start(&ep, Config::default()).unwrap();
        let msgs = wait_for_message(&mut source, "waiting for a stream", Duration::from_secs(2));
        let line = msgs.iter().find(|m| m.contains("waiting")).unwrap();
        assert!(
            line.contains(&ep) && line.contains("refused") && line.contains("open_timeout"),
            "{line}"
        );
        // Still waiting, said once.
        assert!(matches!(
            source.wait_open(Duration::from_millis(500)),
            Opening::Waiting
        ));
        assert!(messages(&source).iter().all(|m| !m.contains("waiting")));
        common::closes_promptly(&mut source, "retrying a refused endpoint");
    })
}

#[test]
fn messages_before_an_open_failure_are_kept() {
    within(Duration::from_secs(30), || {
        let ep = free_port_endpoint();
        let config = Config {
            open_timeout: Some(Duration::from_millis(600)),
            ..reconnecting()
        };
        let mut source = Source::start(&ep, config).unwrap();
        let e = open_failure(&mut source);
        assert!(matches!(e, Error::OpenTimeout { .. }), "{e:?}");
        assert!(e.to_string().contains("refused"), "{e}");
        let msgs = messages(&source);
        assert!(
            msgs.iter()
                .any(|m| m.contains(&ep) && m.contains("waiting")),
            "{msgs:?}"
        );
    })
}

// --- 2. open_timeout is a deadline, whatever the peer does ----------------

/// A server that accepts and sends `prefix`, then nothing, until released.
fn silent_server(prefix: &'static [u8]) -> (String, mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (listener, ep) = loopback_listener();
    let (tx, rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        loop {
            if let Ok((mut c, _)) = listener.accept() {
                c.write_all(prefix).unwrap();
                held.push(c);
            }
            match rx.recv_timeout(Duration::from_millis(10)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    });
    (ep, tx, server)
}

#[test]
fn open_timeout_ends_the_wait_for_a_silent_server() {
    within(Duration::from_secs(30), || {
        for (prefix, says) in [
            (&b""[..], "accepted the connection but sent no pcap header"),
            (
                &b"\xd4\xc3\xb2\xa1\x02\x00\x04"[..],
                "sent 7 bytes, not yet a whole pcap header",
            ),
        ] {
            for reconnect in [true, false] {
                let (ep, release, server) = silent_server(prefix);
                let config = Config {
                    reconnect,
                    open_timeout: Some(Duration::from_millis(1500)),
                    ..Config::default()
                };
                let t = Instant::now();
                let mut source = Source::start(&ep, config).unwrap();
                let e = open_failure(&mut source);
                let took = t.elapsed();
                assert!(took < Duration::from_millis(2500), "{took:?}");
                let msg = e.to_string();
                assert!(msg.contains(&ep) && msg.contains(says), "{msg}");
                // While it waited, the operator was told after a second.
                let msgs = messages(&source);
                assert!(
                    msgs.iter()
                        .any(|m| m.contains(&ep) && m.contains("no pcap header has arrived")),
                    "{msgs:?}"
                );
                release.send(()).unwrap();
                server.join().unwrap();
            }
        }
    })
}

// --- 6. a header in pieces opens with the real link type -------------------

#[test]
fn a_header_in_two_writes_opens_with_the_streams_link_type() {
    within(Duration::from_secs(30), || {
        let (bytes, want) = trace("dns53.pcap");
        let (listener, ep) = loopback_listener();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.set_nodelay(true).unwrap();
            c.write_all(&bytes[..10]).unwrap();
            thread::sleep(Duration::from_millis(300));
            c.write_all(&bytes[10..24]).unwrap();
            thread::sleep(Duration::from_millis(100));
            c.write_all(&bytes[24..]).unwrap();
        });
        let config = Config {
            reconnect: false,
            ..Config::default()
        };
        let mut source = Source::open(&ep, config).unwrap();
        assert_eq!(source.link_type(), Some(1), "Ethernet, never -1");
        let got = drain(&mut source);
        server.join().unwrap();
        assert_eq!(got, want);
    })
}

// --- 1. dead and idle peers ------------------------------------------------

#[test]
fn idle_timeout_treats_silence_as_an_outage_and_reconnects() {
    within(Duration::from_secs(30), || {
        let (bytes, want) = trace("dns53.pcap");
        let n = want.len();
        let (listener, ep) = loopback_listener();
        let (tx, rx) = mpsc::channel::<()>();
        let server = thread::spawn(move || {
            // First connection: the trace, then silence (held open).
            let (mut a, _) = listener.accept().unwrap();
            a.write_all(&bytes).unwrap();
            // The reader gives up on it and comes back.
            let (mut b, _) = listener.accept().unwrap();
            b.write_all(&bytes).unwrap();
            let _ = rx.recv();
            drop(a);
        });
        let config = Config {
            idle_timeout: Some(Duration::from_millis(500)),
            ..reconnecting()
        };
        let mut source = Source::open(&ep, config).unwrap();
        let mut got = 0;
        while got < 2 * n {
            match source.next_packet() {
                Next::Packet(_) => got += 1,
                Next::Empty => {
                    source.wait(Duration::from_millis(100));
                }
                Next::Ended => panic!("ended"),
            }
        }
        let msgs = messages(&source);
        assert!(
            msgs.iter().any(|m| m.contains(&ep)
                && m.contains("connection lost")
                && m.contains("sent nothing for 0.5 s (PcapOverTcp::idle_timeout)")),
            "{msgs:?}"
        );
        assert!(source.counters().connects >= 2);
        tx.send(()).unwrap();
        server.join().unwrap();
    })
}

#[test]
fn a_quiet_healthy_peer_is_not_an_outage_without_idle_timeout() {
    within(Duration::from_secs(30), || {
        let (bytes, _) = trace("dns53.pcap");
        let (listener, ep) = loopback_listener();
        let (tx, rx) = mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (mut a, _) = listener.accept().unwrap();
            a.write_all(&bytes).unwrap();
            let _ = rx.recv();
        });
        // Short keepalive: probes go out during the quiet second and are
        // answered by the peer's kernel, so nothing fails.
        let config = Config {
            keepalive: Some(pcapovertcp::Keepalive {
                idle: Duration::from_secs(1),
                interval: Duration::from_secs(1),
                probes: 1,
            }),
            ..reconnecting()
        };
        let mut source = Source::open(&ep, config).unwrap();
        thread::sleep(Duration::from_millis(3500));
        let c = source.counters();
        assert_eq!((c.connects, c.disconnects), (1, 0), "{c:?}");
        let msgs = messages(&source);
        assert!(msgs.iter().all(|m| !m.contains("lost")), "{msgs:?}");
        while let Next::Packet(_) = source.next_packet() {}
        tx.send(()).unwrap();
        server.join().unwrap();
    })
}

// --- 5. an idle Zeek hears about an outage at once -------------------------

#[test]
fn a_message_wakes_an_idle_consumer() {
    within(Duration::from_secs(30), || {
        let (bytes, want) = trace("dns53.pcap");
        let n = want.len();
        let (listener, ep) = loopback_listener();
        let (tx, rx) = mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (mut a, _) = listener.accept().unwrap();
            a.write_all(&bytes).unwrap();
            let _ = rx.recv();
            drop(a); // the outage
            drop(listener); // and nothing to reconnect to
        });
        let mut source = Source::open(&ep, reconnecting()).unwrap();
        let mut got = 0;
        while got < n {
            match source.next_packet() {
                Next::Packet(_) => got += 1,
                _ => {
                    source.wait(Duration::from_millis(100));
                }
            }
        }
        // Idle now: nothing to take, the fd is quiet.
        assert_eq!(source.next_packet(), Next::Empty);
        let _ = messages(&source);
        assert!(!source.wait(Duration::from_millis(300)));
        tx.send(()).unwrap();
        assert!(
            source.wait(Duration::from_secs(5)),
            "the outage did not wake the consumer"
        );
        assert!(source.has_messages());
        let msgs = messages(&source);
        assert!(
            msgs.iter().any(|m| m.contains("connection lost")),
            "{msgs:?}"
        );
        // Taking nothing clears the fd again: an idle Zeek must not spin.
        assert_eq!(source.next_packet(), Next::Empty);
        assert!(!source.wait(Duration::from_millis(300)));
        server.join().unwrap();
    })
}

// --- 4. closing is prompt in every reader state ----------------------------

#[test]
fn close_returns_within_a_second_while_backing_off() {
    within(Duration::from_secs(30), || {
        let ep = free_port_endpoint();
        let config = Config {
            reconnect_min: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(60),
            ..Config::default()
        };
        let mut source = Source::start(&ep, config).unwrap();
        wait_for_message(&mut source, "refused", Duration::from_secs(2));
        common::closes_promptly(&mut source, "backing off");
    })
}

#[test]
fn close_returns_within_a_second_during_a_stalled_connect() {
    within(Duration::from_secs(30), || {
        // A listener whose accept queue is full: the kernel drops further
        // SYNs, so a connect to it stalls (on loopback, with no route out).
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            fillers.push(s);
        }
        thread::sleep(Duration::from_millis(200));
        let mut source = Source::start(&addr.to_string(), Config::default()).unwrap();
        // The connect has begun and does not complete; after a second the
        // operator is told, while it goes on.
        let msgs = wait_for_message(&mut source, "gets no answer", Duration::from_secs(3));
        let line = msgs.iter().find(|m| m.contains("gets no answer")).unwrap();
        assert!(
            line.contains(&addr.to_string()) && line.contains("open_timeout"),
            "{line}"
        );
        common::closes_promptly(&mut source, "connecting");
        drop(fillers);
        drop(socket);
    })
}

#[test]
fn close_returns_within_a_second_while_reading_a_silent_peer() {
    within(Duration::from_secs(30), || {
        let (ep, release, server) = silent_server(b"");
        let mut source = Source::start(&ep, Config::default()).unwrap();
        assert!(matches!(
            source.wait_open(Duration::from_millis(500)),
            Opening::Waiting
        ));
        common::closes_promptly(&mut source, "waiting for a header");
        release.send(()).unwrap();
        server.join().unwrap();
    })
}

#[test]
fn close_returns_within_a_second_with_a_full_ring() {
    within(Duration::from_secs(60), || {
        let (bytes, _) = trace("smb/smb2.pcap");
        let (listener, ep) = loopback_listener();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&bytes[..24]).unwrap();
            // Records for ever (until the reader goes away).
            while c.write_all(&bytes[24..]).is_ok() {}
        });
        let config = Config {
            buffer_size: 64 * 1024,
            ..Config::default()
        };
        let mut source = Source::open(&ep, config).unwrap();
        // Take nothing: the ring fills and the reader waits for room.
        thread::sleep(Duration::from_millis(500));
        assert!(source.counters().bytes > 64 * 1024);
        common::closes_promptly(&mut source, "waiting for room in a full ring");
        server.join().unwrap();
    })
}
