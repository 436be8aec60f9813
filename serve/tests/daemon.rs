//! pcapovertcp-serve as the daemon operators run: its --metrics per
//! --upstream server, and --stdout ended by a signal, fed by two servers,
//! and read by Zeek. Real processes on loopback; upstream servers are
//! played by the test on ports it binds itself.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One test at a time: they pace readers against the broker on a small
/// machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A scratch directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pcapovertcp-daemon-test-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pcap (little-endian, Ethernet) of `n` IPv4/UDP packets between four
/// hosts, packet `i` at `base_ms + i * step_ms` ms, `size` bytes of UDP
/// payload, the index and `tag` in the payload (every packet different).
fn capture(n: usize, base_ms: u64, step_ms: u64, size: usize, tag: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + n * (58 + size));
    v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65_535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..n {
        let (a, b) = ((i % 4) as u8, ((i / 3) % 4) as u8);
        let (src, dst) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[0x08, 0x00]);
        let ip_len = (20 + 8 + size) as u16;
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&ip_len.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&[10, 0, 0, src, 10, 1, 0, dst]);
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        p.extend_from_slice(&((8 + size) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        let mut body = vec![tag; size];
        body[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p.extend_from_slice(&body);
        let t = base_ms + i as u64 * step_ms;
        v.extend_from_slice(&((t / 1000) as u32).to_le_bytes());
        v.extend_from_slice(&(((t % 1000) * 1000) as u32).to_le_bytes());
        v.extend_from_slice(&(p.len() as u32).to_le_bytes());
        v.extend_from_slice(&(p.len() as u32).to_le_bytes());
        v.extend_from_slice(&p);
    }
    v
}

/// The capture cut in two streams, each with the capture's header: the
/// first `k` packets, and the rest.
fn halves(pcap: &[u8], k: usize) -> (Vec<u8>, Vec<u8>) {
    let mut pos = 24;
    for _ in 0..k {
        let caplen = u32::from_le_bytes(pcap[pos + 8..pos + 12].try_into().unwrap()) as usize;
        pos += 16 + caplen;
    }
    let mut second = pcap[..24].to_vec();
    second.extend_from_slice(&pcap[pos..]);
    (pcap[..pos].to_vec(), second)
}

/// A running pcapovertcp-serve, killed when dropped; its stderr in a file.
struct Broker {
    child: Child,
    log: PathBuf,
}

impl Broker {
    fn start(args: &[&str], stdout: Stdio) -> Broker {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = scratch("logs").join(format!("broker-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_pcapovertcp-serve"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Broker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for a log line containing `needle`.
    fn wait_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} within {limit:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits (bounded) for the broker to end; whether it succeeded.
    fn wait_success(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not end:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The --metrics port, from its line in the log.
    fn metrics_port(&self) -> u16 {
        let line = self.wait_line("metrics on http://", Duration::from_secs(10));
        line.rsplit_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .expect("the metrics port")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An upstream server played by the test: takes one connection on
/// `listener` (no other: the listener is closed at once), writes `data`,
/// then holds the connection until `release` says so (or is dropped), and
/// closes it.
fn serve_one(
    listener: TcpListener,
    data: Vec<u8>,
    release: Option<mpsc::Receiver<()>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let Ok((mut tcp, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        if tcp.write_all(&data).is_err() {
            return;
        }
        if let Some(release) = release {
            let _ = release.recv_timeout(Duration::from_secs(120));
        }
    })
}

/// One HTTP GET of /metrics on `port`: the body of a 200 answer.
fn scrape(port: u16) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(tcp, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{answer}");
    body.to_string()
}

/// The sample lines of the per-upstream series, in the scrape's order.
fn upstream_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter(|l| l.starts_with("pcapovertcp_serve_upstream_"))
        .map(str::to_string)
        .collect()
}

/// An upstream server's expected series: name, packets, bytes, connects,
/// outages, state.
type Want<'a> = (&'a str, u64, u64, u64, u64, &'a str);

/// The exact per-upstream lines for `servers`, in the order given.
fn expected_lines(servers: &[Want]) -> Vec<String> {
    let mut want = Vec::new();
    for series in 0..5 {
        for &(server, packets, bytes, connects, outages, state) in servers {
            let (name, value) = match series {
                0 => ("packets_total", packets),
                1 => ("bytes_total", bytes),
                2 => ("connected", u64::from(state == "up")),
                3 => ("connects_total", connects),
                _ => ("outages_total", outages),
            };
            want.push(format!(
                "pcapovertcp_serve_upstream_{name}{{upstream=\"{server}\"}} {value}"
            ));
        }
    }
    for s in servers {
        for state in ["connecting", "up", "down"] {
            want.push(format!(
                "pcapovertcp_serve_upstream_state{{upstream=\"{}\",state=\"{state}\"}} {}",
                s.0,
                u64::from(s.5 == state)
            ));
        }
    }
    want
}

/// Scrapes until the per-upstream lines are `want` (bounded).
fn scrape_until(port: u16, want: &[String], broker: &Broker) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = scrape(port);
        if upstream_lines(&body) == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream series are\n{}\nnot\n{}\n{}",
            upstream_lines(&body).join("\n"),
            want.join("\n"),
            broker.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// --metrics with two --upstream servers (merged by the core), one up and
/// one whose port is closed: each has its own series, labelled as written;
/// then the one that was up goes away and is counted as an outage.
#[test]
fn metrics_have_each_upstream_servers_packets_bytes_and_state() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let data = capture(100, 1_700_000_000_000, 1, 50, 1);
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = up.local_addr().unwrap().to_string();
        let b = format!("127.0.0.1:{}", common::closed_port());
        let (release, held) = mpsc::channel();
        let server = serve_one(up, data.clone(), Some(held));
        let mut broker = Broker::start(
            &[
                "--stdout",
                "--upstream",
                &a,
                "--upstream",
                &b,
                "--metrics",
                "127.0.0.1:0",
            ],
            Stdio::null(),
        );
        let port = broker.metrics_port();
        let len = data.len() as u64;
        let body = scrape_until(
            port,
            &expected_lines(&[(&a, 100, len, 1, 0, "up"), (&b, 0, 0, 0, 0, "connecting")]),
            &broker,
        );
        // Each series has its # TYPE, a counter's name ends in _total.
        for (name, kind) in [
            ("upstream_packets_total", "counter"),
            ("upstream_bytes_total", "counter"),
            ("upstream_connected", "gauge"),
            ("upstream_connects_total", "counter"),
            ("upstream_outages_total", "counter"),
            ("upstream_state", "gauge"),
        ] {
            let line = format!("# TYPE pcapovertcp_serve_{name} {kind}");
            assert!(body.lines().any(|l| l == line), "{line}: {body}");
        }
        // The server closes its connection and does not come back.
        release.send(()).unwrap();
        server.join().unwrap();
        scrape_until(
            port,
            &expected_lines(&[(&a, 100, len, 1, 1, "down"), (&b, 0, 0, 0, 0, "connecting")]),
            &broker,
        );
        broker.signal(libc::SIGTERM);
        assert!(
            broker.wait_success(Duration::from_secs(10)),
            "{}",
            broker.log()
        );
    })
}

/// --metrics with one --upstream server (relayed by the tool itself): the
/// same series, from its own reading of the stream.
#[test]
fn metrics_of_a_single_upstream_follow_its_connection() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let data = capture(100, 1_700_000_000_000, 1, 50, 1);
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = up.local_addr().unwrap().to_string();
        let (release, held) = mpsc::channel();
        let server = serve_one(up, data.clone(), Some(held));
        let mut broker = Broker::start(
            &["--stdout", "--upstream", &a, "--metrics", "127.0.0.1:0"],
            Stdio::null(),
        );
        let port = broker.metrics_port();
        let len = data.len() as u64;
        scrape_until(
            port,
            &expected_lines(&[(&a, 100, len, 1, 0, "up")]),
            &broker,
        );
        release.send(()).unwrap();
        server.join().unwrap();
        scrape_until(
            port,
            &expected_lines(&[(&a, 100, len, 1, 1, "down")]),
            &broker,
        );
        broker.signal(libc::SIGTERM);
        assert!(
            broker.wait_success(Duration::from_secs(10)),
            "{}",
            broker.log()
        );
    })
}

