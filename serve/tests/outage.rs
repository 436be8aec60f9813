//! A --connect target that goes away and comes back loses only what was in
//! flight: the broker keeps its queue meanwhile, counts what the target's
//! kernel had not acknowledged, and gives it the stream's header, then
//! what it missed, in order.

mod server;

use std::io::{ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream};
use std::process::{ChildStdin, Stdio};
use std::time::{Duration, Instant};

use server::Server;
use socket2::SockRef;

const HEADER: usize = 24;
/// Each record: a 16-byte header and this much data.
const SIZE: usize = 200;

/// pcap file header (microseconds, Ethernet).
fn header() -> Vec<u8> {
    let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v
}

/// Records `from..to`: record i is dated i seconds, its data all (i % 251).
fn records(from: u32, to: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for i in from..to {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&(SIZE as u32).to_le_bytes());
        v.extend_from_slice(&(SIZE as u32).to_le_bytes());
        v.extend(std::iter::repeat_n((i % 251) as u8, SIZE));
    }
    v
}

/// The seconds of the whole records in `stream` (after the file header).
fn whole(stream: &[u8]) -> Vec<u32> {
    stream[HEADER..]
        .chunks(16 + SIZE)
        .filter(|r| r.len() == 16 + SIZE)
        .map(|r| u32::from_le_bytes(r[..4].try_into().unwrap()))
        .collect()
}

fn accept(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                tcp.set_nonblocking(false).unwrap();
                return tcp;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the broker did not connect");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads at least `n` bytes (bounded).
fn read_at_least(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = vec![0; n];
    tcp.read_exact(&mut got).unwrap();
    got
}

/// What waits in `tcp`'s receive queue, without taking it (no window
/// update: with the window closed, nothing more arrives meanwhile).
fn peek_all(tcp: &TcpStream) -> Vec<u8> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 20];
    let n = SockRef::from(tcp)
        .recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        .unwrap_or(0);
    // SAFETY-free copy: recv initialised the first n bytes.
    buf[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect()
}

fn feed(stdin: &mut ChildStdin, bytes: &[u8]) {
    stdin.write_all(bytes).unwrap();
    stdin.flush().unwrap();
}

/// The number in the broker's line `... connection lost: ...; N packets
/// sent were not acknowledged by it (lost in flight); ...`.
fn in_flight(line: &str) -> u32 {
    let before = line
        .split(" packets sent were not acknowledged")
        .next()
        .unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A socket with a small receive buffer, so that the broker's kernel holds
/// bytes the receiver has not acknowledged when it goes.
fn small_buffer_socket() -> socket2::Socket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_recv_buffer_size(64 << 10).unwrap();
    s
}

fn listen_small(port: u16) -> TcpListener {
    let s = small_buffer_socket();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    s.listen(1).unwrap();
    s.into()
}

fn connect_small(port: u16) -> TcpStream {
    let s = small_buffer_socket();
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    s.into()
}

/// What the receiver got across an outage.
struct Outcome {
    /// Whole records its kernel took on the first connection.
    first: u32,
    /// What the broker counted in flight at the break.
    lost: u32,
    /// The records of the second connection.
    second: Vec<u32>,
    /// Records fed in all.
    total: u32,
}

impl Outcome {
    /// What reached it, what was in flight and what the broker dropped (its
    /// counters line for `target`, whose in-flight count must be this
    /// outcome's): every record once, none twice, in order. Returns the
    /// dropped count.
    fn assert_accounted(&self, log: &str, target: &str) -> u32 {
        let counters = log
            .lines()
            .find(|l| l.contains(&format!("counters: target={target} ")))
            .unwrap_or_else(|| panic!("no counters line: {log}"));
        let field = |name: &str| -> u32 {
            counters
                .split(' ')
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}: {counters}"))
                .parse()
                .unwrap()
        };
        let dropped = field("dropped");
        assert_eq!(field("in_flight"), self.lost, "{counters}");
        assert_eq!(
            self.first + self.lost + self.second.len() as u32 + dropped,
            self.total,
            "{counters}"
        );
        assert!(self.second.windows(2).all(|w| w[0] < w[1]));
        assert!(self
            .second
            .first()
            .is_some_and(|&f| f >= self.first + self.lost));
        dropped
    }

    /// The second connection carries every record after those the first
    /// got and those in flight.
    fn assert_nothing_else_lost(&self) {
        assert_eq!(
            self.second,
            (self.first + self.lost..self.total).collect::<Vec<_>>(),
            "the second connection must carry every record after the first's and those in flight ({})",
            self.lost
        );
    }
}

