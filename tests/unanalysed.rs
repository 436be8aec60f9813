//! What a closing source had received and Zeek never analysed (issue 21:
//! across a receiver's restart both ends account for what was in flight):
//! the packets still in its buffer and those unread in its socket, counted
//! as `unanalysed` and said in one line. Real loopback sockets; the sender's
//! kernel says when every byte was acknowledged (TIOCOUTQ).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{closes_promptly, listening, loopback_listener, pcap_header, push_record, within};
use pcapovertcp::{Config, Next, Source};

/// `n` records of 100-byte packets, numbered from `first`.
fn records(first: u32, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + n {
        let mut data = [0u8; 100];
        data[..4].copy_from_slice(&i.to_le_bytes());
        push_record(&mut out, 1_700_000_000, i, &data, 100);
    }
    out
}

/// Bytes written to `s` that the peer's kernel has not acknowledged yet
/// (sent or not).
fn unacknowledged(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int to the pointer it is given.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(r, 0, "TIOCOUTQ: {}", std::io::Error::last_os_error());
    usize::try_from(n).unwrap_or(0)
}

/// Waits until `done`, failing after `limit`.
fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Takes `k` packets from the source (at most 10 s).
fn take(source: &mut Source, k: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < k {
        match source.next_packet() {
            Next::Packet(_) => got += 1,
            Next::Empty => {
                assert!(Instant::now() < deadline, "{got} of {k} packets came");
                source.wait(Duration::from_millis(50));
            }
            Next::Ended => panic!("the stream ended after {got} of {k} packets"),
        }
    }
}

/// The line closing says, exactly.
fn closing_line(name: &str, total: u32, buffer: u32, unread: u32) -> String {
    format!(
        "{name}: closing with {total} packets received but not analysed ({buffer} in the source's buffer, {unread} unread in its socket); what was sent after them was not acknowledged: the sender counts it as in flight"
    )
}

#[test]
fn closing_counts_the_packets_in_the_buffer_and_unread_in_the_socket_as_unanalysed() {
    within(Duration::from_secs(30), || {
        // A: the batch the consumer holds; B: the batch the reader waits
        // to hand on; C: left in the socket, with half a record after it.
        const A: u32 = 50;
        const B: u32 = 40;
        const C: u32 = 200;
        const K: u32 = 10;
        let (listener, addr) = loopback_listener();
        let config = Config {
            reconnect: false,
            // Room for one batch at a time: the reader waits with B.
            buffer_size: 1,
            ..Config::default()
        };
        let mut source = Source::start(&addr, config).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut first = pcap_header();
        first.extend(records(0, A));
        peer.write_all(&first).unwrap();
        take(&mut source, K as usize);
        peer.write_all(&records(A, B)).unwrap();
        until("the reader read B", Duration::from_secs(5), || {
            source.counters().records == u64::from(A + B)
        });
        let mut rest = records(A + B, C);
        let cut = records(A + B + C, 1);
        rest.extend_from_slice(&cut[..cut.len() / 2]);
        peer.write_all(&rest).unwrap();
        until(
            "this host's kernel acknowledged every byte",
            Duration::from_secs(5),
            || unacknowledged(&peer) == 0,
        );
        assert_eq!(
            source.counters().records,
            u64::from(A + B),
            "C stays unread while the reader waits with B"
        );

        let said = closes_promptly(&mut source, "holding packets");

        let unanalysed = A + B + C - K;
        let line = closing_line(&addr, unanalysed, A + B - K, C);
        let warnings: Vec<&String> = said
            .iter()
            .filter(|(level, _)| *level == log::Level::Warn)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(warnings, [&line], "all that was said: {said:?}");
        let total = source.counters();
        assert_eq!(total.unanalysed, u64::from(unanalysed), "{total:?}");
        // Read at close: parsed records too; the cut one is neither.
        assert_eq!(total.records, u64::from(A + B + C), "{total:?}");
        assert_eq!(total.truncated, 0, "{total:?}");
        assert_eq!(common::sender(&source, &addr).unanalysed, total.unanalysed);
        let stats = source.stats();
        assert_eq!((stats.received, stats.dropped), (u64::from(K), 0));
        // Every record whose bytes this host acknowledged is accounted for.
        assert_eq!(
            stats.received + stats.dropped + total.unanalysed,
            u64::from(A + B + C)
        );
        // Closing twice counts once.
        source.close();
        assert_eq!(source.counters().unanalysed, total.unanalysed);
        assert!(source.take_messages().is_empty());
    })
}