/// Reads `from` to its end into `into`, `chunk` bytes at a time with
/// `pause` between reads (a slow reader keeps the broker's writes to
/// standard output in progress).
fn read_paced(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
    chunk: usize,
    pause: Duration,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; chunk];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
            if !pause.is_zero() {
                thread::sleep(pause);
            }
        }
    })
}

/// Waits (bounded) until `got` holds at least `n` bytes.
fn wait_bytes(got: &Mutex<Vec<u8>>, n: usize, broker: &Broker) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} bytes on standard output:\n{}",
            got.lock().unwrap().len(),
            broker.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM in the middle of a stream on --stdout, its reader slow (the
/// broker is within a write most of the time): what was written ends on a
/// whole record, as pcap-file reads it, and the broker ends with status 0
/// and its counters.
#[test]
fn sigterm_ends_stdout_on_a_whole_record() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(90), || {
        // 30 MB of packets of varied sizes, more than the reader takes
        // before the signal.
        let data = capture(30_000, 1_700_000_000_000, 1, 1_000, 2);
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = up.local_addr().unwrap().to_string();
        let (_release, held) = mpsc::channel();
        let _server = serve_one(up, data, Some(held));
        let mut broker = Broker::start(&["--stdout", "--upstream", &a], Stdio::piped());
        let got = Arc::new(Mutex::new(Vec::new()));
        let reader = read_paced(
            broker.child.stdout.take().unwrap(),
            got.clone(),
            3_000,
            Duration::from_millis(1),
        );
        wait_bytes(&got, 2 << 20, &broker);
        broker.signal(libc::SIGTERM);
        assert!(
            broker.wait_success(Duration::from_secs(20)),
            "{}",
            broker.log()
        );
        reader.join().unwrap();
        let got = got.lock().unwrap().clone();
        let mut pcap = pcap_file::pcap::PcapReader::new(&got[..]).expect("a pcap header");
        let mut packets = 0;
        while let Some(p) = pcap.next_packet() {
            if let Err(e) = p {
                panic!("after {packets} whole packets of {} bytes: {e}", got.len());
            }
            packets += 1;
        }
        assert!(packets > 1_000, "{packets} packets");
        let log = broker.log();
        assert!(log.contains("SIGTERM: exiting"), "{log}");
        assert!(log.contains("counters: output=stdout"), "{log}");
        assert!(log.contains("counters: total"), "{log}");
    })
}

