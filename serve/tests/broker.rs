//! pcapovertcp-serve as a PCAP-over-IP broker: the real binary relays a
//! generated capture from its standard input, at full speed, to five
//! clients on loopback, one of which stops reading for a while. The other
//! four get every packet, byte for byte; the paused one's losses are
//! counted exactly (--slow-client=drop) or it is closed
//! (--slow-client=disconnect).

#[path = "../../tests/common/mod.rs"]
mod common;
mod server;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::assert_bytes;
use server::Server;
use socket2::{Domain, Socket, Type};

/// Packets in the generated capture.
const PACKETS: usize = 200_000;
/// How long the paused client reads nothing.
const PAUSE: Duration = Duration::from_secs(4);
/// The clients' queue bound given to the tool: half the stream, so that
/// the four that read keep up even on a busy machine (two cores shared
/// with the tool, the feeder and the other readers), while the paused one,
/// which takes nothing more once this and its socket buffers are full,
/// loses about a third of the packets.
const CLIENT_BUFFER: usize = 12 << 20;

/// One broker test at a time: they measure who keeps up, on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A pcap (little-endian, Ethernet) of `n` packets of 40 to 189 bytes,
/// each different (its index in its first bytes).
fn capture(n: usize) -> Vec<u8> {
    let mut v = common::pcap_header();
    v.reserve(n * 130);
    for i in 0..n {
        let len = 40 + (i * 7919) % 150;
        let mut data = vec![(i % 251) as u8; len];
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let (sec, usec) = (1_700_000_000 + (i / 1000) as u32, (i % 1000) as u32 * 1000);
        common::push_record(&mut v, sec, usec, &data, len);
    }
    v
}

/// The records (each with its 16-byte header) of a pcap stream, after its
/// 24-byte header; panics on a record cut short.
fn records(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 24;
    while pos < stream.len() {
        assert!(
            pos + 16 <= stream.len(),
            "a record header cut short at {pos}"
        );
        let caplen = u32::from_le_bytes(stream[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let end = pos + 16 + caplen;
        assert!(end <= stream.len(), "a record cut short at {pos}");
        out.push(&stream[pos..end]);
        pos = end;
    }
    out
}

impl Server {
    /// Listening, its standard input a pipe.
    fn start(args: &[&str]) -> Server {
        Server::listen(args, Stdio::piped())
    }
}

/// A client connected to `port`; `rcvbuf`: a small receive buffer.
fn connect(port: u16, rcvbuf: Option<usize>) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(size) = rcvbuf {
        s.set_recv_buffer_size(size).unwrap();
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    s.connect(&addr.into()).unwrap();
    let tcp: TcpStream = s.into();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    tcp
}

/// Reads `tcp` to its end (a reset after the end of what was sent counts
/// as the end).
fn read_all(tcp: TcpStream) -> Vec<u8> {
    read_all_counting(tcp, &std::sync::atomic::AtomicUsize::new(0))
}

/// As `read_all`, adding each read's bytes to `progress` (for a writer
/// that paces itself by the reader).
fn read_all_counting(mut tcp: TcpStream, progress: &std::sync::atomic::AtomicUsize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                progress.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("reading: {e} after {} bytes", got.len()),
        }
    }
}

/// The `key=value` fields of a counters line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(f: &HashMap<String, String>, key: &str) -> u64 {
    f.get(key)
        .unwrap_or_else(|| panic!("no {key} in {f:?}"))
        .parse()
        .unwrap()
}

/// Five clients of a relay of the generated capture; the first one reads
/// nothing for PAUSE. Returns the server (ended), the capture, what each
/// client received (the paused one first) and the paused one's address.
fn five_clients(policy: &str) -> (Server, Vec<u8>, Vec<Vec<u8>>, String) {
    let input = capture(PACKETS);
    let mut server = Server::start(&[
        "--wait-clients",
        "5",
        "--client-buffer",
        &CLIENT_BUFFER.to_string(),
        &format!("--slow-client={policy}"),
        "-",
    ]);
    let paused = connect(server.port, Some(4096));
    let paused_addr = paused.local_addr().unwrap().to_string();
    let fast: Vec<_> = (0..4)
        .map(|_| {
            let tcp = connect(server.port, None);
            thread::spawn(move || read_all(tcp))
        })
        .collect();
    // Standard input over about 2 s (the tool reads it once the five are
    // there), then its end: the paused client's queue overflows many
    // times over, while a fast client that the test machine holds up for
    // a moment stays far within its own.
    let mut stdin = server.child.stdin.take().unwrap();
    let feed = {
        let input = input.clone();
        thread::spawn(move || {
            for piece in input.chunks(input.len().div_ceil(64)) {
                stdin.write_all(piece).unwrap();
                thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let resumed = Instant::now() + PAUSE;
    feed.join().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    if policy == "drop" {
        // While it is paused, SIGUSR1: its line shows its losses so far.
        thread::sleep(Duration::from_millis(500));
        server.signal(libc::SIGUSR1);
        let lines = server.wait_lines(
            &format!("client={paused_addr} "),
            1,
            Duration::from_secs(10),
        );
        let f = fields(&lines[0]);
        assert_eq!(f["state"], "open", "{}", lines[0]);
        assert!(num(&f, "dropped") > 0, "{}", lines[0]);
        server.wait_lines("counters: total ", 1, Duration::from_secs(10));
    }
    thread::sleep(resumed.saturating_duration_since(Instant::now()));
    thread::spawn(move || tx.send(read_all(paused)).unwrap());
    let paused_got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let mut got = vec![paused_got];
    got.extend(fast.into_iter().map(|t| t.join().unwrap()));
    assert!(
        server.wait_success(Duration::from_secs(60)),
        "{}",
        server.log()
    );
    (server, input, got, paused_addr)
}

/// The exit's counter lines: the last line for each client, and the total.
fn exit_counters(
    log: &str,
) -> (
    HashMap<String, HashMap<String, String>>,
    HashMap<String, String>,
) {
    let mut clients = HashMap::new();
    let mut total = None;
    for line in log.lines().filter(|l| l.contains(" counters: ")) {
        let f = fields(line);
        if line.contains(" counters: total ") {
            total = Some(f);
        } else {
            clients.insert(f["client"].clone(), f);
        }
    }
    (clients, total.expect("a total line"))
}

#[test]
fn a_paused_client_loses_counted_packets_and_the_others_get_every_one() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(180), || {
        let (server, input, got, paused_addr) = five_clients("drop");
        let log = server.log();
        let all = records(&input);
        for (i, g) in got[1..].iter().enumerate() {
            assert!(
                *g == input,
                "fast client {i}: {} of {} bytes, {} of {} records\n{log}",
                g.len(),
                input.len(),
                records(g).len(),
                all.len()
            );
        }
        // The paused one: the header, then whole records, in order, each
        // one of the input's.
        let paused = &got[0];
        assert_eq!(paused[..24], input[..24]);
        let received = records(paused);
        let mut next = all.iter();
        for r in &received {
            assert!(next.any(|a| a == r), "a record out of order or not sent");
        }
        assert!(received.len() < all.len(), "the paused client lost nothing");

        let (clients, total) = exit_counters(&log);
        assert_eq!(clients.len(), 5, "{log}");
        let p = &clients[&paused_addr];
        assert_eq!(p["state"], "ended");
        let dropped = num(p, "dropped");
        assert_eq!(num(p, "packets"), received.len() as u64, "{log}");
        assert_eq!(received.len() as u64 + dropped, PACKETS as u64, "{log}");
        let record_bytes = (input.len() - 24) as u64;
        assert_eq!(num(p, "bytes"), paused.len() as u64);
        assert_eq!(
            num(p, "bytes") - 24 + num(p, "dropped_bytes"),
            record_bytes,
            "{log}"
        );
        assert!(num(p, "peak_queued_bytes") <= CLIENT_BUFFER as u64, "{log}");
        for (addr, f) in clients.iter().filter(|(a, _)| **a != paused_addr) {
            assert_eq!(num(f, "packets"), PACKETS as u64, "{addr}");
            assert_eq!(num(f, "dropped"), 0, "{addr}");
            assert_eq!(num(f, "bytes"), input.len() as u64, "{addr}");
        }
        assert_eq!(num(&total, "input_packets"), PACKETS as u64);
        assert_eq!(num(&total, "input_bytes"), input.len() as u64);
        assert_eq!(num(&total, "clients"), 5);
        assert_eq!(num(&total, "open"), 0);
        assert_eq!(num(&total, "dropped"), dropped);
        assert_eq!(
            num(&total, "packets"),
            4 * PACKETS as u64 + received.len() as u64
        );
        // The episode was reported once, and its end.
        let name = format!("client {paused_addr}: ");
        assert_eq!(
            log.lines()
                .filter(|l| l.contains(&name) && l.contains("dropping packets for it"))
                .count(),
            1,
            "{log}"
        );
        // Every line: timestamp, tool, level.
        for line in log.lines() {
            let (ts, rest) = line.split_once(' ').unwrap();
            assert!(
                ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                "{line}"
            );
            assert!(
                rest.starts_with("pcapovertcp-serve: INFO ")
                    || rest.starts_with("pcapovertcp-serve: WARN "),
                "{line}"
            );
        }
    })
}

#[test]
fn disconnect_closes_the_paused_client_and_the_others_get_every_packet() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(180), || {
        let (server, input, got, paused_addr) = five_clients("disconnect");
        let log = server.log();
        for (i, g) in got[1..].iter().enumerate() {
            assert_bytes(&format!("fast client {i}"), g, &input, &log);
        }
        // What the paused client got is the stream's start: nothing dropped
        // before it was closed.
        let paused = &got[0];
        assert!(paused.len() < input.len());
        assert!(input.starts_with(paused), "not a prefix of the stream");
        let closed = format!(
            "WARN client {paused_addr}: too slow: its buffer (--client-buffer {CLIENT_BUFFER} bytes) is full; closing it (--slow-client=disconnect)"
        );
        assert_eq!(log.matches(&closed).count(), 1, "{log}");
        let (clients, total) = exit_counters(&log);
        assert_eq!(clients[&paused_addr]["state"], "slow", "{log}");
        for (addr, f) in clients.iter().filter(|(a, _)| **a != paused_addr) {
            assert_eq!(f["state"], "ended", "{addr}");
            assert_eq!(num(f, "packets"), PACKETS as u64, "{addr}");
        }
        assert_eq!(num(&total, "clients"), 5);
    })
}

