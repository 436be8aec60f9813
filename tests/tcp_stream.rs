//! The whole Rust path over real TCP sockets on loopback: a server thread
//! writes each shared trace in random chunk sizes; `Source` must deliver
//! every packet byte-identical, with the right timestamp and lengths.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{drain, reference_packets, traces, Rng};
use pcapovertcp::{Config, Error, Next, Source};

/// A source that ends with its first stream, as `zeek -r` ends with its file.
fn once() -> Config {
    Config {
        reconnect: false,
        ..Config::default()
    }
}

/// Serves `bytes` once to the first client, in chunks of 1..=max_chunk bytes.
fn serve_once(listener: TcpListener, bytes: Vec<u8>, seed: u64, max_chunk: u64) -> JoinHandle<()> {
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        let mut rng = Rng(seed);
        let mut pos = 0;
        while pos < bytes.len() {
            let n = (1 + rng.below(max_chunk) as usize).min(bytes.len() - pos);
            if conn.write_all(&bytes[pos..pos + n]).is_err() {
                return; // the client went away; the test says why
            }
            pos += n;
        }
    })
}

fn listen(addr: &str) -> (TcpListener, String) {
    let l = TcpListener::bind(addr).unwrap();
    let a = l.local_addr().unwrap();
    let ep = if a.is_ipv6() {
        format!("[{}]:{}", a.ip(), a.port())
    } else {
        a.to_string()
    };
    (l, ep)
}

#[test]
fn every_trace_arrives_intact_in_random_chunks() {
    common::within(std::time::Duration::from_secs(120), || {
        let mut rng = Rng(0x5eed_1234_abcd);
        for path in traces() {
            let bytes = std::fs::read(&path).unwrap();
            let want = reference_packets(&path);
            for max_chunk in [7, 1500, 70_000] {
                let (listener, ep) = listen("127.0.0.1:0");
                let server = serve_once(listener, bytes.clone(), rng.next(), max_chunk);
                let mut source =
                    Source::open(&ep, once()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let got = drain(&mut source);
                server.join().unwrap();
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{} (chunks ≤ {max_chunk})",
                    path.display()
                );
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g, w, "{} packet {i} (chunks ≤ {max_chunk})", path.display());
                }
                let stats = source.stats();
                assert_eq!(stats.link, want.len() as u64);
                assert_eq!(stats.received, want.len() as u64);
                assert_eq!(stats.dropped, 0);
                assert_eq!(
                    stats.bytes_received,
                    want.iter().map(|w| u64::from(w.2)).sum::<u64>()
                );
            }
        }
    })
}

#[test]
fn a_small_ring_applies_backpressure_without_loss() {
    common::within(std::time::Duration::from_secs(120), || {
        // 64 KiB of ring for a 1.6 MB trace: the reader waits for space many times.
        let path = common::traces_dir().join("smb/smb2.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let want = reference_packets(&path);
        let (listener, ep) = listen("127.0.0.1:0");
        let server = serve_once(listener, bytes, 42, 100_000);
        let config = Config {
            buffer_size: 64 * 1024,
            ..once()
        };
        let mut source = Source::open(&ep, config).unwrap();
        let got = drain(&mut source);
        server.join().unwrap();
        assert_eq!(got, want);
    })
}

#[test]
fn ipv6_loopback_and_host_names() {
    common::within(std::time::Duration::from_secs(120), || {
        let path = common::traces_dir().join("dns53.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let want = reference_packets(&path);
        let (listener, ep) = listen("[::1]:0");
        assert!(ep.starts_with("[::1]:"));
        let server = serve_once(listener, bytes.clone(), 1, 100);
        assert_eq!(drain(&mut Source::open(&ep, once()).unwrap()), want);
        server.join().unwrap();

        // "localhost" may resolve to ::1 first; every address is tried in order.
        let (listener, ep) = listen("127.0.0.1:0");
        let port = ep.rsplit(':').next().unwrap();
        let server = serve_once(listener, bytes, 2, 100);
        let mut source = Source::open(&format!("localhost:{port}"), once()).unwrap();
        assert_eq!(drain(&mut source), want);
        server.join().unwrap();
    })
}

#[test]
fn open_errors_are_one_clear_line() {
    common::within(std::time::Duration::from_secs(120), || {
        // Refused: a port that was just free.
        let (listener, ep) = listen("127.0.0.1:0");
        drop(listener);
        let e = Source::open(&ep, once()).err().expect("must fail");
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&ep) && msg.contains("refused") && !msg.contains('\n'),
            "{msg}"
        );

        // A peer that is not PCAP-over-IP.
        let (listener, ep) = listen("127.0.0.1:0");
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n");
            thread::sleep(Duration::from_millis(100));
        });
        let msg = Source::open(&ep, once())
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            msg.contains(&ep)
                && msg.contains("not a pcap or pcapng stream")
                && msg.contains("SSH-2.0"),
            "{msg}"
        );
        server.join().unwrap();

        // A peer that closes before sending a header.
        let (listener, ep) = listen("127.0.0.1:0");
        let server = thread::spawn(move || drop(listener.accept().unwrap()));
        let msg = Source::open(&ep, once())
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            msg.contains(&ep) && msg.contains("before a pcap header"),
            "{msg}"
        );
        server.join().unwrap();

        // Malformed endpoints never reach the network.
        for bad in ["", "127.0.0.1", "127.0.0.1:0", "[::1:5", "host:99999"] {
            let e = Source::open(bad, once()).err().expect("must fail");
            assert!(matches!(e, Error::Endpoint(_)), "{bad}: {e:?}");
        }
    })
}

#[test]
fn close_while_the_peer_is_idle_returns_promptly() {
    common::within(std::time::Duration::from_secs(120), || {
        // Header, one packet, then silence with the connection open.
        let path = common::traces_dir().join("dns53.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let (listener, ep) = listen("127.0.0.1:0");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&bytes).unwrap();
            let _ = rx.recv(); // hold the connection open until the test ends
        });
        let mut source = Source::open(&ep, once()).unwrap();
        let mut n = 0;
        while n < reference_packets(&path).len() {
            match source.next_packet() {
                Next::Packet(_) => n += 1,
                Next::Empty => {
                    source.wait(Duration::from_millis(100));
                }
                Next::Ended => panic!("the stream did not end"),
            }
        }
        assert_eq!(source.next_packet(), Next::Empty);
        // Must not hang on the idle socket.
        common::closes_promptly(&mut source, "the peer is idle");
        tx.send(()).unwrap();
        server.join().unwrap();
    })
}

#[test]
fn a_peer_that_trickles_one_byte_at_a_time() {
    common::within(std::time::Duration::from_secs(120), || {
        let path = common::traces_dir().join("http-vlan-0.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let want = reference_packets(&path);
        let (listener, ep) = listen("127.0.0.1:0");
        // Chunks of exactly one byte, each its own write (TCP_NODELAY).
        let server = serve_once(listener, bytes, 3, 1);
        let mut source = Source::open(&ep, once()).unwrap();
        assert_eq!(drain(&mut source), want);
        server.join().unwrap();
    })
}
