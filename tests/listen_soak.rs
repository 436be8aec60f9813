//! A mixed attack on one listening source while two good senders stream
//! (issue 17's soak, without the merge-timing parts): a storm of
//! connections that send nothing, connections that send a header and then
//! nothing (as many as `max_senders`), header drippers that reconnect when
//! closed, and connect-and-close floods. Every good packet must arrive, in
//! order, none counted late or dropped for a good sender; the lines about
//! single connections stay within their bound; threads stay within the
//! pools' bounds while it lasts; and fds and threads are back to where
//! they were once the source is closed.
//!
//! Its own test binary, so that /proc/self/fd and /proc/self/task count
//! this test's sockets and threads only.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::within;
use pcapovertcp::{Config, Next, Opening, Source};
use socket2::{Domain, Protocol, Socket, Type};

const BASE_SEC: u32 = 1_700_000_000;
const PER_SENDER: u32 = 40_000;
const MAX_SENDERS: usize = 16;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn fds() -> usize {
    count("/proc/self/fd")
}

fn threads() -> usize {
    count("/proc/self/task")
}

fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let from: IpAddr = from.parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// A little-endian microsecond pcap header, Ethernet.
fn header() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// Packet `i` of sender `tag`: at BASE + (2i + tag) ms, 60 bytes naming
/// the sender and its place.
fn record(tag: u8, i: u32) -> Vec<u8> {
    let ms = 2 * u64::from(i) + u64::from(tag);
    let mut r = Vec::with_capacity(76);
    r.extend_from_slice(&(BASE_SEC + (ms / 1000) as u32).to_le_bytes());
    r.extend_from_slice(&((ms % 1000) as u32 * 1000).to_le_bytes());
    r.extend_from_slice(&60u32.to_le_bytes());
    r.extend_from_slice(&60u32.to_le_bytes());
    let mut data = vec![tag; 60];
    data[1..5].copy_from_slice(&i.to_le_bytes());
    r.extend_from_slice(&data);
    r
}

/// Runs `f` in a loop on its own thread until `stop`.
fn attacker(stop: &Arc<AtomicBool>, f: impl Fn() + Send + 'static) -> thread::JoinHandle<()> {
    let stop = stop.clone();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            f();
        }
    })
}