#[test]
fn sigterm_prints_the_counters_and_ends_the_relay() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let mut server = Server::start(&["-"]);
        let mut stdin = server.child.stdin.take().unwrap();
        let input = capture(10);
        let client = connect(server.port, None);
        stdin.write_all(&input).unwrap();
        stdin.flush().unwrap();
        let mut got = vec![0u8; input.len()];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(got, input);
        // The counters catch up with what the client read: SIGUSR1 until
        // its line shows the ten packets.
        let addr = client.local_addr().unwrap().to_string();
        let line = format!("client={addr} state=open ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server
            .log()
            .lines()
            .any(|l| l.contains(&line) && l.contains(" packets=10 "))
        {
            assert!(Instant::now() < deadline, "{}", server.log());
            server.signal(libc::SIGUSR1);
            thread::sleep(Duration::from_millis(100));
        }
        server.signal(libc::SIGTERM);
        assert!(
            server.wait_success(Duration::from_secs(10)),
            "{}",
            server.log()
        );
        let log = server.log();
        let exit = &log[log.find("INFO SIGTERM: exiting").expect("the SIGTERM line")..];
        let (clients, total) = exit_counters(exit);
        assert_eq!(clients[&addr]["state"], "open", "{log}");
        assert_eq!(num(&clients[&addr], "packets"), 10, "{log}");
        assert_eq!(num(&total, "input_packets"), 10, "{log}");
        drop(stdin);
    })
}

// ---- The broker's inputs: --exec, --shards, --upstream. ----

/// A scratch directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pcapovertcp-broker-inputs-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pcap (little-endian, Ethernet) of `n` IPv4/UDP packets between
/// `hosts` hosts, both directions of each pair; packet `i` at
/// `base_ms + i * step_ms` ms; every third one captured shorter than its
/// wire length. Each packet is different (its index in its payload).
fn ip_capture(n: usize, hosts: u8, base_ms: u64, step_ms: u64, tag: u8) -> Vec<u8> {
    let mut v = common::pcap_header();
    for i in 0..n {
        let (a, b) = ((i % hosts as usize) as u8, ((i / 3) % hosts as usize) as u8);
        let (src, dst) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let mut p = vec![0u8; 14];
        p[12..14].copy_from_slice(&[0x08, 0x00]);
        let payload = 20 + i % 50;
        let ip_len = 20 + 8 + payload;
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ];
        ip.extend_from_slice(&[10, 0, 0, src]);
        ip.extend_from_slice(&[10, 1, 0, dst]);
        p.extend_from_slice(&ip);
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, (8 + payload) as u8, 0, 0]);
        let mut body = vec![tag; payload];
        body[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p.extend_from_slice(&body);
        let wirelen = p.len();
        if i % 3 == 0 {
            p.truncate(p.len() - 10);
        }
        let t = base_ms + i as u64 * step_ms;
        let (sec, usec) = ((t / 1000) as u32, ((t % 1000) * 1000) as u32);
        common::push_record(&mut v, sec, usec, &p, wirelen);
    }
    v
}

/// Starts the tool listening on port 0 with `args`; waits for `n` lines
/// in its port file (--shards: one per shard).
fn start_ports(args: &[&str], n: usize) -> (Server, Vec<u16>) {
    start_listening("127.0.0.1:0", args, n)
}

/// Starts the tool listening on `listen` with `args`; waits for `n` lines
/// in its port file.
fn start_listening(listen: &str, args: &[&str], n: usize) -> (Server, Vec<u16>) {
    Server::listen_ports(None, listen, args, Stdio::null(), n)
}

/// Starts the tool listening with `args` (which end its stream), reads
/// all one client gets, and checks that it ended well within 20 s.
fn relay_once(args: &[&str]) -> (Server, Vec<u8>) {
    let (mut server, _) = start_ports(args, 1);
    let got = read_all(connect(server.port, None));
    assert!(
        server.wait_success(Duration::from_secs(20)),
        "{}",
        server.log()
    );
    (server, got)
}

/// Reads what arrives on `tcp` until it has at least `want` bytes or
/// `limit` has passed.
fn read_for(tcp: &TcpStream, want: usize, limit: Duration) -> Vec<u8> {
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < want && Instant::now() < deadline {
        match (&mut &*tcp).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading: {e}"),
        }
    }
    got
}

#[test]
fn exec_is_restarted_and_the_clients_stream_goes_on_with_one_header() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("exec-restart");
        let input = capture(5);
        let file = dir.join("small.pcap");
        std::fs::write(&file, &input).unwrap();
        let cmd = format!("cat {}", file.display());
        let (server, _) = start_ports(&["--exec", &cmd], 1);
        let client = connect(server.port, None);
        // Three runs of the command within a few seconds (backoff 100 ms,
        // 200 ms, ...): the header once, then the records over and over.
        let runs = 3;
        let want = 24 + runs * (input.len() - 24);
        let got = read_for(&client, want, Duration::from_secs(20));
        assert!(
            got.len() >= want,
            "{} of {want} bytes:\n{}",
            got.len(),
            server.log()
        );
        assert_eq!(got[..24], input[..24]);
        let expected = records(&input);
        let got = records(&got[..want]);
        assert_eq!(got.len(), runs * expected.len());
        for (i, r) in got.iter().enumerate() {
            assert_eq!(*r, expected[i % expected.len()], "record {i}");
        }
        assert!(
            server.log().contains("the command ended (exit status: 0)"),
            "{}",
            server.log()
        );
    })
}

#[test]
fn exec_once_ends_with_the_command() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("exec-once");
        let input = capture(50);
        let file = dir.join("small.pcap");
        std::fs::write(&file, &input).unwrap();
        let cmd = format!("cat {}", file.display());
        let (mut server, _) = start_ports(&["--once", "--exec", &cmd], 1);
        let client = connect(server.port, None);
        assert_eq!(read_all(client), input);
        assert!(
            server.wait_success(Duration::from_secs(10)),
            "{}",
            server.log()
        );
    })
}

#[test]
fn exec_writing_garbage_is_logged_once_restarted_and_sends_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let (server, _) = start_ports(
            &[
                "-v",
                "--exec",
                "echo broken >&2; echo this-is-no-pcap-stream-at-all; exit 3",
            ],
            1,
        );
        let client = connect(server.port, None);
        // Restarted: the same failure again, at debug level.
        server.wait_lines("(again); restarting it in", 2, Duration::from_secs(20));
        let log = server.log();
        let warned: Vec<_> = log
            .lines()
            .filter(|l| {
                l.contains(" WARN ")
                    && l.contains("not a pcap stream: first bytes \"this-is-no-pcap-")
            })
            .collect();
        assert_eq!(warned.len(), 1, "{log}");
        assert!(
            warned[0].contains("last line on its stderr: \"broken\""),
            "{log}"
        );
        assert!(read_for(&client, 1, Duration::from_millis(300)).is_empty());
    })
}

/// The unordered IPv4 address pair of a record of `ip_capture`.
fn pair(record: &[u8]) -> ([u8; 4], [u8; 4]) {
    let ip = &record[16 + 14..];
    let (a, b): ([u8; 4], [u8; 4]) = (
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
    );
    (a.min(b), a.max(b))
}

#[test]
fn shards_split_the_packets_by_flow_each_packet_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("shards");
        let input = ip_capture(3000, 40, 1_700_000_000_000, 1, 7);
        let file = dir.join("flows.pcap");
        std::fs::write(&file, &input).unwrap();
        let cmd = format!("cat {}", file.display());
        let (mut server, ports) = start_ports(
            &[
                "--shards",
                "2",
                "--wait-clients",
                "2",
                "--once",
                "--exec",
                &cmd,
            ],
            2,
        );
        assert_eq!(ports[1], ports[0] + 1);
        let got = read_shards(&ports);
        assert!(
            server.wait_success(Duration::from_secs(10)),
            "{}",
            server.log()
        );
        let mut all = Vec::new();
        let mut owner = HashMap::new();
        for (k, stream) in got.iter().enumerate() {
            assert_eq!(stream[..24], input[..24], "shard {k}'s header");
            let recs = records(stream);
            assert!(!recs.is_empty(), "shard {k} got nothing");
            for r in recs {
                let prev = owner.insert(pair(r), k);
                assert!(prev.is_none_or(|p| p == k), "a flow in two shards");
                all.push(r.to_vec());
            }
        }
        let mut expected: Vec<Vec<u8>> = records(&input).into_iter().map(<[u8]>::to_vec).collect();
        all.sort();
        expected.sort();
        assert_eq!(all.len(), expected.len());
        assert!(
            all == expected,
            "the shards' packets differ from the input's"
        );
        let log = server.log();
        assert!(
            log.contains(&format!(
                "listening on 127.0.0.1:{} for shard 1 of 2",
                ports[1]
            )),
            "{log}"
        );
    })
}

