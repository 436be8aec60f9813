//! A mixed attack on one listening source while two good senders stream
//! (issue 17's soak): a storm of connections that send nothing, connections
//! that send a header and then nothing (as many as `max_senders`), header
//! drippers that reconnect when closed, connect-and-close floods, and
//! admitted senders that attack the merge: one trickling packets dated six
//! years back, one sending a packet dated 2100, one declaring fat pcapng
//! interfaces without end. Every good packet must arrive, in order, within
//! `merge_max_hold` (plus slack for a loaded machine) of being written,
//! none counted late or dropped for a good sender; the lines about single
//! connections stay within their bound; threads and memory stay within the
//! documented bounds while it lasts; and fds and threads are back to where
//! they were once the source is closed.
//!
//! Its own test binary, so that /proc/self/fd and /proc/self/task count
//! this test's sockets and threads only.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{pcap_header, push_record, within};
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

/// A record at `sec` seconds (and `usec`), 60 bytes of `tag`.
fn record_at(tag: u8, sec: u32, usec: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(76);
    for v in [sec, usec, 60, 60] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r.extend_from_slice(&[tag; 60]);
    r
}

/// A pcapng section header, then interface blocks of 256 KiB of options
/// (an opt_comment of 65,000 bytes, four times): `n` of them.
fn fat_interfaces(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let block = |out: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&len.to_le_bytes());
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut out, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..4 {
        idb.extend_from_slice(&1u16.to_le_bytes()); // opt_comment
        idb.extend_from_slice(&65_000u16.to_le_bytes());
        idb.extend(std::iter::repeat_n(b'x', 65_000));
    }
    idb.extend_from_slice(&[0; 4]); // opt_endofopt
    for _ in 0..n {
        block(&mut out, 1, &idb);
    }
    out
}

fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let from: IpAddr = from.parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// Packet `i` of sender `tag`: at BASE + (2i + tag) ms, 60 bytes naming
/// the sender and its place.
fn record(tag: u8, i: u32) -> Vec<u8> {
    let ms = 2 * u64::from(i) + u64::from(tag);
    let mut data = vec![tag; 60];
    data[1..5].copy_from_slice(&i.to_le_bytes());
    let mut r = Vec::with_capacity(76);
    let (sec, usec) = (BASE_SEC + (ms / 1000) as u32, (ms % 1000) as u32 * 1000);
    push_record(&mut r, sec, usec, &data, 60);
    r
}

