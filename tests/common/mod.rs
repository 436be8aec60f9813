//! Helpers shared by the integration tests: the real traces and an
//! independent reading of them with `pcap-file`'s own readers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;

use std::time::{Duration, Instant};

use log::Level;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::TsResolution;
use pcapovertcp::{Config, Next, Opening, Packet, Source};
use socket2::{Domain, Protocol, Socket, Type};

/// The project's root (the workspace's), from the core's tests or serve/'s.
pub fn project_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent() {
        Some(parent) if manifest.ends_with("serve") => parent.to_path_buf(),
        _ => manifest,
    }
}

/// `../shared/traces`, beside the project root. Missing traces fail the
/// tests: they are part of the test environment.
pub fn traces_dir() -> PathBuf {
    let dir = project_root().join("../shared/traces");
    assert!(
        dir.is_dir(),
        "{} is missing: the tests read the real traces from there",
        dir.display()
    );
    dir
}

/// Every pcap/pcapng file under the traces directory, sorted.
pub fn traces() -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng" | "cap")
            ) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&traces_dir(), &mut out);
    out.sort();
    assert!(
        out.len() >= 20,
        "expected the shared traces, found {}",
        out.len()
    );
    out
}

/// (ts_sec, ts_usec, wirelen, data) as libpcap would hand them to Zeek.
pub type Expected = (i64, u32, u32, Vec<u8>);

/// Reads a trace with `pcap-file`'s file readers (not our stream parser).
pub fn reference_packets(path: &std::path::Path) -> Vec<Expected> {
    let bytes = std::fs::read(path).unwrap();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut out = Vec::new();
        while let Some(block) = r.next_block() {
            let (iface_id, raw_ts, wirelen, data) = match block.unwrap() {
                Block::EnhancedPacket(p) => (
                    p.interface_id,
                    p.timestamp.as_nanos() as u64,
                    p.original_len,
                    p.data.to_vec(),
                ),
                Block::SimplePacket(p) => (
                    0,
                    0,
                    p.original_len,
                    p.data[..(p.original_len as usize).min(p.data.len())].to_vec(),
                ),
                _ => continue,
            };
            let iface = &r.interfaces()[iface_id as usize];
            let mut units: u64 = 1_000_000;
            for o in &iface.options {
                if let InterfaceDescriptionOption::IfTsResol(v) = o {
                    units = if v & 0x80 != 0 {
                        1 << (v & 0x7f)
                    } else {
                        10u64.pow(u32::from(*v))
                    };
                }
            }
            let usec = ((raw_ts % units) as u128 * 1_000_000 / units as u128) as u32;
            let snap = if iface.snaplen == 0 {
                usize::MAX
            } else {
                iface.snaplen as usize
            };
            let data = data[..data.len().min(snap)].to_vec();
            out.push(((raw_ts / units) as i64, usec, wirelen, data));
        }
        out
    } else {
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let header = r.header();
        let snap = if header.snaplen == 0 {
            usize::MAX
        } else {
            header.snaplen as usize
        };
        let mut out = Vec::new();
        while let Some(p) = r.next_raw_packet() {
            let p = p.unwrap();
            let usec = match header.ts_resolution {
                TsResolution::MicroSecond => p.ts_frac,
                TsResolution::NanoSecond => p.ts_frac / 1000,
            };
            let data = p.data[..p.data.len().min(snap)].to_vec();
            out.push((i64::from(p.ts_sec), usec, p.orig_len, data));
        }
        out
    }
}

/// A tiny deterministic PRNG (xorshift64*), so failures are reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Drains a source until the end of the stream (at most 60 s).
pub fn drain(source: &mut Source) -> Vec<Expected> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    loop {
        match source.next_packet() {
            Next::Packet(p) => got.push((p.ts_sec, p.ts_usec(), p.wirelen, p.data.to_vec())),
            Next::Empty => {
                assert!(Instant::now() < deadline, "the stream did not end");
                source.wait(Duration::from_millis(100));
            }
            Next::Ended => return got,
        }
    }
}