#[test]
#[cfg_attr(
    not(wireshark),
    ignore = "needs Wireshark's tshark and mergecap on PATH"
)]
fn upstream_merges_two_servers_as_mergecap_does() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("upstream");
        let up = two_ip_upstreams(&dir, (600, 500), 10);
        // A window no start-up delay of the test machine reaches: the
        // servers' files end, so it is never waited out.
        let args = ["--once", "--merge-window", "5000", "--upstream", &up.spec];
        let (broker, got) = relay_once(&args);
        let out = dir.join("out.pcapng");
        std::fs::write(&out, &got).unwrap();
        assert!(got.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]), "not pcapng");
        let got = common::reference_packets(&out);
        let want = common::reference_packets(&up.merged);
        assert_eq!(got.len(), want.len(), "{}", broker.log());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "packet {i}");
        }
    })
}

/// `--upstream A --upstream B` reads both servers, as `--upstream A,B`
/// does (the old parser kept only B: the client got B's packets alone).
#[test]
fn upstream_given_twice_reads_both_servers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("upstream-twice");
        let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
        std::fs::write(&a, ip_capture(300, 4, 1_700_000_000_000, 2, 1)).unwrap();
        std::fs::write(&b, ip_capture(200, 4, 1_700_000_000_001, 2, 2)).unwrap();
        let (sa, _) = start_ports(&[a.to_str().unwrap()], 1);
        let (sb, _) = start_ports(&[b.to_str().unwrap()], 1);
        let (ua, ub) = (
            format!("127.0.0.1:{}", sa.port),
            format!("127.0.0.1:{}", sb.port),
        );
        let args = [
            "--once",
            "--merge-window",
            "5000",
            "--upstream",
            &ua,
            "--upstream",
            &ub,
        ];
        let (broker, got) = relay_once(&args);
        let out = dir.join("out.pcapng");
        std::fs::write(&out, &got).unwrap();
        let got = common::reference_packets(&out);
        assert_eq!(got.len(), 300 + 200, "{}", broker.log());
    })
}

/// Two upstream servers, one serving `a` and one `b`; the `--upstream`
/// spec naming both; and `mergecap`'s merge of the two files (pcap when
/// `as_pcap`, else pcapng), the reference for what the relay serves.
struct TwoUpstreams {
    a: Server,
    b: Server,
    spec: String,
    merged: PathBuf,
}

fn two_upstreams(
    dir: &std::path::Path,
    a: &std::path::Path,
    b: &std::path::Path,
    as_pcap: bool,
) -> TwoUpstreams {
    let merged = dir.join(if as_pcap {
        "merged.pcap"
    } else {
        "merged.pcapng"
    });
    let mut mergecap = Command::new("mergecap");
    if as_pcap {
        mergecap.args(["-F", "pcap"]);
    }
    let status = mergecap
        .arg("-w")
        .arg(&merged)
        .arg(a)
        .arg(b)
        .status()
        .unwrap();
    assert!(status.success());
    let (a, _) = start_ports(&[a.to_str().unwrap()], 1);
    let (b, _) = start_ports(&[b.to_str().unwrap()], 1);
    let spec = format!("127.0.0.1:{},127.0.0.1:{}", a.port, b.port);
    TwoUpstreams { a, b, spec, merged }
}

/// `two_upstreams` of two `ip_capture`s of `sizes` packets among `hosts`
/// hosts, with overlapping time ranges: a every 2 ms, b every 2 ms from
/// 1 ms on (no two timestamps equal).
fn two_ip_upstreams(dir: &std::path::Path, sizes: (usize, usize), hosts: u8) -> TwoUpstreams {
    let a = dir.join("a.pcap");
    let b = dir.join("b.pcap");
    std::fs::write(&a, ip_capture(sizes.0, hosts, 1_700_000_000_000, 2, 1)).unwrap();
    std::fs::write(&b, ip_capture(sizes.1, hosts, 1_700_000_000_001, 2, 2)).unwrap();
    two_upstreams(dir, &a, &b, true)
}

/// Each packet of a capture as tshark reads it: (time with nanoseconds,
/// wire length, MD5 of its bytes, interface id, interface name).
fn tshark_frames(path: &std::path::Path) -> Vec<(String, String, String, String, String)> {
    let out = Command::new("tshark")
        .args(["-o", "frame.generate_md5_hash:TRUE", "-T", "fields"])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.md5_hash",
        ])
        .args([
            "-e",
            "frame.interface_id",
            "-e",
            "frame.interface_name",
            "-r",
        ])
        .arg(path)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark -r {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let f = |i: usize| f.get(i).copied().unwrap_or_default().to_string();
            (f(0), f(1), f(2), f(3), f(4))
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(wireshark),
    ignore = "needs Wireshark's tshark and mergecap on PATH"
)]
fn upstream_keeps_each_servers_interfaces_and_nanoseconds_as_mergecap_does() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("upstream-interfaces");
        // a: a pcapng of two interfaces (nanoseconds and microseconds);
        // b: a nanosecond pcap whose times interleave with a's.
        let a = common::traces_dir().join("pcapng-multi-interface.pcapng");
        let b = dir.join("b.pcap");
        let capture = ip_capture(300, 10, 1_767_663_089_000, 1000, 2);
        std::fs::write(&b, common::nanosecond_pcap(&capture, 7)).unwrap();
        let up = two_upstreams(&dir, &a, &b, false);
        let (sa, sb) = (&up.a, &up.b);
        let args = ["--once", "--merge-window", "5000", "--upstream", &up.spec];
        let (broker, got) = relay_once(&args);
        let out = dir.join("out.pcapng");
        std::fs::write(&out, &got).unwrap();
        // mergecap numbers a's interfaces 0 and 1, b's 2; ours are named
        // after their server and the interface's number in its stream.
        let names = [
            format!("127.0.0.1:{} #0", sa.port),
            format!("127.0.0.1:{} #1", sa.port),
            format!("127.0.0.1:{} #0", sb.port),
        ];
        let want: Vec<_> = tshark_frames(&up.merged)
            .into_iter()
            .map(|(t, len, md5, id, _)| {
                let name = names[id.parse::<usize>().unwrap()].clone();
                (t, len, md5, name)
            })
            .collect();
        let got: Vec<_> = tshark_frames(&out)
            .into_iter()
            .map(|(t, len, md5, _, name)| (t, len, md5, name))
            .collect();
        assert_eq!(want.len(), 306);
        assert_eq!(got.len(), want.len(), "{}", broker.log());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "packet {i}");
        }
    })
}

/// What a client of `pcapovertcp-serve --once --upstream tcp://...` gets
/// when the one upstream server serves `input` (a file): the whole stream,
/// and the relay's log.
fn relayed_through_one_upstream(name: &str, input: &[u8]) -> (Vec<u8>, String) {
    let file = scratch(name).join("input");
    std::fs::write(&file, input).unwrap();
    let (upstream, _) = start_ports(&[file.to_str().unwrap()], 1);
    let spec = format!("tcp://127.0.0.1:{}", upstream.port);
    let (relay, got) = relay_once(&["--once", "--upstream", &spec]);
    (got, relay.log())
}

/// The first bytes of a stream, in hex, for messages.
fn head(stream: &[u8]) -> String {
    stream.iter().take(24).map(|b| format!("{b:02x}")).collect()
}

#[test]
fn one_upstream_keeps_a_nanosecond_big_endian_pcap_byte_for_byte() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let be = common::traces_dir()
            .join("smb/dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap");
        let input = common::nanosecond_pcap(&std::fs::read(be).unwrap(), 7);
        assert_eq!(input[..4], [0xa1, 0xb2, 0x3c, 0x4d], "a big-endian ns pcap");
        let (got, log) = relayed_through_one_upstream("upstream-ns-be", &input);
        assert!(
            got == input,
            "the client's stream is not the input: {} of {} bytes, header {} (want {})\n{log}",
            got.len(),
            input.len(),
            head(&got),
            head(&input)
        );
        assert!(log.contains(": connected; relaying its stream"), "{log}");
    })
}

#[test]
fn one_upstream_keeps_every_pcapng_interface_byte_for_byte() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let path = common::traces_dir().join("pcapng-multi-interface.pcapng");
        let input = std::fs::read(path).unwrap();
        let (got, log) = relayed_through_one_upstream("upstream-pcapng", &input);
        assert!(
            got == input,
            "the client's stream is not the input: {} of {} bytes, starting {} (want {})\n{log}",
            got.len(),
            input.len(),
            head(&got),
            head(&input)
        );
    })
}