/// Runs `f` in a loop on its own thread until `stop`.
fn attacker(
    stop: &Arc<AtomicBool>,
    mut f: impl FnMut() + Send + 'static,
) -> thread::JoinHandle<()> {
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

        let hold = Duration::from_secs(2);
        let config = Config {
            max_senders: MAX_SENDERS,
            header_timeout: Some(Duration::from_secs(1)),
            // Room for a loaded machine: a good sender descheduled for a
            // moment is still waited for.
            merge_window: Duration::from_secs(2),
            merge_max_hold: hold,
            ..Config::default()
        };
        let buffer_mib = (Config::default().buffer_size >> 20) as u64;
        let rss_before = common::rss_kib() / 1024;
        let mut source = Source::start("tcp-listen://127.0.0.1:0", config).unwrap();
        assert!(matches!(
            source.wait_open(Duration::from_secs(5)),
            Opening::Open(1)
        ));
        let addr = source.listening()[0];
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let mut attackers = Vec::new();

        // Header-only connections in every place.
        let holders: Vec<TcpStream> = (0..MAX_SENDERS)
            .map(|_| {
                let mut c = connect_from("127.0.0.11", addr).unwrap();
                c.write_all(&pcap_header()).unwrap();
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
                for b in pcap_header() {
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

        // The holders have been silent for header_timeout: the merge's
        // attackers and the good senders take their places.
        thread::sleep(Duration::from_millis(1200));
        // A trickle six years behind the good senders, never quiet.
        {
            let mut c = connect_from("127.0.0.14", addr).unwrap();
            c.write_all(&pcap_header()).unwrap();
            let mut i = 0;
            attackers.push(attacker(&stop, move || {
                let r = record_at(b't', BASE_SEC - 6 * 365 * 86_400 + i, 0);
                i += 1;
                let _ = c.write_all(&r);
                thread::sleep(Duration::from_millis(30));
            }));
        }
        // One packet dated 2100 among packets of the good senders' time.
        let mut dated_2100 = connect_from("127.0.0.15", addr).unwrap();
        dated_2100.write_all(&pcap_header()).unwrap();
        for r in [
            record_at(b'f', BASE_SEC, 0),
            record_at(b'f', 4_102_444_800, 0),
            record_at(b'f', BASE_SEC, 1),
        ] {
            dated_2100.write_all(&r).unwrap();
        }
        // Fat interface blocks without end, back as soon as closed.
        {
            let fat = fat_interfaces(60);
            attackers.push(attacker(&stop, move || {
                if let Ok(mut c) = connect_from("127.0.0.16", addr) {
                    let _ = c.write_all(&fat);
                }
            }));
        }
        let good: Vec<TcpStream> = ["127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|from| {
                let mut c = connect_from(from, addr).unwrap();
                c.write_all(&pcap_header()).unwrap();
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
        // When each sender's chunk of 1000 packets was written.
        let written: Arc<[std::sync::Mutex<Vec<Instant>>; 2]> = Arc::default();
        let writers: Vec<_> = good
            .into_iter()
            .enumerate()
            .map(|(k, mut c)| {
                let written = written.clone();
                thread::spawn(move || {
                    // 40,000 packets over about 4 s.
                    for chunk in 0..40 {
                        let mut buf = Vec::new();
                        for i in chunk * 1000..(chunk + 1) * 1000 {
                            buf.extend(record(k as u8, i));
                        }
                        c.write_all(&buf).unwrap();
                        written[k].lock().unwrap().push(Instant::now());
                        thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();

        let mut lines = Vec::new();
        let mut next = [0u32; 2];
        let mut peak_threads = 0;
        let mut peak_rss = 0;
        let mut worst = Duration::ZERO;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next.iter().sum::<u32>() < 2 * PER_SENDER {
            match source.next_packet() {
                Next::Packet(p) => {
                    let tag = p.data[0] as usize;
                    if matches!(p.data[0], b't' | b'f') {
                        // The merge's attackers: admitted, harming only
                        // themselves.
                        assert!(p.ts_sec < 4_102_444_800, "the packet dated 2100 came out");
                        continue;
                    }
                    let i = u32::from_le_bytes(p.data[1..5].try_into().unwrap());
                    assert!(tag < 2, "a packet from an attacker: {:?}", &p.data[..8]);
                    assert_eq!(i, next[tag], "sender {tag}'s packet out of order");
                    next[tag] += 1;
                    let chunk = (i / 1000) as usize;
                    let at = written[tag].lock().unwrap().get(chunk).copied();
                    // (A chunk may be taken before its writer notes the time.)
                    if let Some(at) = at {
                        worst = worst.max(at.elapsed());
                    }
                }
                Next::Empty => {
                    assert!(
                        Instant::now() < deadline,
                        "only {next:?} of {PER_SENDER} each arrived"
                    );
                    peak_threads = peak_threads.max(threads());
                    peak_rss = peak_rss.max(common::rss_kib() / 1024);
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
        let merge_attackers = ["127.0.0.14", "127.0.0.15", "127.0.0.16"];
        let mut want = vec!["127.0.0.11", "127.0.0.2", "127.0.0.3"];
        want.extend(merge_attackers);
        want.sort();
        assert_eq!(names, want);
        // The merge's attackers harmed only themselves: the good packets
        // waited no longer than the hold (and a second of scheduling on a
        // loaded machine), and each offence is counted for its offender.
        assert!(
            worst < hold + Duration::from_secs(1),
            "a good packet waited {worst:?} (merge_max_hold {hold:?})"
        );
        let of = |a: &str| {
            source
                .senders()
                .into_iter()
                .find(|(s, _)| s == a)
                .unwrap()
                .1
        };
        assert!(of("127.0.0.14").late > 0, "{:?}", of("127.0.0.14"));
        assert_eq!(of("127.0.0.15").skewed, 1, "{:?}", of("127.0.0.15"));
        // Memory: the buffer, plus for each connection (64 pending, 16
        // admitted) a read buffer of 1 MiB and, while it streams, two
        // spares, whatever the fat interface blocks declared.
        let grown = peak_rss.saturating_sub(rss_before);
        assert!(
            grown <= buffer_mib + 3 * (64 + MAX_SENDERS as u64),
            "RSS grew by {grown} MiB"
        );
        // The pools bound the threads: one per pending connection (at most
        // 64) and per admitted sender (16), beside the listener, the merge
        // and this test's 15 attacker and 2 writer threads (and the storm's
        // short-lived holders, at most 16 at once).
        let bound = threads_before + 64 + MAX_SENDERS + 2 + 17 + 16 + 8;
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
            "{} attack connections, {} lines about connections, peak {} threads (baseline {threads_before}), RSS +{grown} MiB, worst good latency {worst:?}",
            opened.load(Ordering::Relaxed),
            about.len(),
            peak_threads
        );
        drop(holders);
        drop(dated_2100);
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
