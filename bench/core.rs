//! Core throughput: a PCAP-over-IP sender on loopback → the reader thread →
//! a consumer that takes packets the way the Zeek shim does and reads every
//! byte; beside it the ceiling: the same sender into a plain reader that only
//! recv()s into a large buffer and discards it.
//!
//! cargo bench --bench core [-- --quick] [-- --json FILE]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "stream.rs"]
mod stream;

use pcapovertcp::parse::{Limits, StreamParser};
use pcapovertcp::{Config, Source};
use stream::{consume, pcap_header, synthetic, Stream};

/// The shared pcap traces (Ethernet, microseconds), repeated as one stream.
fn trace_mix(total_packets: u64) -> Option<Stream> {
    // Without the shared traces the mix is left out rather than failing.
    if !std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/traces")
        .is_dir()
    {
        return None;
    }
    let mut body = Vec::new();
    let mut packets = 0u64;
    for f in common::traces() {
        let bytes = std::fs::read(&f).ok()?;
        // Little-endian microsecond Ethernet pcaps only: their records can be
        // concatenated behind one header.
        if bytes.len() < 24
            || bytes[..4] != [0xd4, 0xc3, 0xb2, 0xa1]
            || bytes[20..24] != [1, 0, 0, 0]
        {
            continue;
        }
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        let used = p.parse(&bytes, &mut out).ok()?;
        body.extend_from_slice(&bytes[24..used]);
        packets += out.len() as u64;
    }
    (packets > 0).then(|| Stream {
        name: "trace mix".into(),
        header: pcap_header(),
        body,
        packets_per_body: packets,
        repeat: total_packets.div_ceil(packets),
    })
}

fn sender(stream: &Stream) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = listener.local_addr().unwrap().to_string();
    let header = stream.header.clone();
    let body = stream.body.clone();
    let repeat = stream.repeat;
    let h = thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(&header).unwrap();
        for _ in 0..repeat {
            c.write_all(&body).unwrap();
        }
    });
    (ep, h)
}

/// The ceiling: recv() into a large buffer, discard.
fn ceiling(stream: &Stream) -> Duration {
    let (ep, h) = sender(stream);
    let mut c = TcpStream::connect(&ep).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let t = start.elapsed();
    h.join().unwrap();
    assert_eq!(total, stream.bytes());
    t
}

/// The core: Source on its reader thread, a consumer touching every byte.
fn core(stream: &Stream) -> Duration {
    let (ep, h) = sender(stream);
    let config = Config {
        reconnect: false,
        ..Config::default()
    };
    let mut source = Source::open(&ep, config).unwrap();
    let start = Instant::now();
    let (packets, checksum) = consume(&mut source);
    let t = start.elapsed();
    h.join().unwrap();
    assert_eq!(packets, stream.packets());
    std::hint::black_box(checksum);
    t
}

/// The best of `n` rounds of each, core and ceiling taken alternately so
/// that both see the same machine (a 2-core VM here varies by a third
/// between runs).
fn best_of_interleaved(n: usize, s: &Stream) -> (Duration, Duration) {
    (0..n)
        .map(|_| (core(s), ceiling(s)))
        .fold((Duration::MAX, Duration::MAX), |(c, l), (c2, l2)| {
            (c.min(c2), l.min(l2))
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let rounds = if quick { 1 } else { 5 };
    let scale = if quick { 10 } else { 1 };
    let mut streams = vec![
        synthetic(64, 5_000_000 / scale),
        synthetic(512, 2_000_000 / scale),
        synthetic(1500, 1_000_000 / scale),
    ];
    streams.extend(trace_mix(1_000_000 / scale));

    let mut rows = Vec::new();
    println!(
        "{:<10} {:>10} {:>12} {:>10} {:>12} {:>10} {:>8}",
        "stream", "packets", "core Mpps", "core Gb/s", "ceiling Gb/s", "core/ceil", "MB"
    );
    for s in &streams {
        let (c, l) = best_of_interleaved(rounds, s);
        let gbit = |t: Duration| s.bytes() as f64 * 8.0 / t.as_secs_f64() / 1e9;
        let mpps = s.packets() as f64 / c.as_secs_f64() / 1e6;
        println!(
            "{:<10} {:>10} {:>12.2} {:>10.2} {:>12.2} {:>10.2} {:>8}",
            s.name,
            s.packets(),
            mpps,
            gbit(c),
            gbit(l),
            l.as_secs_f64() / c.as_secs_f64(),
            s.bytes() >> 20
        );
        rows.push(format!(
            "{{\"stream\":\"{}\",\"packets\":{},\"bytes\":{},\"core_s\":{},\"ceiling_s\":{},\"core_mpps\":{:.4},\"core_gbps\":{:.4},\"ceiling_gbps\":{:.4}}}",
            s.name,
            s.packets(),
            s.bytes(),
            c.as_secs_f64(),
            l.as_secs_f64(),
            mpps,
            gbit(c),
            gbit(l)
        ));
    }
    if let Some(p) = json_path {
        std::fs::write(&p, format!("[{}]\n", rows.join(",\n"))).unwrap();
    }
}