/// The whole records of a pcap stream after its header (a record cut
/// short at the end is left out: more may be on its way).
fn whole_records(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 16 <= stream.len() {
        let caplen = u32::from_le_bytes(stream[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let Some(record) = stream.get(pos..pos + 16 + caplen) else {
            break;
        };
        out.push(record);
        pos += 16 + caplen;
    }
    out
}

#[test]
fn a_restarted_upstream_with_the_same_header_continues_the_clients_stream() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let input = capture(40);
        let file = scratch("upstream-restart").join("paced.pcap");
        std::fs::write(&file, &input).unwrap();
        let file = file.to_str().unwrap();
        let want = records(&input);
        // 20 packets a second: stopped a quarter of the way in.
        let (first, _) = start_ports(&["--rate", "20", file], 1);
        let port = first.port;
        let spec = format!("tcp://127.0.0.1:{port}");
        let (relay, _) = start_ports(&["--upstream", &spec], 1);
        let client = connect(relay.port, None);
        let mut got = read_for(
            &client,
            24 + want[..10].concat().len(),
            Duration::from_secs(20),
        );
        assert!(
            got.starts_with(&input[..24]),
            "not the file's header: {} (want {})\n{}",
            head(&got),
            head(&input),
            relay.log()
        );
        assert!(whole_records(&got).len() >= 10, "{}", relay.log());
        drop(first);
        relay.wait_lines(": lost (", 1, Duration::from_secs(10));
        // The same file on the same port, for ever (the first pass is the
        // file itself).
        let (_second, _) = start_listening(
            &format!("127.0.0.1:{port}"),
            &["--rate", "200", "--loop", "0", file],
            1,
        );
        // Until the file's first record has come again, then all of it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let restart = loop {
            let recs = whole_records(&got);
            let again = recs.iter().skip(1).position(|r| *r == want[0]);
            if let Some(k) = again.map(|i| i + 1) {
                if recs.len() >= k + want.len() {
                    break k;
                }
            }
            assert!(Instant::now() < deadline, "{}", relay.log());
            got.extend(read_for(&client, usize::MAX, Duration::from_millis(200)));
        };
        assert_eq!(got[..24], input[..24], "the stream's header");
        let recs = whole_records(&got);
        assert!(
            restart >= 10 && restart < want.len(),
            "restarted at {restart}"
        );
        assert!(recs[..restart] == want[..restart], "before the restart");
        assert!(
            recs[restart..restart + want.len()] == want[..],
            "after the restart: not the file's records (a second header?)"
        );
        let log = relay.log();
        assert_eq!(log.matches(": lost (").count(), 1, "{log}");
        assert_eq!(log.matches(": back after ").count(), 1, "{log}");
        assert!(!log.contains("different header"), "{log}");
    })
}

/// Closes `client` with a reset (SO_LINGER 0), as a killed reader with
/// unread data does.
fn reset(client: TcpStream) {
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
}

#[test]
fn a_reader_that_closed_its_sending_side_keeps_its_stream() {
    // ncat with its stdin at an end, or nc -N, sends a FIN and goes on
    // reading: the relay must not take that for a departure.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let mut server = Server::start(&["-"]);
        let mut stdin = server.child.stdin.take().unwrap();
        let client = connect(server.port, None);
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let input = capture(50);
        let (header, records) = input.split_at(24);
        stdin.write_all(header).unwrap();
        stdin.flush().unwrap();
        // Several idle checks pass before the packets come.
        std::thread::sleep(Duration::from_secs(1));
        stdin.write_all(records).unwrap();
        drop(stdin);
        let got = read_all(client);
        assert_eq!(got, input, "{}", server.log());
    })
}

#[test]
fn a_client_leaving_an_idle_relay_is_noticed_at_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let mut server = Server::start(&["-"]);
        let mut stdin = server.child.stdin.take().unwrap();
        let client = connect(server.port, None);
        // The header and no packet: the input stays open and idle.
        let header = capture(0);
        stdin.write_all(&header).unwrap();
        stdin.flush().unwrap();
        let mut got = vec![0u8; header.len()];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(got, header);
        let addr = client.local_addr().unwrap().to_string();
        reset(client);
        let expected = format!(
            "pcapovertcp-serve: INFO client {addr} left (Connection reset by peer (os error 104)); 0 packets sent, 0 dropped"
        );
        let lines = server.wait_lines(&expected, 1, Duration::from_secs(2));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].split_once(' ').unwrap().1, expected);
        server.signal(libc::SIGUSR1);
        let total = server.wait_lines("counters: total ", 1, Duration::from_secs(10));
        let mine = server.wait_lines(&format!("counters: client={addr} "), 1, Duration::ZERO);
        let f = fields(&mine[0]);
        assert_eq!(f["state"], "lost", "{}", mine[0]);
        assert_eq!(num(&f, "bytes"), header.len() as u64, "{}", mine[0]);
        let t = fields(&total[0]);
        assert_eq!(
            (num(&t, "clients"), num(&t, "open")),
            (1, 0),
            "{}",
            total[0]
        );
        drop(stdin);
    })
}

/// What a client of each port (shard) receives, all read at once.
fn read_shards(ports: &[u16]) -> Vec<Vec<u8>> {
    let readers: Vec<_> = ports
        .iter()
        .map(|&p| {
            let tcp = connect(p, None);
            thread::spawn(move || read_all(tcp))
        })
        .collect();
    readers.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The unordered IPv4 address pair of a packet of `ip_capture`.
fn packet_pair(data: &[u8]) -> ([u8; 4], [u8; 4]) {
    let ip = &data[14..];
    let (a, b): ([u8; 4], [u8; 4]) = (
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
    );
    (a.min(b), a.max(b))
}

#[test]
#[cfg_attr(
    not(wireshark),
    ignore = "needs Wireshark's tshark and mergecap on PATH"
)]
fn upstream_with_shards_gives_each_merged_packet_to_one_shard() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("upstream-shards");
        let up = two_ip_upstreams(&dir, (1500, 1200), 40);
        let (mut broker, ports) = start_ports(
            &[
                "--once",
                "--merge-window",
                "5000",
                "--shards",
                "2",
                "--wait-clients",
                "2",
                "--upstream",
                &up.spec,
            ],
            2,
        );
        let got = read_shards(&ports);
        assert!(
            broker.wait_success(Duration::from_secs(20)),
            "{}",
            broker.log()
        );
        let mut all = Vec::new();
        let mut owner = HashMap::new();
        for (k, stream) in got.iter().enumerate() {
            let out = dir.join(format!("shard-{k}.pcapng"));
            std::fs::write(&out, stream).unwrap();
            let packets = common::reference_packets(&out);
            assert!(!packets.is_empty(), "shard {k} got nothing");
            for p in packets {
                let prev = owner.insert(packet_pair(&p.3), k);
                assert!(prev.is_none_or(|o| o == k), "a flow in two shards");
                all.push(p);
            }
        }
        let mut want = common::reference_packets(&up.merged);
        all.sort();
        want.sort();
        assert_eq!(all.len(), want.len(), "{}", broker.log());
        assert!(
            all == want,
            "the shards' packets differ from the merged input's"
        );
    })
}

/// A CA (`NAME-ca.pem`) and a server certificate it signed for 127.0.0.1
/// (`NAME.pem`, `NAME.key`) in `dir`, made with `openssl`; None (the test
/// skips) without it.
fn server_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-ca.key")),
    );
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let run = |args: &[&str]| {
        Command::new("openssl")
            .arg("req")
            .args(["-x509", "-days", "2"])
            .args(ec)
            .args(args)
            .output()
    };
    let made = run(&[
        "-keyout",
        ca_key.to_str().unwrap(),
        "-out",
        ca.to_str().unwrap(),
        "-subj",
        &format!("/CN=pcapovertcp broker test CA {name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ])
    .expect("cannot run openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    let made = run(&[
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-subj",
        "/CN=upstream",
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-addext",
        "basicConstraints=CA:FALSE",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "extendedKeyUsage=serverAuth",
    ])
    .expect("cannot run openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    (ca, cert, key)
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn one_tls_upstream_is_relayed_byte_for_byte_and_a_wrong_ca_is_named() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("upstream-tls");
        let ((ca, cert, key), (other_ca, ..)) =
            (server_cert(&dir, "server"), server_cert(&dir, "other"));
        let input = common::nanosecond_pcap(&capture(30), 0);
        let file = dir.join("input.pcap");
        std::fs::write(&file, &input).unwrap();
        let (upstream, _) = start_ports(
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            1,
        );
        let spec = format!("tls://127.0.0.1:{}", upstream.port);
        let relay = |ca: &std::path::Path| {
            let (mut relay, _) = start_ports(
                &[
                    "--once",
                    "--upstream",
                    &spec,
                    "--upstream-tls-ca",
                    ca.to_str().unwrap(),
                ],
                1,
            );
            let got = read_all(connect(relay.port, None));
            let ok = relay.wait_success(Duration::from_secs(20));
            (got, ok, relay.log())
        };
        let (got, ok, log) = relay(&ca);
        assert!(ok, "{log}");
        assert_bytes("the stream", &got, &input, &log);
        let (got, ok, log) = relay(&other_ca);
        assert!(!ok && got.is_empty(), "{log}");
        let refused = format!(
            "ERROR --upstream {spec}: TLS: the server's certificate is signed by a CA that --upstream-tls-ca does not hold (unknown CA)"
        );
        assert!(log.contains(&refused), "{log}");
    })
}