/// SIGTERM while standard output takes nothing (its reader stalled, the
/// broker blocked within a write): the broker waits at most 5 s for the
/// write, then says so and exits 0, within a record.
#[test]
fn sigterm_with_a_stalled_stdout_reader_exits_after_5_s_saying_so() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let data = capture(30_000, 1_700_000_000_000, 1, 1_000, 2);
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = up.local_addr().unwrap().to_string();
        let (_release, held) = mpsc::channel();
        let _server = serve_one(up, data, Some(held));
        let mut broker = Broker::start(&["--stdout", "--upstream", &a], Stdio::piped());
        // Never read: the pipe fills and the writer blocks within a write.
        let _stalled = broker.child.stdout.take().unwrap();
        thread::sleep(Duration::from_secs(1));
        let signalled = Instant::now();
        broker.signal(libc::SIGTERM);
        assert!(
            broker.wait_success(Duration::from_secs(20)),
            "{}",
            broker.log()
        );
        let took = signalled.elapsed();
        let log = broker.log();
        assert!(
            log.contains("SIGTERM: standard output took nothing for 5 s; exiting within a record"),
            "{log}"
        );
        assert!(
            took >= Duration::from_millis(4_900) && took < Duration::from_secs(15),
            "exited {took:?} after SIGTERM"
        );
    })
}

