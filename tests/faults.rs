//! Connection life and faults over real loopback sockets: reconnects, a
//! server that dies mid-record, a server that is not up yet, corrupt
//! streams, backpressure with a slow consumer, and the drop policy.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::Write;
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use common::{collect, messages, trace, within};
use pcapovertcp::{Config, Next, Source};

fn fast_reconnect() -> Config {
    Config {
        reconnect: true,
        reconnect_min: Duration::from_millis(5),
        reconnect_max: Duration::from_millis(50),
        ..Config::default()
    }
}

/// The byte offset at which the n-th record of a little-endian pcap starts.
fn record_offset(pcap: &[u8], n: usize) -> usize {
    let mut at = 24;
    for _ in 0..n {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + caplen;
    }
    at
}

#[test]
fn reconnects_after_the_server_closes_and_delivers_both_streams_once() {
    within(Duration::from_secs(120), || {
        let (a, want_a) = trace("dns53.pcap");
        let (b, want_b) = trace("http-vlan-0.pcap");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = listener.local_addr().unwrap().to_string();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&a).unwrap();
            drop(c);
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&b).unwrap();
            // The second connection stays open until the test has its packets.
            let _ = release_rx.recv();
        });
        let mut source = Source::open(&ep, fast_reconnect()).unwrap();
        let got = collect(
            &mut source,
            want_a.len() + want_b.len(),
            Duration::from_secs(60),
        );
        let mut want = want_a.clone();
        want.extend(want_b);
        assert_eq!(got, want);
        let c = source.counters();
        assert!(c.connects >= 2 && c.disconnects >= 1, "{c:?}");
        assert_eq!(c.truncated, 0);
        source.close();
        release_tx.send(()).unwrap();
        server.join().unwrap();
        let msgs = messages(&source);
        assert_eq!(
            msgs.iter()
                .filter(|m| m.contains("connection lost"))
                .count(),
            1,
            "{msgs:?}"
        );
        assert_eq!(
            msgs.iter()
                .filter(|m| m.contains("connection restored after"))
                .count(),
            1,
            "{msgs:?}"
        );
    })
}

#[test]
fn server_killed_mid_record_loses_only_the_cut_record() {
    within(Duration::from_secs(120), || {
        let (a, want_a) = trace("smb/smb2.pcap");
        let (b, want_b) = trace("dns53.pcap");
        // Cut in the middle of record 100 of the first stream.
        let cut = record_offset(&a, 100) + 16 + 5;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&a[..cut]).unwrap();
            drop(c); // the "killed" server
                     // A restarted server on the same port.
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&b).unwrap();
            thread::sleep(Duration::from_millis(300));
        });
        let mut source = Source::open(&ep, fast_reconnect()).unwrap();
        let got = collect(&mut source, 100 + want_b.len(), Duration::from_secs(60));
        server.join().unwrap();
        let mut want = want_a[..100].to_vec();
        want.extend(want_b);
        assert_eq!(got, want);
        let c = source.counters();
        assert_eq!(c.truncated, 1, "{c:?}");
        assert_eq!(source.stats().dropped, 1);
    })
}

#[test]
fn open_waits_for_a_server_that_is_not_up_yet() {
    within(Duration::from_secs(120), || {
        let (a, want) = trace("dns53.pcap");
        // Reserve a port, free it, and start the server on it a little later.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ep = format!("127.0.0.1:{port}");
        let server = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&a).unwrap();
            thread::sleep(Duration::from_millis(300));
        });
        let mut source = Source::open(&ep, fast_reconnect()).expect("open waits for the server");
        assert_eq!(
            collect(&mut source, want.len(), Duration::from_secs(60)),
            want
        );
        server.join().unwrap();
    })
}

#[test]
fn open_timeout_gives_up_with_the_last_error() {
    within(Duration::from_secs(120), || {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config {
            open_timeout: Some(Duration::from_millis(200)),
            ..fast_reconnect()
        };
        let e = Source::open(&format!("127.0.0.1:{port}"), config)
            .err()
            .expect("must give up");
        assert!(e.to_string().contains("refused"), "{e}");
    })
}