#[test]
fn a_client_that_left_before_the_start_does_not_count_for_wait_clients() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let mut server = Server::start(&["--wait-clients", "2", "-"]);
        let mut stdin = server.child.stdin.take().unwrap();
        let input = capture(5);
        stdin.write_all(&input).unwrap();
        stdin.flush().unwrap();
        let gone = connect(server.port, None);
        let addr = gone.local_addr().unwrap();
        reset(gone);
        server.wait_lines(&format!("client {addr} left ("), 1, Duration::from_secs(2));
        // One client now: the input is held back.
        let first = connect(server.port, None);
        assert!(
            read_for(&first, 1, Duration::from_millis(500)).is_empty(),
            "the stream started with one client of --wait-clients 2:\n{}",
            server.log()
        );
        let second = connect(server.port, None);
        for client in [&first, &second] {
            let got = read_for(client, input.len(), Duration::from_secs(10));
            assert_eq!(got, input, "{}", server.log());
        }
        drop(stdin);
    })
}

// ---- Hostile or broken clients harm only themselves (issue 17, items 9-11). ----

/// A field of /proc/PID/status, in kB (VmRSS, VmHWM, VmSize).
fn status_kb(pid: u32, field: &str) -> u64 {
    try_status_kb(pid, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// As `status_kb`, `None` once the process has exited (a zombie has no
/// memory fields, a reaped process no status).
fn try_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.split_whitespace().next()?.parse().ok()
}

/// The threads of process `pid`.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// The memory mappings of process `pid` (a thread's stack is one, and its
/// guard page another).
fn maps_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .count()
}

/// The open file descriptors of process `pid`.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Samples `pid`'s threads, file descriptors and peak RSS (VmHWM, kB)
/// every 50 ms until `stop`; the most of each. Sampling ends early, with
/// what it saw, once the process has exited: a broker whose input ended
/// may exit before `stop` is set, and an exited process has no VmHWM.
fn sample_peaks(
    pid: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<(usize, usize, u64)> {
    thread::spawn(move || {
        let (mut threads, mut fds, mut hwm) = (0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let Some(kb) = try_status_kb(pid, "VmHWM") else {
                break; // exited
            };
            hwm = hwm.max(kb);
            threads = threads.max(threads_of(pid));
            fds = fds.max(fds_of(pid));
            thread::sleep(Duration::from_millis(50));
        }
        (threads, fds, hwm)
    })
}

/// Whether the peer closed `tcp` (EOF or reset) within `limit`, having
/// sent nothing before.
fn closed_without_a_byte(tcp: &TcpStream, limit: Duration) -> bool {
    tcp.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match (&mut &*tcp).read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn file_mode_churn_keeps_no_finished_client_thread_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(120), || {
        let dir = scratch("churn");
        let input = capture(20);
        let file = dir.join("small.pcap");
        std::fs::write(&file, &input).unwrap();
        let (server, _) = start_ports(&[file.to_str().unwrap()], 1);
        let pid = server.child.id();
        thread::sleep(Duration::from_millis(200));
        let (threads0, maps0) = (threads_of(pid), maps_of(pid));
        let addr: SocketAddr = ([127, 0, 0, 1], server.port).into();
        for _ in 0..3000 {
            drop(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
        }
        // Every client thread ends; each kept handle would keep its stack
        // (2 MiB of address space) mapped for good.
        let deadline = Instant::now() + Duration::from_secs(20);
        while threads_of(pid) > threads0 + 2 {
            assert!(Instant::now() < deadline, "{} threads", threads_of(pid));
            thread::sleep(Duration::from_millis(50));
        }
        let maps = maps_of(pid);
        assert!(
            maps < maps0 + 300,
            "{maps0} memory mappings before 3000 clients, {maps} after"
        );
        // And it still serves (once the connections still queued in it,
        // which count for --max-clients, are done).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = read_all(connect(server.port, None));
            if got == input {
                break;
            }
            assert!(
                got.is_empty() && Instant::now() < deadline,
                "{} of {} bytes\n{}",
                got.len(),
                input.len(),
                server.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    })
}

/// A little-endian pcapng block: type, length, body (padded), length.
fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().div_ceil(4) * 4;
    let len = (12 + padded) as u32;
    let mut v = Vec::with_capacity(len as usize);
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(body);
    v.resize(8 + padded, 0);
    v.extend_from_slice(&len.to_le_bytes());
    v
}

fn ng_section() -> Vec<u8> {
    let mut body = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&(-1i64).to_le_bytes());
    ng_block(0x0a0d_0d0a, &body)
}

fn ng_interface() -> Vec<u8> {
    let mut body = 1u16.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&65_535u32.to_le_bytes());
    ng_block(1, &body)
}

fn ng_packet(i: u32) -> Vec<u8> {
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&i.to_le_bytes());
    body.extend_from_slice(&64u32.to_le_bytes());
    body.extend_from_slice(&64u32.to_le_bytes());
    body.extend_from_slice(&[i as u8; 64]);
    ng_block(6, &body)
}

/// `mib` MiB of pcapng custom blocks (no packets) of 60 KiB each.
fn ng_custom(mib: usize) -> Vec<u8> {
    let one = ng_block(0x0000_0bad, &[0x5a; 60 << 10]);
    one.repeat((mib << 20) / one.len())
}

#[test]
fn many_non_reading_clients_stay_within_max_buffer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(120), || {
        let input = capture(740_000);
        let mut server = Server::start(&["--client-buffer", "4M", "--max-buffer", "8M", "-"]);
        let pid = server.child.id();
        let good = connect(server.port, None);
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = {
            let progress = progress.clone();
            thread::spawn(move || read_all_counting(good, &progress))
        };
        thread::sleep(Duration::from_millis(200));
        let base = status_kb(pid, "VmRSS");
        let mut stdin = server.child.stdin.take().unwrap();
        // Ten clients that never read, joining one by one, each after
        // 9 MiB more of the stream (its socket's buffers take about 4 MiB,
        // its queue 4 MiB): each one's queue holds other packets, 40 MiB
        // in all without --max-buffer.
        let mut idle = Vec::new();
        let mut written = 0;
        for (k, piece) in input.chunks(1 << 18).enumerate() {
            // The good reader is never more than 256 KiB behind before a
            // piece of 256 KiB: its queue stays below the idle clients'
            // (8 MiB shared by ten), since when all queues together are
            // full the largest gives way. 2 MiB of slack made it the
            // largest once on a loaded machine, and it lost packets to
            // --slow-client drop, as it should.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while progress.load(std::sync::atomic::Ordering::Relaxed) + (1 << 18) < written {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the good reader stalled"
                );
                thread::sleep(Duration::from_millis(1));
            }
            stdin.write_all(piece).unwrap();
            written += piece.len();
            if k % 36 == 35 && idle.len() < 10 {
                idle.push(connect(server.port, Some(4096)));
            }
            thread::sleep(Duration::from_millis(3));
        }
        drop(stdin);
        let got = reader.join().unwrap();
        let peak = status_kb(pid, "VmHWM");
        let grown_mib = peak.saturating_sub(base) >> 10;
        assert_bytes("the reader", &got, &input, &server.log());
        println!("RSS grew by {grown_mib} MiB (from {base} kB)");
        // --max-buffer 8M: at most twice that (a queued piece may keep its
        // read's buffer alive), with room for the allocator.
        assert!(
            grown_mib <= 24,
            "RSS grew by {grown_mib} MiB (from {base} kB) with 10 clients that read nothing"
        );
        assert!(
            server
                .log()
                .contains("all clients' queues together (--max-buffer 8388608 bytes) are full"),
            "{}",
            server.log()
        );
        drop(idle);
    })
}

#[test]
fn blocks_that_are_no_packets_are_bounded_like_packets() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(120), || {
        // A hostile pcapng: 8 MiB of custom blocks before its interface
        // (all of it "header" for clients that join later), packets, then
        // 40 MiB more custom blocks.
        let mut head = ng_section();
        head.extend(ng_custom(8));
        head.extend(ng_interface());
        for i in 0..1000 {
            head.extend(ng_packet(i));
        }
        let tail = ng_custom(40);
        let input = [head.clone(), tail.clone()].concat();
        let mut server = Server::start(&["--client-buffer", "8M", "--wait-clients", "2", "-"]);
        let pid = server.child.id();
        let good = connect(server.port, None);
        let reader = thread::spawn(move || read_all(good));
        let stuck = connect(server.port, Some(4096));
        thread::sleep(Duration::from_millis(200));
        let base = status_kb(pid, "VmRSS");
        let mut stdin = server.child.stdin.take().unwrap();
        for piece in head.chunks(1 << 20) {
            stdin.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(10));
        }
        // A client joining now gets the header kept: the section, the
        // custom blocks that fit in 512 KiB, the interface; then the rest.
        server.wait_lines(
            "the input's header blocks exceed 512 KiB",
            1,
            Duration::from_secs(10),
        );
        let late = connect(server.port, None);
        let late_reader = thread::spawn(move || read_all(late));
        thread::sleep(Duration::from_millis(300));
        for piece in tail.chunks(1 << 20) {
            stdin.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        // Before the end of the input: once its readers have it all, the
        // tool ends.
        thread::sleep(Duration::from_millis(200));
        let grown_mib = status_kb(pid, "VmHWM").saturating_sub(base) >> 10;
        drop(stdin);
        let got = reader.join().unwrap();
        let section = ng_section();
        let custom = ng_block(0x0000_0bad, &[0x5a; 60 << 10]);
        let kept = (512 * 1024 - section.len()) / custom.len();
        let late_want = [section, custom.repeat(kept), ng_interface(), tail.clone()].concat();
        let late_got = late_reader.join().unwrap();
        assert!(
            late_got == late_want,
            "the late client got {} bytes, not {}",
            late_got.len(),
            late_want.len()
        );
        assert_bytes("the reader", &got, &input, &server.log());
        let log = server.log();
        println!("RSS grew by {grown_mib} MiB (from {base} kB)");
        // Three queues of 8 MiB and the header kept (old: the stuck
        // client's queue took all 48 MiB, and the header 8 MiB more).
        assert!(grown_mib <= 32, "RSS grew by {grown_mib} MiB\n{log}");
        let addr = stuck.local_addr().unwrap().to_string();
        assert!(
            log.contains(&format!("client {addr}: too slow: its buffer (--client-buffer 8388608 bytes) is full, and a block of the stream that is no packet")),
            "{log}"
        );
        drop(stuck);
    })
}