/// Runs `f` on its own thread and fails the test if it has not finished
/// within `limit`: a network test must fail, never hang. (A thread still
/// blocked is left behind; the test process ends with the test run.)
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {limit:?}")
        }
        // The closure panicked: re-raise its panic here, with its message.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("a finished worker sent its result"),
        },
    }
}

/// Every message the source logged, oldest first.
pub fn messages(source: &Source) -> Vec<String> {
    source.take_messages().into_iter().map(|(_, m)| m).collect()
}

/// A microsecond pcap (either byte order) as the nanosecond pcap of the
/// same capture, in the same byte order: the magic, and each record's
/// fraction times 1000 plus `extra_ns` (so that the nanoseconds matter).
/// Panics on anything else: it converts the test's own fixtures.
pub fn nanosecond_pcap(pcap: &[u8], extra_ns: u32) -> Vec<u8> {
    let big = match pcap.get(..4) {
        Some([0xa1, 0xb2, 0xc3, 0xd4]) => true,
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => false,
        other => panic!("not a microsecond pcap: magic {other:?}"),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = pcap[at..at + 4].try_into().unwrap();
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let put = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    let mut out = Vec::with_capacity(pcap.len());
    put(&mut out, 0xa1b2_3c4d);
    out.extend_from_slice(&pcap[4..24]);
    let mut pos = 24;
    while pos < pcap.len() {
        let caplen = u32_at(pos + 8) as usize;
        put(&mut out, u32_at(pos));
        put(&mut out, u32_at(pos + 4) * 1000 + extra_ns);
        out.extend_from_slice(&pcap[pos + 8..pos + 16 + caplen]);
        pos += 16 + caplen;
    }
    out
}

/// Closes `source` and checks what the operator sees: `close` returns
/// within a second, and every thread of the source ended (else `close`
/// gives up after 900 ms with a warning that one did not stop, which a
/// bound of one second alone would let pass). Returns the messages it took.
pub fn closes_promptly(source: &mut Source, state: &str) -> Vec<(log::Level, String)> {
    let t = Instant::now();
    source.close();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "closing while {state} took {took:?}"
    );
    let said = source.take_messages();
    let stuck: Vec<&String> = said
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.contains("did not stop within"))
        .collect();
    assert!(
        stuck.is_empty(),
        "closing while {state}: a thread did not end: {stuck:?}"
    );
    said
}

/// The counters of sender `address` (a connect endpoint as written, or a
/// listening sender's address).
pub fn sender(source: &Source, address: &str) -> pcapovertcp::counters::Snapshot {
    source
        .senders()
        .into_iter()
        .find(|(a, _)| a == address)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no counters for sender {address}: {:?}", source.senders()))
}

/// The resident set of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// --- live sources over loopback -----------------------------------------------

/// A listening source (`scheme`: tcp-listen or tls-listen) on a port of
/// 127.0.0.1 the system picks: the source, its name and the address it is
/// bound to (read back, so no other test can take the port meanwhile).
pub fn listening(scheme: &str, config: Config) -> (Source, String, SocketAddr) {
    let name = format!("{scheme}://127.0.0.1:0");
    let mut source = Source::start(&name, config).unwrap_or_else(|e| panic!("{name}: {e}"));
    // A listening source opens at once, with the nominal link type.
    assert!(
        matches!(source.wait_open(Duration::from_secs(5)), Opening::Open(1)),
        "a listening source opens at once with link type 1"
    );
    let [addr] = *source.listening() else {
        panic!("{name} is bound to {:?}", source.listening());
    };
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    (source, name, addr)
}