/// The receiver's side of an outage: on its first connection (`first`
/// makes it) it reads 100 records and then nothing, until its window is
/// shut; it counts the whole records its kernel took (read or waiting) and
/// goes (its unread bytes make the close a reset); `gone` runs then. While
/// it is away `away` more records are fed; `again` makes its second
/// connection, which must start with the header (`line_has`: what the
/// broker's line about the break says besides).
fn outage(
    broker: &mut Server,
    first: impl FnOnce() -> TcpStream,
    gone: impl FnOnce(),
    again: impl FnOnce() -> TcpStream,
    line_has: &str,
    back_line: &str,
    away: u32,
) -> Outcome {
    let mut stdin = broker.child.stdin.take().unwrap();
    let mut tcp = first();
    feed(&mut stdin, &header());
    feed(&mut stdin, &records(0, 20_000));
    let mut seen = read_at_least(&mut tcp, HEADER + 100 * (16 + SIZE));
    // Until what waits in the socket stops growing (the window is shut).
    let mut waiting = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = peek_all(&tcp).len();
        if now == waiting && now > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the receive queue never settled");
        waiting = now;
    }
    seen.extend(peek_all(&tcp));
    let got_first = whole(&seen);
    assert!(
        got_first.len() > 100 && got_first.len() < 20_000,
        "{}",
        got_first.len()
    );
    assert_eq!(got_first, (0..got_first.len() as u32).collect::<Vec<_>>());

    gone();
    drop(tcp);
    let line = broker.wait_log("lost in flight", Duration::from_secs(20));
    eprintln!("{line}");
    let lost = in_flight(&line);
    assert!(line.contains(line_has), "{line}");

    // While it is away, more records.
    let total = 20_000 + away;
    feed(&mut stdin, &records(20_000, total));
    std::thread::sleep(Duration::from_millis(500));

    let mut tcp = again();
    broker.wait_log(back_line, Duration::from_secs(20));
    drop(stdin);
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut second = Vec::new();
    tcp.read_to_end(&mut second).unwrap();
    assert_eq!(second[..HEADER], header()[..]);
    assert!(broker.wait_success(Duration::from_secs(10)));
    Outcome {
        first: got_first.len() as u32,
        lost,
        second: whole(&second),
        total,
    }
}

/// `outage` for a --connect target (the broker started with `args` after
/// --connect, its input `-` among them): its port refuses the broker's redials while it is away,
/// and is listened on again for its second connection. Returns the broker,
/// the outcome and the target as the broker names it.
fn target_outage(args: &[&str], away: u32) -> (Server, Outcome, String) {
    let first = std::cell::RefCell::new(Some(listen_small(0)));
    let port = first
        .borrow()
        .as_ref()
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let mut all = vec!["--connect", &target];
    all.extend_from_slice(args);
    let mut broker = Server::spawn(&all, Stdio::piped());
    let got = outage(
        &mut broker,
        || accept(first.borrow().as_ref().unwrap(), Duration::from_secs(10)),
        || drop(first.borrow_mut().take()),
        || accept(&listen_small(port), Duration::from_secs(15)),
        &format!("{target}: connection lost: "),
        &format!("{target}: back; sending the stream's header, then the "),
        away,
    );
    (broker, got, target)
}

#[test]
fn a_target_that_goes_away_gets_what_it_missed_and_only_the_in_flight_packets_are_lost() {
    let (broker, got, _) = target_outage(&["-"], 5_000);
    got.assert_nothing_else_lost();
    let lost = got.lost;
    let log = broker.log();
    assert!(
        log.contains("; keeping its queue (")
            && log.contains("and redialling: it gets the stream's header, then what it missed"),
        "{log}"
    );
    assert!(
        log.contains(&format!("in_flight={lost}")),
        "the counters name the in-flight loss: {log}"
    );
}