#[test]
fn max_clients_and_allow_refuse_clients_at_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let header = capture(0);
        let mut server = Server::start(&["--max-clients", "2", "-"]);
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&header).unwrap();
        stdin.flush().unwrap();
        let served = |c: &TcpStream| read_for(c, header.len(), Duration::from_secs(10)) == header;
        let first = connect(server.port, None);
        let second = connect(server.port, None);
        assert!(served(&first) && served(&second), "{}", server.log());
        let third = connect(server.port, None);
        assert!(
            closed_without_a_byte(&third, Duration::from_secs(10)),
            "{}",
            server.log()
        );
        let addr = third.local_addr().unwrap();
        server.wait_lines(
            &format!(
                "WARN client {addr}: refused: 2 clients are already connected (--max-clients)"
            ),
            1,
            Duration::from_secs(5),
        );
        // A place freed is a place taken again.
        let gone = first.local_addr().unwrap();
        reset(first);
        server.wait_lines(&format!("client {gone} left ("), 1, Duration::from_secs(5));
        let fourth = connect(server.port, None);
        assert!(served(&fourth), "{}", server.log());
        drop((second, fourth, stdin));

        // --allow: loopback is not in 192.0.2.0/24.
        let mut elsewhere = Server::start(&["--allow", "192.0.2.0/24", "-"]);
        let mut stdin = elsewhere.child.stdin.take().unwrap();
        stdin.write_all(&header).unwrap();
        stdin.flush().unwrap();
        let refused = connect(elsewhere.port, None);
        assert!(
            closed_without_a_byte(&refused, Duration::from_secs(10)),
            "{}",
            elsewhere.log()
        );
        let addr = refused.local_addr().unwrap();
        elsewhere.wait_lines(
            &format!("WARN client {addr}: refused: its address is not in --allow"),
            1,
            Duration::from_secs(5),
        );
        let mut here = Server::start(&["--allow", "192.0.2.0/24", "--allow", "127.0.0.0/8", "-"]);
        let mut stdin2 = here.child.stdin.take().unwrap();
        stdin2.write_all(&header).unwrap();
        stdin2.flush().unwrap();
        assert!(served(&connect(here.port, None)), "{}", here.log());
        drop((stdin, stdin2));
    })
}

#[test]
fn a_client_that_takes_nothing_is_closed_after_the_write_timeout() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("write-timeout");
        let file = dir.join("big.pcap");
        std::fs::write(&file, capture(200_000)).unwrap();
        let (server, _) = start_ports(&["--write-timeout", "2", file.to_str().unwrap()], 1);
        let stuck = connect(server.port, Some(4096));
        let since = Instant::now();
        let addr = stuck.local_addr().unwrap();
        let lines = server.wait_lines(
            &format!("WARN client {addr}: it took no byte for 2 s (--write-timeout); closed it"),
            1,
            Duration::from_secs(20),
        );
        assert!(since.elapsed() >= Duration::from_secs(2), "{lines:?}");
        server.signal(libc::SIGUSR1);
        let mine = server.wait_lines(
            &format!("counters: client={addr} "),
            1,
            Duration::from_secs(10),
        );
        assert_eq!(fields(&mine[0])["state"], "stalled", "{}", mine[0]);
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn tls_handshake_has_an_absolute_deadline() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let dir = scratch("tls-drip");
        let (_, cert, key) = server_cert(&dir, "drip");
        let file = dir.join("small.pcap");
        std::fs::write(&file, capture(5)).unwrap();
        let (server, _) = start_ports(
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            1,
        );
        // A ClientHello's start, one byte every 200 ms: each byte is
        // progress, none completes the handshake.
        let mut drip = connect(server.port, None);
        drip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let since = Instant::now();
        let hello = [
            0x16, 0x03, 0x01, 0x10, 0x00, 0x01, 0x00, 0x0f, 0xfc, 0x03, 0x03,
        ];
        let mut sink = [0u8; 4096];
        let mut sent = 0;
        let closed_after = loop {
            let elapsed = since.elapsed();
            assert!(
                elapsed < Duration::from_secs(16),
                "the dripping client is still connected after {elapsed:?}\n{}",
                server.log()
            );
            let byte = [*hello.get(sent).unwrap_or(&0)];
            if drip.write_all(&byte).is_err() {
                break elapsed;
            }
            sent += 1;
            match drip.read(&mut sink) {
                Ok(0) => break elapsed,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break elapsed,
            }
        };
        assert!(
            closed_after >= Duration::from_secs(9) && closed_after < Duration::from_secs(13),
            "closed after {closed_after:?} (the deadline is 10 s)\n{}",
            server.log()
        );
        let addr = drip.local_addr().unwrap();
        server.wait_lines(
            &format!("{addr}: no TLS handshake from the client within 10 s"),
            1,
            Duration::from_secs(5),
        );
    })
}

/// The most lines the tool may write since `since`: 50 about single
/// clients and a summary per 10 s, and a few of its own.
fn line_bound(since: Instant) -> usize {
    let windows = since.elapsed().as_secs() as usize / 10 + 2;
    10 + 51 * windows
}

#[test]
fn out_of_file_descriptors_the_relay_goes_on_for_its_reader() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(120), || {
        let input = capture(150_000);
        // 64 descriptors: about 28 clients (two each) before accept or its
        // clone fails.
        let since = Instant::now();
        let mut server = Server::listen_limited(
            Some(64),
            &["--client-buffer", "8M", "--max-buffer", "64M", "-"],
            Stdio::piped(),
        );
        let pid = server.child.id();
        let good = connect(server.port, None);
        let reader = thread::spawn(move || read_all(good));
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&input[..24]).unwrap();
        stdin.flush().unwrap();
        thread::sleep(Duration::from_millis(200));
        // 300 clients that read nothing: the descriptors run out.
        let idle: Vec<TcpStream> = (0..300).map(|_| connect(server.port, Some(4096))).collect();
        thread::sleep(Duration::from_secs(1));
        for piece in input[24..].chunks(1 << 20) {
            stdin.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        drop(stdin);
        let got = reader.join().unwrap();
        let log = server.log();
        assert_bytes("the reader", &got, &input, &log);
        assert!(
            server.child.try_wait().unwrap().is_none() || server.wait_success(Duration::ZERO),
            "{log}"
        );
        assert!(fds_of(pid) <= 64);
        // Bounded lines: at most 50 about single clients per 10 s, a
        // summary, and accept errors at most every 10 s.
        let lines = log.lines().filter(|l| !l.contains(" counters: ")).count();
        println!("{lines} lines; {} file descriptors", fds_of(pid));
        assert!(lines <= line_bound(since), "{lines} lines:\n{log}");
        assert!(
            log.lines().filter(|l| l.contains("accepting on")).count() <= 2,
            "{log}"
        );
        drop(idle);
    })
}