/// The pcapng blocks of `stream` (type and body), up to the last whole
/// one.
fn ng_blocks(stream: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= stream.len() {
        let kind = u32::from_le_bytes(stream[pos..pos + 4].try_into().unwrap());
        let len = u32::from_le_bytes(stream[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if len < 12 || pos + len > stream.len() {
            break;
        }
        out.push((kind, &stream[pos + 8..pos + len - 4]));
        pos += len;
    }
    out
}

/// --stdout with two --upstream servers, one of which is stopped and
/// started again in the middle: one pcapng stream, one section header and
/// one interface per server, every packet of both once.
#[test]
fn stdout_of_two_upstreams_is_one_stream_with_one_header() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(90), || {
        const N: usize = 1_000;
        // A's packets on even milliseconds, B's on odd ones.
        let a_data = capture(N, 1_700_000_000_000, 2, 60, 0xa);
        let b_data = capture(N, 1_700_000_000_001, 2, 60, 0xb);
        let (a_first, a_second) = halves(&a_data, N / 2);
        let up_a = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = up_a.local_addr().unwrap().to_string();
        let up_b = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = up_b.local_addr().unwrap().to_string();
        let (_release_b, held_b) = mpsc::channel();
        let _server_b = serve_one(up_b, b_data, Some(held_b));
        // A's first half, then its connection closes and it is gone.
        let server_a = serve_one(up_a, a_first, None);
        let mut broker = Broker::start(
            &["--stdout", "--upstream", &a, "--upstream", &b],
            Stdio::piped(),
        );
        let got = Arc::new(Mutex::new(Vec::new()));
        let reader = read_paced(
            broker.child.stdout.take().unwrap(),
            got.clone(),
            64 << 10,
            Duration::ZERO,
        );
        let packets = |got: &Mutex<Vec<u8>>| {
            let got = got.lock().unwrap();
            ng_blocks(&got).iter().filter(|b| b.0 == 6).count()
        };
        server_a.join().unwrap();
        broker.wait_line("connection lost", Duration::from_secs(20));
        // A again, on the same port, with the rest of its capture.
        let up_a = TcpListener::bind(&a).unwrap();
        let (_release_a, held_a) = mpsc::channel();
        let _server_a = serve_one(up_a, a_second, Some(held_a));
        let deadline = Instant::now() + Duration::from_secs(30);
        while packets(&got) < 2 * N {
            assert!(
                Instant::now() < deadline,
                "{} of {} packets:\n{}",
                packets(&got),
                2 * N,
                broker.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        // Nothing more comes (no duplicate).
        thread::sleep(Duration::from_millis(300));
        broker.signal(libc::SIGTERM);
        assert!(
            broker.wait_success(Duration::from_secs(20)),
            "{}",
            broker.log()
        );
        reader.join().unwrap();
        let got = got.lock().unwrap().clone();
        let blocks = ng_blocks(&got);
        let count = |kind| blocks.iter().filter(|b| b.0 == kind).count();
        assert_eq!(count(0x0a0d_0d0a), 1, "section headers");
        assert_eq!(count(1), 2, "interfaces: one per server");
        assert_eq!(count(6), 2 * N, "{}", broker.log());
        // pcap-file reads it all, to its end.
        let mut ng = pcap_file::pcapng::PcapNgReader::new(&got[..]).expect("a pcapng section");
        let mut read = 0;
        while let Some(b) = ng.next_block() {
            b.expect("a whole block");
            read += 1;
        }
        assert_eq!(read, blocks.len() - 1, "blocks after the section header");
        // Each packet once: its server's tag and its index in its payload.
        let mut seen: Vec<(u8, u64)> = blocks
            .iter()
            .filter(|b| b.0 == 6)
            .map(|(_, body)| {
                let data = &body[20..];
                let payload = &data[42..];
                (
                    payload[8],
                    u64::from_le_bytes(payload[..8].try_into().unwrap()),
                )
            })
            .collect();
        seen.sort_unstable();
        let want: Vec<(u8, u64)> = [0xa, 0xb]
            .into_iter()
            .flat_map(|tag| (0..N as u64).map(move |i| (tag, i)))
            .collect();
        assert!(seen == want, "packets missing or repeated");
    })
}

/// The lines of a Zeek conn.log without its `#` lines and its uid column
/// (random per run), sorted.
fn conn_log(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("conn.log"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("conn.log").display()));
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut fields: Vec<&str> = l.split('\t').collect();
            if fields.len() > 1 {
                fields.remove(1);
            }
            fields.join("\t")
        })
        .collect();
    lines.sort();
    lines
}

/// `zeek -r -` reading --stdout while the one upstream server is stopped
/// and started again between two halves of a trace: its conn.log is
/// `zeek -r` of the trace's.
#[test]
#[cfg_attr(not(zeek), ignore = "needs zeek on PATH (at build time)")]
fn zeek_reading_stdout_across_an_upstream_restart_logs_what_zeek_r_does() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(180), || {
        const N: usize = 2_000;
        let trace = capture(N, 1_700_000_000_000, 3, 80, 3);
        let (first, second) = halves(&trace, N / 2);
        let dir = scratch("zeek");
        let (offline, live) = (dir.join("offline"), dir.join("stdout"));
        for d in [&offline, &live] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dir.join("trace.pcap"), &trace).unwrap();
        let status = Command::new("zeek")
            .args(["-C", "-r"])
            .arg(dir.join("trace.pcap"))
            .current_dir(&offline)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "zeek -r failed");

        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = up.local_addr().unwrap().to_string();
        let server = serve_one(up, first, None);
        let mut broker = Broker::start(&["--stdout", "--upstream", &a], Stdio::piped());
        let mut zeek = Command::new("zeek")
            .args(["-C", "-r", "-"])
            .current_dir(&live)
            .stdin(Stdio::from(broker.child.stdout.take().unwrap()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        server.join().unwrap();
        broker.wait_line("lost", Duration::from_secs(20));
        let up = TcpListener::bind(&a).unwrap();
        let server = serve_one(up, second, None);
        server.join().unwrap();
        broker.wait_line("back after", Duration::from_secs(20));
        // The second stream relayed (it is all written once its counters
        // have every packet), then the broker ends, and so does Zeek.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            broker.signal(libc::SIGUSR1);
            thread::sleep(Duration::from_millis(200));
            let log = broker.log();
            let last = log.lines().rfind(|l| l.contains("output=stdout"));
            if last.is_some_and(|l| l.contains(&format!(" packets={N} "))) {
                break;
            }
            assert!(Instant::now() < deadline, "{log}");
        }
        broker.signal(libc::SIGTERM);
        assert!(
            broker.wait_success(Duration::from_secs(20)),
            "{}",
            broker.log()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = zeek.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = zeek.kill();
                panic!("zeek -r - did not end with the broker");
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "zeek -r - failed");
        let (want, got) = (conn_log(&offline), conn_log(&live));
        assert!(!want.is_empty());
        assert_eq!(got, want);
    })
}