#[test]
fn a_listening_source_counts_its_senders_unanalysed_packets() {
    within(Duration::from_secs(30), || {
        const N: u32 = 300;
        const K: u32 = 10;
        let config = Config {
            buffer_size: 1,
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut peer = TcpStream::connect(addr).unwrap();
        let mut first = pcap_header();
        first.extend(records(0, 20));
        peer.write_all(&first).unwrap();
        take(&mut source, K as usize);
        for i in 1..N / 20 {
            peer.write_all(&records(i * 20, 20)).unwrap();
        }
        until(
            "this host's kernel acknowledged every byte",
            Duration::from_secs(5),
            || unacknowledged(&peer) == 0,
        );

        let said = closes_promptly(&mut source, "holding packets");

        let sender = common::sender(&source, "127.0.0.1");
        assert_eq!(sender.unanalysed, u64::from(N - K), "{sender:?}");
        assert_eq!(sender.records, u64::from(N), "{sender:?}");
        assert_eq!(source.counters().unanalysed, sender.unanalysed);
        let prefix = format!(
            "{name}: closing with {} packets received but not analysed (",
            N - K
        );
        assert!(
            said.iter().any(|(_, m)| m.starts_with(&prefix)),
            "no line starting {prefix:?} in {said:?}"
        );
    })
}

#[test]
fn a_source_that_delivered_everything_says_nothing_at_close() {
    within(Duration::from_secs(30), || {
        let (listener, addr) = loopback_listener();
        let mut source = Source::start(&addr, Config::default()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut stream = pcap_header();
        stream.extend(records(0, 30));
        peer.write_all(&stream).unwrap();
        take(&mut source, 30);
        let said = closes_promptly(&mut source, "idle");
        assert_eq!(source.counters().unanalysed, 0);
        assert!(
            !said.iter().any(|(_, m)| m.contains("not analysed")),
            "{said:?}"
        );
    })
}

/// The bytes of `s`'s stream its peer's kernel acknowledged: TCP_INFO's
/// `tcpi_bytes_acked` (Linux 4.1+), at offset 120 of `struct tcp_info`.
fn bytes_acked(s: &TcpStream) -> u64 {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes to `info`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    assert!(len >= 128, "TCP_INFO without bytes_acked ({len} bytes)");
    u64::from_ne_bytes(info[120..128].try_into().unwrap())
}

#[test]
fn every_record_this_host_acknowledged_is_analysed_dropped_or_unanalysed() {
    within(Duration::from_secs(60), || {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        const RECORD: u64 = 116;
        const K: usize = 2000;
        let (listener, addr) = loopback_listener();
        let config = Config {
            reconnect: false,
            buffer_size: 256 * 1024,
            ..Config::default()
        };
        let mut source = Source::start(&addr, config).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        // The sender writes for as long as it can, through the close: what
        // arrives while the source closes is either read at close or
        // refused, never acknowledged and lost.
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stream = pcap_header();
                stream.extend(records(0, 200_000));
                peer.set_write_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let mut written = 0;
                while written < stream.len() && !stop.load(Ordering::Relaxed) {
                    match peer.write(&stream[written..]) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
                (written as u64, bytes_acked(&peer))
            })
        };
        take(&mut source, K);
        let said = closes_promptly(&mut source, "streaming");
        // Let the last segments and the reset cross, then stop the sender.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let (written, acked) = sender.join().unwrap();
        let acked_records = acked.saturating_sub(24) / RECORD;
        let stats = source.stats();
        let total = source.counters();
        assert_eq!(
            acked_records,
            stats.received + stats.dropped + total.unanalysed,
            "written {written} bytes, acknowledged {acked}: {stats:?} {total:?} {said:?}"
        );
        assert_eq!(stats.received, K as u64);
        assert!(total.unanalysed > 0, "{total:?}");
        assert!(
            said.iter().any(|(_, m)| m.contains("unread in its socket")),
            "{said:?}"
        );
    })
}