/// Connects to `to` from the loopback address `from` (any free port), so
/// each sender has its own entry in `Source::senders()`; no Nagle delay.
pub fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().unwrap();
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Takes packets, each as `each` makes it, until `want` have arrived
/// (within `limit`). A listening source never ends: `Ended` fails.
pub fn collect_as<T>(
    source: &mut Source,
    want: usize,
    limit: Duration,
    mut each: impl FnMut(&Packet) -> T,
) -> Vec<T> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < want {
        match source.next_packet() {
            Next::Packet(p) => got.push(each(&p)),
            Next::Empty => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {want} packets arrived within {limit:?}; messages: {:#?}",
                    got.len(),
                    source.take_messages()
                );
                source.wait(Duration::from_millis(50));
            }
            Next::Ended => panic!("the source ended after {} of {want} packets", got.len()),
        }
    }
    got
}

/// `collect_as`, each packet as the reference reading has it.
pub fn collect(source: &mut Source, want: usize, limit: Duration) -> Vec<Expected> {
    collect_as(source, want, limit, |p| {
        (p.ts_sec, p.ts_usec(), p.wirelen, p.data.to_vec())
    })
}

/// The source's messages, accumulated (taking them drains the queue).
#[derive(Default)]
pub struct Log {
    pub seen: Vec<(Level, String)>,
}

impl Log {
    pub fn update(&mut self, source: &Source) {
        self.seen.extend(source.take_messages());
    }

    /// Messages at `level` that contain every one of `needles`.
    pub fn matching(&self, level: Level, needles: &[&str]) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(l, m)| *l == level && needles.iter().all(|n| m.contains(n)))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Waits (within 5 s) for the source `name`'s line that the sender
    /// from `local` connected.
    pub fn wait_connected(&mut self, source: &Source, name: &str, local: SocketAddr) -> String {
        let needle = format!("{name}: sender {local} connected");
        self.wait_for(source, Level::Info, &[&needle], Duration::from_secs(5))
    }

    /// Waits (within `limit`) for a message at `level` with every needle.
    pub fn wait_for(
        &mut self,
        source: &Source,
        level: Level,
        needles: &[&str],
        limit: Duration,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            self.update(source);
            if let Some(m) = self.matching(level, needles).into_iter().next() {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no {level} message with {needles:?} within {limit:?}; messages: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether the source has closed `s` (a read returns the end or a reset)
/// or answered it (a TLS alert: a source sends senders nothing else),
/// without waiting.
pub fn closed_now(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let closed = match (&*s).read(&mut [0u8; 256]) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Sends `bytes` one every `every` from `from`, until the source closes
/// the connection; how long after connecting it did (`None`: it did not,
/// and every byte went out).
pub fn drip(
    to: SocketAddr,
    from: &'static str,
    bytes: Vec<u8>,
    every: Duration,
) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        let mut c = connect_from(from, to);
        let since = Instant::now();
        for b in bytes {
            if c.write_all(&[b]).is_err() || closed_now(&c) {
                return Some(since.elapsed());
            }
            std::thread::sleep(every);
        }
        None
    })
}

// --- pcap streams built by hand ---------------------------------------------

/// A little-endian microsecond pcap header: Ethernet, snaplen 65535.
pub fn pcap_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65_535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// Appends a little-endian microsecond pcap record of `data`, seen on the
/// wire as `wirelen` bytes, to `out`.
pub fn push_record(out: &mut Vec<u8>, sec: u32, usec: u32, data: &[u8], wirelen: usize) {
    out.extend_from_slice(&sec.to_le_bytes());
    out.extend_from_slice(&usec.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(wirelen as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// Fails unless `got` is `want` byte for byte, saying how much of it
/// arrived (not both dumps), then `log`.
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8], log: &str) {
    assert!(
        got == want,
        "{what}: {} of {} bytes\n{log}",
        got.len(),
        want.len()
    );
}

/// A shared trace's bytes and its packets as libpcap would read them.
pub fn trace(name: &str) -> (Vec<u8>, Vec<Expected>) {
    let path = traces_dir().join(name);
    (std::fs::read(&path).unwrap(), reference_packets(&path))
}

/// A listener on a port of 127.0.0.1 the system picks, and its
/// `HOST:PORT`.
pub fn loopback_listener() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// A loopback port that nothing listens on (bound, then freed): connecting
/// to it is refused.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