#[test]
fn a_shards_consumer_that_goes_away_gets_what_it_missed_on_its_next_connection() {
    // Records that are not IP all go to shard 0.
    let (mut broker, ports) = Server::listen_ports(
        None,
        "127.0.0.1:0",
        &["--shards", "2", "-"],
        Stdio::piped(),
        2,
    );
    let got = outage(
        &mut broker,
        || connect_small(ports[0]),
        || {},
        || connect_small(ports[0]),
        "(shard 0) left (",
        "; it gets the stream's header, then the ",
        5_000,
    );
    got.assert_nothing_else_lost();
    let lost = got.lost;
    let log = broker.log();
    assert!(
        log.contains("; keeping the shard's queue (")
            && log.contains(
                "for the next client of its port: it gets the stream's header, then what it missed"
            ),
        "{log}"
    );
    assert!(
        log.contains(&format!("{lost} packets sent were not acknowledged")),
        "{log}"
    );
}

#[test]
fn beyond_client_buffer_while_away_whole_packets_are_dropped_and_counted() {
    // 1 MiB: about 4,800 records; the outage brings 5,000 more.
    let (broker, got, target) = target_outage(&["--client-buffer", "1M", "-"], 5_000);
    let log = broker.log();
    let dropped = got.assert_accounted(&log, &target);
    assert!(dropped > 0);
    assert!(log.contains("too slow: its buffer (--client-buffer 1048576 bytes) is full; dropping packets for it until it catches up"), "{log}");
}

#[test]
fn a_target_that_closed_after_reading_everything_loses_nothing() {
    let first = listen_small(0);
    let port = first.local_addr().unwrap().port();
    let target = format!("127.0.0.1:{port}");
    let mut broker = Server::spawn(&["--connect", &target, "-"], Stdio::piped());
    let mut stdin = broker.child.stdin.take().unwrap();
    let mut tcp = accept(&first, Duration::from_secs(10));
    feed(&mut stdin, &header());
    feed(&mut stdin, &records(0, 100));
    let got = read_at_least(&mut tcp, HEADER + 100 * (16 + SIZE));
    assert_eq!(whole(&got), (0..100).collect::<Vec<_>>());
    // It read everything: its close is a FIN, not a reset. The broker,
    // idle, cannot tell that from a receiver that only closed its sending
    // side; the records written after it must not be lost.
    drop(first);
    drop(tcp);
    std::thread::sleep(Duration::from_millis(500));
    feed(&mut stdin, &records(100, 5_100));
    let line = broker.wait_log("lost in flight", Duration::from_secs(20));
    assert_eq!(in_flight(&line), 0, "{line}");
    let mut tcp = accept(&listen_small(port), Duration::from_secs(15));
    broker.wait_log(
        ": back; sending the stream's header",
        Duration::from_secs(10),
    );
    drop(stdin);
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut second = Vec::new();
    tcp.read_to_end(&mut second).unwrap();
    assert_eq!(second[..HEADER], header()[..]);
    assert_eq!(whole(&second), (100..5_100).collect::<Vec<_>>());
    assert!(broker.wait_success(Duration::from_secs(10)));
}

fn spool_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("outage-spool-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn with_a_spool_what_does_not_fit_in_memory_is_kept_on_disk_and_nothing_is_dropped() {
    let dir = spool_dir("all");
    let (broker, got, target) = target_outage(
        &[
            "--client-buffer",
            "1M",
            "--spool",
            dir.to_str().unwrap(),
            "-",
        ],
        5_000,
    );
    got.assert_nothing_else_lost();
    let log = broker.log();
    assert_eq!(got.assert_accounted(&log, &target), 0, "{log}");
    assert!(
        log.contains(&format!(
            "{target}: its queue is full; spooling to {}/pcapovertcp-serve-",
            dir.display()
        )),
        "{log}"
    );
    assert!(log.contains(" spooled_bytes=0"), "{log}");
    // The spool file is removed once read to its end.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn beyond_spool_max_whole_packets_are_dropped_and_counted() {
    let dir = spool_dir("cap");
    let (broker, got, target) = target_outage(
        &[
            "--client-buffer",
            "1M",
            "--spool",
            dir.to_str().unwrap(),
            "--spool-max",
            "1M",
            "-",
        ],
        // 2.2 MB while away: past 1 MiB in memory and 1 MiB spooled.
        10_000,
    );
    let log = broker.log();
    assert!(got.assert_accounted(&log, &target) > 0, "{log}");
    assert!(
        log.contains("too slow: its spool is full (--spool-max 1048576 bytes for all); dropping packets for it until it catches up"),
        "{log}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