#[test]
fn soak_a_mixed_attack_harms_only_the_attackers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(90), || {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        const MAX_CLIENTS: usize = 32;
        let input = capture(400_000);
        let mut server = Server::start(&[
            "--max-clients",
            &MAX_CLIENTS.to_string(),
            "--client-buffer",
            "8M",
            "--max-buffer",
            "32M",
            "--write-timeout",
            "3",
            "-",
        ]);
        let (pid, port) = (server.child.id(), server.port);
        let good = connect(port, None);
        let reader = thread::spawn(move || read_all(good));
        thread::sleep(Duration::from_millis(200));
        let base = status_kb(pid, "VmRSS");
        let stop = Arc::new(AtomicBool::new(false));
        let since = Instant::now();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut attackers = Vec::new();
        // Ten clients that never read, for the whole run.
        let stuck: Vec<TcpStream> = (0..10).map(|_| connect(port, Some(4096))).collect();
        // A storm: 50 connections a second, each held 0.5 s without a byte
        // read.
        {
            let stop = stop.clone();
            attackers.push(thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                        held.push_back((Instant::now(), c));
                    }
                    while held
                        .front()
                        .is_some_and(|(t, _)| t.elapsed() > Duration::from_millis(500))
                    {
                        held.pop_front();
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        // Churn: connect and close, as fast as it goes.
        {
            let stop = stop.clone();
            attackers.push(thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 20_000 {
                    drop(TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
                    n += 1;
                    thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        // What the broker holds, sampled while it is under attack.
        let peaks = sample_peaks(pid, stop.clone());
        let mut stdin = server.child.stdin.take().unwrap();
        for piece in input.chunks(1 << 20) {
            stdin.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(150));
        }
        drop(stdin);
        let got = reader.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        for a in attackers {
            a.join().unwrap();
        }
        let (threads, fds, hwm) = peaks.join().unwrap();
        let grown_mib = hwm.saturating_sub(base) >> 10;
        let log = server.log();
        assert_bytes("the reader", &got, &input, &log);
        let lines = log.lines().filter(|l| !l.contains(" counters: ")).count();
        println!(
            "peaks under attack: {threads} threads, {fds} fds, RSS +{grown_mib} MiB; {lines} lines"
        );
        // docs/broker.md's bounds: a thread and two descriptors per client,
        // and a few of the tool's own.
        assert!(threads <= MAX_CLIENTS + 8, "{threads} threads");
        assert!(fds <= 2 * MAX_CLIENTS + 16, "{fds} file descriptors");
        assert!(grown_mib <= 2 * 32 + 16, "RSS grew by {grown_mib} MiB");
        assert!(lines <= line_bound(since), "{lines} lines");
        drop(stuck);
    })
}

#[test]
fn a_thread_that_cannot_be_started_refuses_one_client_and_serving_goes_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(120), || {
        let dir = scratch("spawn-failure");
        let input = capture(150_000);
        let file = dir.join("big.pcap");
        std::fs::write(&file, &input).unwrap();
        let (server, _) = start_ports(&[file.to_str().unwrap()], 1);
        let pid = server.child.id();
        thread::sleep(Duration::from_millis(200));
        // Room for a few more thread stacks (2 MiB each), not for 60.
        let limit = (status_kb(pid, "VmSize") + 24 * 1024) * 1024;
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(
            unsafe { libc::prlimit(pid as i32, libc::RLIMIT_AS, &rlimit, std::ptr::null_mut()) },
            0
        );
        // Clients that read nothing hold their threads.
        let stuck: Vec<TcpStream> = (0..60).map(|_| connect(server.port, Some(4096))).collect();
        server.wait_lines(
            "refused: cannot start a thread for it",
            1,
            Duration::from_secs(10),
        );
        for c in stuck {
            reset(c);
        }
        // Their threads end; the next client is served.
        let deadline = Instant::now() + Duration::from_secs(20);
        while threads_of(pid) > 6 {
            assert!(Instant::now() < deadline, "{} threads", threads_of(pid));
            thread::sleep(Duration::from_millis(50));
        }
        let got = read_all(connect(server.port, None));
        assert_bytes("the stream", &got, &input, &server.log());
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn soak_over_tls_drippers_and_storms_harm_only_themselves() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(90), || {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        const MAX_CLIENTS: usize = 16;
        let dir = scratch("tls-soak");
        let (ca, cert, key) = server_cert(&dir, "soak");
        let input = capture(200_000);
        let file = dir.join("input.pcap");
        std::fs::write(&file, &input).unwrap();
        let mut server = Server::start(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--max-clients",
            &MAX_CLIENTS.to_string(),
            "--client-buffer",
            "8M",
            "--max-buffer",
            "32M",
            "--write-timeout",
            "3",
            "-",
        ]);
        let (pid, port) = (server.child.id(), server.port);
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&input[..24]).unwrap();
        stdin.flush().unwrap();
        // The good reader: the plugin's own core over TLS.
        let reader = thread::spawn(move || {
            let config = pcapovertcp::Config {
                reconnect: false,
                tls: pcapovertcp::tls::TlsOptions {
                    ca_file: Some(ca),
                    ..Default::default()
                },
                ..Default::default()
            };
            let mut source =
                pcapovertcp::Source::open(&format!("tls://127.0.0.1:{port}"), config).unwrap();
            common::drain(&mut source)
        });
        server.wait_lines(" connected", 1, Duration::from_secs(20));
        let base = status_kb(pid, "VmRSS");
        let stop = Arc::new(AtomicBool::new(false));
        let since = Instant::now();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut attackers = Vec::new();
        // 40 connections dripping a ClientHello, a byte each per 200 ms;
        // one closed is replaced.
        {
            let stop = stop.clone();
            attackers.push(thread::spawn(move || {
                let mut drips: Vec<TcpStream> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    drips.retain(|mut d| d.write_all(&[0x16]).is_ok());
                    while drips.len() < 40 {
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                            Ok(d) => drips.push(d),
                            Err(_) => break,
                        }
                    }
                    thread::sleep(Duration::from_millis(200));
                }
            }));
        }
        // A storm of connections held 0.5 s without a byte, and churn.
        {
            let stop = stop.clone();
            attackers.push(thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                        held.push_back((Instant::now(), c));
                    }
                    drop(TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
                    while held
                        .front()
                        .is_some_and(|(t, _)| t.elapsed() > Duration::from_millis(500))
                    {
                        held.pop_front();
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        let peaks = sample_peaks(pid, stop.clone());
        // About 12 s: the drippers' handshakes time out at least once.
        for piece in input[24..].chunks(1 << 20) {
            stdin.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(450));
        }
        let grown_mib = status_kb(pid, "VmHWM").saturating_sub(base) >> 10;
        drop(stdin);
        let got = reader.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        for a in attackers {
            a.join().unwrap();
        }
        let (threads, fds, _) = peaks.join().unwrap();
        let log = server.log();
        let lines = log.lines().filter(|l| !l.contains(" counters: ")).count();
        println!("peaks under attack over TLS: {threads} threads, {fds} fds, RSS +{grown_mib} MiB; {lines} lines");
        let want = common::reference_packets(&file);
        assert!(
            got == want,
            "the reader got {} of {} packets\n{log}",
            got.len(),
            want.len()
        );
        // A thread and two descriptors per client and per handshake under
        // way (as many as --max-clients each), and the tool's own.
        assert!(threads <= 2 * MAX_CLIENTS + 8, "{threads} threads");
        assert!(fds <= 4 * MAX_CLIENTS + 16, "{fds} file descriptors");
        assert!(grown_mib <= 2 * 32 + 16, "RSS grew by {grown_mib} MiB");
        assert!(lines <= line_bound(since), "{lines} lines");
        assert!(
            log.contains("no TLS handshake from the client within 10 s")
                || log.contains("were not shown"),
            "{log}"
        );
    })
}

/// pcapng carries LINKTYPE_ values: a raw-IP upstream's interface is
/// LINKTYPE_RAW (101) in the merged output, not Linux's DLT_RAW (12), as
/// pcap-file's own reader (and every other) reads the file.
#[test]
fn merged_interfaces_carry_linktype_values_not_dlts() {
    use pcap_file::pcapng::{Block, PcapNgReader};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let raw_ip = common::traces_dir().join("rotation.pcap");
        let ethernet = common::traces_dir().join("dns53.pcap");
        let (a, _) = start_ports(&[raw_ip.to_str().unwrap()], 1);
        let (b, _) = start_ports(&[ethernet.to_str().unwrap()], 1);
        let spec = format!("127.0.0.1:{},127.0.0.1:{}", a.port, b.port);
        let args = ["--once", "--merge-window", "5000", "--upstream", &spec];
        let (broker, got) = relay_once(&args);
        let mut reader = PcapNgReader::new(&got[..]).unwrap();
        let mut packets = 0;
        while let Some(block) = reader.next_block() {
            if matches!(block.unwrap(), Block::EnhancedPacket(_)) {
                packets += 1;
            }
        }
        let mut linktypes: Vec<u32> = reader
            .interfaces()
            .iter()
            .map(|i| u32::from(i.linktype))
            .collect();
        linktypes.sort();
        assert_eq!(linktypes, [1, 101], "{}", broker.log());
        let want =
            common::reference_packets(&raw_ip).len() + common::reference_packets(&ethernet).len();
        assert_eq!(packets, want);
        drop((a, b));
    })
}

#[test]
fn the_cores_messages_reach_the_tools_log_in_its_own_words() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(30), || {
        // Two servers: the plugin's core reads them (with its message sink).
        let spec = format!(
            "127.0.0.1:{},127.0.0.1:{}",
            common::closed_port(),
            common::closed_port()
        );
        let (relay, _) = start_ports(&["--upstream", &spec], 1);
        // The input is read once a client is there.
        let _client = connect(relay.port, None);
        let lines = relay.wait_lines("cannot connect to", 1, Duration::from_secs(10));
        let line = &lines[0];
        assert!(
            line.contains(&format!(
                "WARN --upstream {spec}: cannot connect to 127.0.0.1:"
            )),
            "{line}"
        );
        assert!(
            line.ends_with("waiting for a stream (no time limit)"),
            "{line}"
        );
        assert!(!relay.log().contains("PcapOverTcp::"), "{}", relay.log());
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn a_tls_upstream_that_stalls_its_handshake_is_given_up_at_the_absolute_deadline() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(40), || {
        let dir = scratch("upstream-tls-stall");
        let (ca, ..) = server_cert(&dir, "stall");
        // Reads the ClientHello, says nothing for 9 s, then one byte of a
        // record that never completes: a deadline checked only between
        // reads (each allowed the whole 10 s) gives up at about 19 s.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut hello = [0u8; 4096];
            let _ = s.read(&mut hello);
            thread::sleep(Duration::from_secs(9));
            let _ = s.write_all(&[0x16]);
            thread::sleep(Duration::from_secs(20));
        });
        let spec = format!("tls://127.0.0.1:{port}");
        let (relay, _) = start_ports(
            &[
                "--once",
                "--upstream",
                &spec,
                "--upstream-tls-ca",
                ca.to_str().unwrap(),
            ],
            1,
        );
        let started = Instant::now();
        let _client = connect(relay.port, None);
        let lines = relay.wait_lines(
            "no TLS handshake from the server within 10 s",
            1,
            Duration::from_secs(13),
        );
        assert!(started.elapsed() >= Duration::from_secs(9), "{lines:?}");
    })
}