#[test]
fn corrupt_stream_is_reported_and_the_reader_reconnects() {
    within(Duration::from_secs(120), || {
        let (a, want_a) = trace("dns53.pcap");
        let (b, want_b) = trace("dns53.pcap");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&a).unwrap();
            // A record header claiming 4 GiB.
            c.write_all(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])
                .unwrap();
            let _ = c.flush();
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&b).unwrap();
            thread::sleep(Duration::from_millis(300));
        });
        let mut source = Source::open(&ep, fast_reconnect()).unwrap();
        let got = collect(
            &mut source,
            want_a.len() + want_b.len(),
            Duration::from_secs(60),
        );
        server.join().unwrap();
        assert_eq!(got.len(), want_a.len() + want_b.len());
        assert_eq!(source.counters().corrupt, 1);
        source.close();
        let msgs = messages(&source);
        assert!(
            msgs.iter()
                .any(|m| m.contains("connection lost") && m.contains("4294967295")),
            "{msgs:?}"
        );
    })
}

/// A synthetic little-endian pcap of `n` 64-byte packets, each numbered.
fn numbered_pcap(n: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + n as usize * 80);
    v.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..n {
        v.extend_from_slice(&(1_700_000_000 + i / 1000).to_le_bytes());
        v.extend_from_slice(&((i % 1000) * 1000).to_le_bytes());
        v.extend_from_slice(&64u32.to_le_bytes());
        v.extend_from_slice(&64u32.to_le_bytes());
        let mut pkt = [0u8; 64];
        pkt[..4].copy_from_slice(&i.to_le_bytes());
        pkt[60..].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        v.extend_from_slice(&pkt);
    }
    v
}

fn hash_of(packets: impl Iterator<Item = Vec<u8>>) -> u64 {
    let mut h = DefaultHasher::new();
    for p in packets {
        h.write(&p);
    }
    h.finish()
}

#[test]
fn a_million_packets_under_backpressure_arrive_complete() {
    within(Duration::from_secs(120), || {
        const N: u32 = 1_000_000;
        let stream = numbered_pcap(N);
        let want_hash = hash_of(stream[24..].chunks(80).map(|r| r[16..].to_vec()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&stream).unwrap();
        });
        let config = Config {
            reconnect: false,
            buffer_size: 1 << 20, // 1 MiB for an 80 MB stream
            ..Config::default()
        };
        let mut source = Source::open(&ep, config).unwrap();
        let mut h = DefaultHasher::new();
        let mut count = 0u32;
        loop {
            match source.next_packet() {
                Next::Packet(p) => {
                    h.write(p.data);
                    count += 1;
                    // A deliberately slow consumer: a pause every 50k packets.
                    if count.is_multiple_of(50_000) {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                Next::Empty => {
                    source.wait(Duration::from_millis(100));
                }
                Next::Ended => break,
            }
        }
        server.join().unwrap();
        assert_eq!(count, N);
        assert_eq!(h.finish(), want_hash);
        assert_eq!(source.stats().dropped, 0);
    })
}

#[test]
fn drop_when_full_drops_counted_packets_and_keeps_reading() {
    within(Duration::from_secs(120), || {
        const N: u32 = 200_000;
        let stream = numbered_pcap(N);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = listener.local_addr().unwrap().to_string();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&stream).unwrap();
            drop(c);
            done_tx.send(()).unwrap();
        });
        let config = Config {
            reconnect: false,
            drop_when_full: true,
            buffer_size: 256 * 1024,
            ..Config::default()
        };
        let mut source = Source::open(&ep, config).unwrap();
        // Consume nothing until the server has written everything: the reader
        // must keep draining the socket (or the server would block for ever).
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server was not drained");
        let mut received = 0u64;
        loop {
            match source.next_packet() {
                Next::Packet(_) => received += 1,
                Next::Empty => {
                    source.wait(Duration::from_millis(100));
                }
                Next::Ended => break,
            }
        }
        server.join().unwrap();
        let stats = source.stats();
        assert!(stats.dropped > 0, "nothing was dropped: {stats:?}");
        assert_eq!(stats.received, received);
        assert_eq!(
            stats.dropped,
            u64::from(N) - received,
            "dropped = sent - received"
        );
        assert_eq!(source.counters().dropped, stats.dropped);
    })
}