#[test]
fn a_mixed_attack_costs_the_good_senders_nothing_and_leaves_nothing_behind() {
    within(Duration::from_secs(60), || {
        let fds_before = fds();
        let threads_before = threads();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = Config {
            max_senders: MAX_SENDERS,
            header_timeout: Some(Duration::from_secs(1)),
            // Ordering under load is the merge's concern, not this test's.
            merge_window: Duration::from_secs(2),
            ..Config::default()
        };
        let mut source = Source::start(&format!("tcp-listen://127.0.0.1:{port}"), config).unwrap();
        assert!(matches!(
            source.wait_open(Duration::from_secs(5)),
            Opening::Open(1)
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let mut attackers = Vec::new();

        // Header-only connections in every place.
        let holders: Vec<TcpStream> = (0..MAX_SENDERS)
            .map(|_| {
                let mut c = connect_from("127.0.0.11", addr).unwrap();
                c.write_all(&header()).unwrap();
                c
            })
            .collect();
        // A storm: 30 connections a second, each held 0.5 s, sending nothing.
        {
            let opened = opened.clone();
            attackers.push(attacker(&stop, move || {
                if let Ok(c) = connect_from("127.0.0.10", addr) {
                    opened.fetch_add(1, Ordering::Relaxed);
                    thread::spawn(move || {
                        thread::sleep(Duration::from_millis(500));
                        drop(c);
                    });
                }
                thread::sleep(Duration::from_millis(33));
            }));
        }
        // Eight header drippers, one byte per 150 ms, back as soon as closed.
        for _ in 0..8 {
            let stop2 = stop.clone();
            attackers.push(attacker(&stop, move || {
                let Ok(mut c) = connect_from("127.0.0.12", addr) else { return };
                for b in header() {
                    if stop2.load(Ordering::Relaxed) || c.write_all(&[b]).is_err() {
                        return;
                    }
                    c.set_nonblocking(true).unwrap();
                    let closed = !matches!(c.read(&mut [0u8; 16]), Err(e) if e.kind() == ErrorKind::WouldBlock);
                    c.set_nonblocking(false).unwrap();
                    if closed {
                        return;
                    }
                    thread::sleep(Duration::from_millis(150));
                }
            }));
        }
        // Connect and close, as fast as it goes (a scan).
        {
            let opened = opened.clone();
            attackers.push(attacker(&stop, move || {
                if connect_from("127.0.0.13", addr).is_ok() {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(2));
            }));
        }

        // The holders have been silent for header_timeout: the good senders
        // take their places.
        thread::sleep(Duration::from_millis(1200));
        let good: Vec<TcpStream> = ["127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|from| {
                let mut c = connect_from(from, addr).unwrap();
                c.write_all(&header()).unwrap();
                c
            })
            .collect();
        let admitted = Instant::now() + Duration::from_secs(5);
        while ["127.0.0.2", "127.0.0.3"].iter().any(|a| {
            !source
                .senders()
                .iter()
                .any(|(s, c)| s == a && c.connects == 1)
        }) {
            assert!(
                Instant::now() < admitted,
                "the good senders were not admitted: {:?}",
                source.senders()
            );
            thread::sleep(Duration::from_millis(10));
        }
        let writers: Vec<_> = good
            .into_iter()
            .enumerate()
            .map(|(k, mut c)| {
                thread::spawn(move || {
                    // 40,000 packets over about 4 s.
                    for chunk in 0..40 {
                        let mut buf = Vec::new();
                        for i in chunk * 1000..(chunk + 1) * 1000 {
                            buf.extend(record(k as u8, i));
                        }
                        c.write_all(&buf).unwrap();
                        thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();

        let mut lines = Vec::new();
        let mut next = [0u32; 2];
        let mut peak_threads = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next.iter().sum::<u32>() < 2 * PER_SENDER {
            match source.next_packet() {
                Next::Packet(p) => {
                    let tag = p.data[0] as usize;
                    let i = u32::from_le_bytes(p.data[1..5].try_into().unwrap());
                    assert!(tag < 2, "a packet from an attacker: {:?}", &p.data[..8]);
                    assert_eq!(i, next[tag], "sender {tag}'s packet out of order");
                    next[tag] += 1;
                }
                Next::Empty => {
                    assert!(
                        Instant::now() < deadline,
                        "only {next:?} of {PER_SENDER} each arrived"
                    );
                    peak_threads = peak_threads.max(threads());
                    lines.extend(source.take_messages());
                    source.wait(Duration::from_millis(20));
                }
                Next::Ended => panic!("the source ended"),
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for a in attackers {
            a.join().unwrap();
        }
        lines.extend(source.take_messages());
        for from in ["127.0.0.2", "127.0.0.3"] {
            let (_, s) = source
                .senders()
                .into_iter()
                .find(|(a, _)| a == from)
                .unwrap();
            assert_eq!(
                (s.records, s.dropped, s.late, s.truncated),
                (u64::from(PER_SENDER), 0, 0, 0),
                "{from}: {s:?}"
            );
        }
        // Only admitted senders have entries: the holders and the good two.
        // (The two good senders connect at once: either may be admitted first.)
        let mut names: Vec<String> = source.senders().into_iter().map(|(a, _)| a).collect();
        names.sort();
        assert_eq!(names, ["127.0.0.11", "127.0.0.2", "127.0.0.3"]);
        // The pools bound the threads: one per pending connection (at most
        // 64) and per admitted sender (16), beside the listener, the merge
        // and this test's 13 attacker and 2 writer threads (and the storm's
        // short-lived holders, at most 16 at once).
        let bound = threads_before + 64 + MAX_SENDERS + 2 + 15 + 16 + 8;
        assert!(
            peak_threads <= bound,
            "{peak_threads} threads at the peak, bound {bound}"
        );
        // Lines about single connections: at most 2 × 21 per 10 s window.
        let about: Vec<_> = lines
            .iter()
            .filter(|(level, m)| {
                *level <= log::Level::Info
                    && (m.contains(": sender 127.") || m.contains("refused sender"))
            })
            .collect();
        assert!(
            about.len() <= 42,
            "{} lines about connections: {:#?}",
            about.len(),
            &about[..10]
        );
        println!(
            "{} attack connections, {} lines about connections, peak {} threads (baseline {threads_before})",
            opened.load(Ordering::Relaxed),
            about.len(),
            peak_threads
        );
        drop(holders);
        source.close();
        drop(source);
        // Back to where it was.
        let settled = Instant::now() + Duration::from_secs(3);
        while (fds(), threads()) != (fds_before, threads_before) {
            assert!(
                Instant::now() < settled,
                "fds {} (before {fds_before}), threads {} (before {threads_before})",
                fds(),
                threads()
            );
            thread::sleep(Duration::from_millis(20));
        }
    })
}