/// A packet time as microseconds since the epoch, from a reader's
/// `SECONDS.FRACTION` (tcpdump -tt: 6 digits, tshark: 9).
fn epoch_micros(text: &str) -> Option<u64> {
    let (secs, frac) = text.split_once('.')?;
    let micros: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    Some(secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?)
}

/// `--stdout --upstream` read by `reader` (a command that reads a pcap on
/// its standard input and prints one line per packet, the packet's time
/// first) while the upstream server is stopped and started again in the
/// middle: the reader gets every packet once, in order, from one header,
/// and ends only when the broker does (SIGTERM here).
fn stdout_survives_an_upstream_restart(reader: &[&str]) {
    const HALF: usize = 1_000;
    let input = ip_capture(2 * HALF, 4, 1_700_000_000_000, 1, 7);
    let recs = records(&input);
    let half = |r: &[&[u8]]| -> Vec<u8> {
        let mut v = input[..24].to_vec();
        r.iter().for_each(|p| v.extend_from_slice(p));
        v
    };
    let (first, second) = (half(&recs[..HALF]), half(&recs[HALF..]));
    let want: Vec<u64> = (0..2 * HALF as u64)
        .map(|i| (1_700_000_000_000 + i) * 1000)
        .collect();

    let mut up1 = Server::start(&["-"]);
    let upstream = format!("127.0.0.1:{}", up1.port);
    let dir = scratch("stdout");
    let log = dir.join(format!("broker-{}.log", reader[0]));
    let mut broker = Server {
        child: Command::new(env!("CARGO_BIN_EXE_pcapovertcp-serve"))
            .args(["--stdout", "--upstream", &upstream])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
        port: 0,
    };
    let pipe = broker.child.stdout.take().unwrap();
    let mut reading = Command::new(reader[0])
        .args(&reader[1..])
        .stdin(Stdio::from(pipe))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = reading.stdout.take().unwrap();
    let lines = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let collector = {
        let lines = lines.clone();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        })
    };
    let wait_for = |n: usize, what: &str, broker: &Server| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "{}: only {} of {n} packets {what}:\n{}",
                reader[0],
                lines.lock().unwrap().len(),
                broker.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    };

    // The first half, then the upstream's stream ends and it exits. (The
    // server reads its input only once a client is there: written from a
    // thread, so that the waits here stay bounded.)
    let feed = |server: &mut Server, data: Vec<u8>| {
        let mut stdin = server.child.stdin.take().unwrap();
        thread::spawn(move || stdin.write_all(&data))
    };
    feed(&mut up1, first);
    assert!(up1.wait_success(Duration::from_secs(20)), "{}", up1.log());
    wait_for(HALF, "before the restart", &broker);
    // The server again, on the same port, with the second half.
    let mut up2 = Server::start(&["--listen", &upstream, "-"]);
    feed(&mut up2, second);
    assert!(up2.wait_success(Duration::from_secs(20)), "{}", up2.log());
    wait_for(2 * HALF, "after the restart", &broker);
    // Nothing more comes (no duplicate); the reader ends with the broker.
    thread::sleep(Duration::from_millis(300));
    assert!(
        reading.try_wait().unwrap().is_none(),
        "the reader ended before the broker"
    );
    broker.signal(libc::SIGTERM);
    assert!(
        broker.wait_success(Duration::from_secs(10)),
        "{}",
        broker.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while reading.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = reading.kill();
            panic!("{} did not end with the broker", reader[0]);
        }
        thread::sleep(Duration::from_millis(20));
    }
    collector.join().unwrap();
    let got: Vec<u64> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            let t = l.split_whitespace().next().unwrap_or_default();
            epoch_micros(t).unwrap_or_else(|| panic!("{}: {l}", reader[0]))
        })
        .collect();
    assert_eq!(got.len(), want.len(), "{}", broker.log());
    assert!(
        got == want,
        "{}: packets out of order or changed",
        reader[0]
    );
    let log = broker.log();
    assert!(log.contains("back after"), "no restart seen: {log}");
}

#[test]
#[cfg_attr(not(tcpdump), ignore = "needs tcpdump on PATH")]
fn stdout_read_by_tcpdump_survives_an_upstream_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(90), || {
        stdout_survives_an_upstream_restart(&["tcpdump", "-r", "-", "-n", "-tt", "-l"])
    })
}

#[test]
#[cfg_attr(not(wireshark), ignore = "needs Wireshark's tshark on PATH")]
fn stdout_read_by_tshark_survives_an_upstream_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(90), || {
        stdout_survives_an_upstream_restart(&[
            "tshark",
            "-r",
            "-",
            "-l",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
        ])
    })
}

/// One HTTP GET of `path` on `port`: the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the one sample of `name` whose labels contain `labels`.
fn sample(body: &str, name: &str, labels: &str) -> Option<u64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or_default();
            (series == name || series.starts_with(&format!("{name}{{"))) && series.contains(labels)
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

/// --metrics: a Prometheus scrape has the input's counters, the totals and
/// the open client's, in the text format (every sample line `NAME{LABELS}
/// VALUE` under its # TYPE).
#[test]
fn metrics_are_scraped_in_prometheus_text_format() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::within(Duration::from_secs(60), || {
        let mut server = Server::start(&["--metrics", "127.0.0.1:0", "-"]);
        let line = server.wait_lines("metrics on http://", 1, Duration::from_secs(10));
        let port: u16 = line[0]
            .rsplit_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .expect("the metrics port");
        let client = connect(server.port, None);
        let peer = client.local_addr().unwrap().to_string();
        server.wait_lines("connected", 1, Duration::from_secs(10));
        let input = capture(1_000);
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&input).unwrap();
        // All of it relayed to the client before the scrape.
        let got = read_for(&client, input.len(), Duration::from_secs(20));
        assert_eq!(got.len(), input.len());
        let labels = format!("kind=\"client\",peer=\"{peer}\"");
        let want = [
            ("pcapovertcp_serve_input_packets_total", "", 1_000),
            (
                "pcapovertcp_serve_input_bytes_total",
                "",
                input.len() as u64,
            ),
            ("pcapovertcp_serve_clients_total", "", 1),
            ("pcapovertcp_serve_clients_open", "", 1),
            ("pcapovertcp_serve_packets_total", "", 1_000),
            ("pcapovertcp_serve_dropped_packets_total", "", 0),
            (
                "pcapovertcp_serve_client_packets_total",
                labels.as_str(),
                1_000,
            ),
            (
                "pcapovertcp_serve_client_bytes_total",
                labels.as_str(),
                input.len() as u64,
            ),
            (
                "pcapovertcp_serve_client_dropped_packets_total",
                labels.as_str(),
                0,
            ),
            ("pcapovertcp_serve_client_queued_bytes", labels.as_str(), 0),
        ];
        // A writer counts a packet just after the client has it, and one
        // scrape reads the totals before the clients' own: scrape until
        // every sample has settled (a scrape in between showed a total of
        // 501 packets beside the client's 1000).
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            let (status, body) = http_get(port, "/metrics");
            assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
            let settled = want
                .iter()
                .all(|&(name, labels, want)| sample(&body, name, labels) == Some(want));
            if settled || Instant::now() >= deadline {
                break body;
            }
            thread::sleep(Duration::from_millis(50));
        };
        for (name, labels, want) in want {
            assert_eq!(sample(&body, name, labels), Some(want), "{name}: {body}");
        }
        // The format: each sample's metric has its # TYPE before it.
        let mut typed = Vec::new();
        for l in body.lines() {
            if let Some(t) = l.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{l}");
                typed.push(name.to_string());
            } else if !l.starts_with("# HELP ") {
                let (series, value) = l.rsplit_once(' ').expect(l);
                value.parse::<f64>().expect(l);
                let name = series.split('{').next().unwrap();
                assert_eq!(typed.last().map(String::as_str), Some(name), "{l}");
            }
        }
        assert_eq!(http_get(port, "/").0, "HTTP/1.1 404 Not Found");
        // A scraper that connects and says nothing holds the next scrape
        // back for at most SCRAPE_TIMEOUT (2 s).
        let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(http_get(port, "/metrics").0, "HTTP/1.1 200 OK");
        let waited = start.elapsed();
        assert!(waited < Duration::from_secs(4), "waited {waited:?}");
        drop(silent);
        drop(stdin);
        drop(client);
    })
}
