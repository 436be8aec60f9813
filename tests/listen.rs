//! Several senders at once over real loopback sockets: a listening source
//! (`tcp-listen://HOST:PORT`) and a list of connect endpoints, merged into
//! one stream in timestamp order. Admission (`allowed_senders`,
//! `max_senders`), broken and silent senders, reconnects, a flooding sender
//! beside a slow one, bind failures, IPv6 and closing.
//!
//! Senders are told apart by their source address: the whole of 127/8 is
//! loopback on Linux, so each one binds its own 127.0.0.N before it
//! connects, and has its own entry in `Source::senders()`. Every test is
//! bounded by `within`; the only timing assertions are lower bounds and
//! generous upper bounds.

mod common;

use std::borrow::Cow;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{collect_as, connect_from, drip, listening, sender, within, Log, Rng};
use log::Level;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness, TsResolution};
use pcapovertcp::counters::Snapshot;
use pcapovertcp::{Config, Next, Opening, Source};

/// (ts_sec, ts_usec, wirelen, data, dlt) of one delivered packet.
type Pkt = (i64, u32, u32, Vec<u8>, i32);

/// Far from zero, so that a timestamp mix-up cannot pass unnoticed.
const BASE_SEC: u64 = 1_700_000_000;

// --- streams ----------------------------------------------------------------

/// The formats a sender may speak; each has its own byte order, resolution
/// and link type(s).
#[derive(Debug, Clone, Copy)]
enum Format {
    /// Little-endian pcap, microseconds, Ethernet.
    LeMicro,
    /// Big-endian pcap, nanoseconds, LINKTYPE_RAW (DLT_RAW 12 on Linux).
    BeNano,
    /// Little-endian pcapng, nanoseconds; two interfaces, Linux SLL (113)
    /// and Ethernet, alternating packet by packet.
    NgNano,
}

/// One sender's stream: its header (everything before the first packet),
/// its packets, and what the source must deliver for them.
struct Stream {
    header: Vec<u8>,
    body: Vec<u8>,
    /// Where each record starts in `body`.
    record_starts: Vec<usize>,
    want: Vec<Pkt>,
}

/// Builds a stream of `packets` (timestamp, data) in `format`; each
/// packet's wire length is its data length plus 10.
fn stream(format: Format, packets: &[(Duration, Vec<u8>)]) -> Stream {
    let wirelen = |data: &[u8]| data.len() as u32 + 10;
    let (all, header_len, starts, want) = match format {
        Format::LeMicro | Format::BeNano => {
            let (endianness, ts_resolution, datalink, dlt) = match format {
                Format::LeMicro => (
                    Endianness::Little,
                    TsResolution::MicroSecond,
                    DataLink::ETHERNET,
                    1,
                ),
                _ => (Endianness::Big, TsResolution::NanoSecond, DataLink::RAW, 12),
            };
            let header = PcapHeader {
                endianness,
                ts_resolution,
                datalink,
                snaplen: 65535,
                ..Default::default()
            };
            let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
            let mut starts = Vec::new();
            let mut want = Vec::new();
            let mut at = 0;
            for (ts, data) in packets {
                starts.push(at);
                at += w
                    .write_packet(&PcapPacket::new(*ts, wirelen(data), data))
                    .unwrap();
                want.push(expected(*ts, wirelen(data), data, dlt));
            }
            (w.into_writer(), 24, starts, want)
        }
        Format::NgNano => {
            let shb = SectionHeaderBlock {
                endianness: Endianness::Little,
                ..Default::default()
            };
            let mut w = PcapNgWriter::with_section_header(Vec::new(), shb).unwrap();
            for linktype in [DataLink::LINUX_SLL, DataLink::ETHERNET] {
                w.write_block(&Block::InterfaceDescription(InterfaceDescriptionBlock {
                    linktype,
                    snaplen: 0,
                    options: vec![InterfaceDescriptionOption::IfTsResol(9)],
                }))
                .unwrap();
            }
            let header_len = w.get_ref().len();
            let mut starts = Vec::new();
            let mut want = Vec::new();
            for (i, (ts, data)) in packets.iter().enumerate() {
                starts.push(w.get_ref().len() - header_len);
                let interface_id = (i % 2) as u32;
                w.write_block(&Block::EnhancedPacket(EnhancedPacketBlock {
                    interface_id,
                    // pcap-file writes the raw value: nanoseconds here (if_tsresol 9).
                    timestamp: *ts,
                    original_len: wirelen(data),
                    data: Cow::Borrowed(data),
                    options: vec![],
                }))
                .unwrap();
                let dlt = if interface_id == 0 { 113 } else { 1 };
                want.push(expected(*ts, wirelen(data), data, dlt));
            }
            (w.into_inner(), header_len, starts, want)
        }
    };
    Stream {
        header: all[..header_len].to_vec(),
        body: all[header_len..].to_vec(),
        record_starts: starts,
        want,
    }
}

fn expected(ts: Duration, wirelen: u32, data: &[u8], dlt: i32) -> Pkt {
    // Finer resolutions reach Zeek truncated to microseconds.
    (
        ts.as_secs() as i64,
        ts.subsec_micros(),
        wirelen,
        data.to_vec(),
        dlt,
    )
}

/// Packet data that names its sender (`tag`) and its place (`seq`), of a
/// length that varies with `seq`.
fn payload(tag: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut data = vec![tag];
    data.extend_from_slice(&seq.to_le_bytes());
    data.extend((0..len.saturating_sub(5)).map(|i| (i as u8).wrapping_mul(31) ^ tag));
    data.truncate(len.max(5));
    data
}

/// `packets` from BASE_SEC on, 1 ms apart.
fn from_base(tag: u8, n: u32, extra_ns: u32) -> Vec<(Duration, Vec<u8>)> {
    packets(
        tag,
        n,
        Duration::from_secs(BASE_SEC),
        Duration::from_millis(1),
        extra_ns,
    )
}

/// `n` packets for sender `tag`, timestamps from `first` every `step`, plus
/// `extra_ns` nanoseconds (below a microsecond: truncated on delivery).
fn packets(
    tag: u8,
    n: u32,
    first: Duration,
    step: Duration,
    extra_ns: u32,
) -> Vec<(Duration, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let ts = first + step * i + Duration::from_nanos(u64::from(extra_ns));
            let len = 20 + (i as usize * 37 + usize::from(tag) * 11) % 1400;
            (ts, payload(tag, i, len))
        })
        .collect()
}

/// All senders' expected packets in timestamp order (the tests give
/// distinct timestamps, so the order is unique).
fn merged(streams: &[&Stream]) -> Vec<Pkt> {
    let mut all: Vec<Pkt> = streams.iter().flat_map(|s| s.want.clone()).collect();
    all.sort_by_key(|p| (p.0, p.1));
    all
}

// --- sockets ----------------------------------------------------------------

/// The peer closed `s` (or reset it) within 5 s; fails if it stays open.
fn assert_closed_by_peer(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: the source sent {n} bytes"),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) => {}
        Err(e) => panic!("{what}: the connection was not closed by the source: {e}"),
    }
}

/// Writes `bytes` in chunks of random sizes (1..=max_chunk).
fn write_chunked(s: &mut TcpStream, bytes: &[u8], seed: u64, max_chunk: u64) {
    let mut rng = Rng(seed);
    let mut pos = 0;
    while pos < bytes.len() {
        let n = (1 + rng.below(max_chunk) as usize).min(bytes.len() - pos);
        s.write_all(&bytes[pos..pos + n]).unwrap();
        pos += n;
    }
}

// --- the consumer -------------------------------------------------------------

/// Takes packets until `want` have arrived (within `limit`).
fn collect(source: &mut Source, want: usize, limit: Duration) -> Vec<Pkt> {
    collect_as(source, want, limit, |p| {
        (p.ts_sec, p.ts_usec(), p.wirelen, p.data.to_vec(), p.dlt)
    })
}

/// Nothing more arrives for `quiet`, and the source does not end.
fn assert_nothing_more(source: &mut Source, quiet: Duration) {
    let until = Instant::now() + quiet;
    while Instant::now() < until {
        match source.next_packet() {
            Next::Empty => {
                source.wait(Duration::from_millis(20));
            }
            Next::Packet(p) => panic!("an extra packet arrived: {p:?}"),
            Next::Ended => panic!("the source ended by itself"),
        }
    }
}

fn assert_nondecreasing(got: &[Pkt]) {
    for (i, w) in got.windows(2).enumerate() {
        assert!(
            (w[0].0, w[0].1) <= (w[1].0, w[1].1),
            "packet {} ({}.{:06}) comes after a later one ({}.{:06})",
            i + 1,
            w[1].0,
            w[1].1,
            w[0].0,
            w[0].1
        );
    }
}

/// A packet in a few words, for failure messages: timestamp, lengths, link
/// type, and the sender tag and sequence number its payload carries.
fn describe(p: &Pkt) -> String {
    let seq =
        p.3.get(1..5)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
    format!(
        "{}.{:06} wirelen {} caplen {} dlt {} tag {:#x} seq {}",
        p.0,
        p.1,
        p.2,
        p.3.len(),
        p.4,
        p.3.first().copied().unwrap_or(0),
        seq
    )
}

/// `got` is `want`, packet for packet; on failure, says where they part.
fn assert_packets(got: &[Pkt], want: &[Pkt], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        let around = |v: &[Pkt]| {
            v[i.saturating_sub(2)..(i + 3).min(v.len())]
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
        };
        panic!(
            "{what}: packet {i} differs (of {} got, {} wanted)\n got: {:#?}\nwant: {:#?}",
            got.len(),
            want.len(),
            around(got),
            around(want)
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: how many packets");
}

/// Waits until `cond` holds for the counters of `address` (within `limit`).
fn wait_counters(
    source: &Source,
    address: &str,
    limit: Duration,
    cond: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + limit;
    loop {
        if let Some((_, s)) = source.senders().into_iter().find(|(a, _)| a == address) {
            if cond(&s) {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the counters of {address} did not get there within {limit:?}: {:?}",
            source.senders()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn assert_clean(name: &str, s: &Snapshot, connects: u64, records: u64) {
    assert_eq!(
        (
            s.connects,
            s.disconnects,
            s.records,
            s.dropped,
            s.truncated,
            s.corrupt,
            s.late
        ),
        (connects, connects, records, 0, 0, 0, 0),
        "{name}: (connects, disconnects, records, dropped, truncated, corrupt, late): {s:?}"
    );
}

// --- 1. three listening senders, three formats, merged in time order -----------

#[test]
fn three_senders_in_three_formats_are_merged_in_timestamp_order() {
    within(Duration::from_secs(60), || {
        let config = Config {
            merge_window: Duration::from_secs(5),
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let n = 1500;
        let ms = Duration::from_millis(1);
        // Sender k's packet i is at BASE + (3i + k) ms: the three interleave.
        let base = Duration::from_secs(BASE_SEC);
        let streams = [
            stream(Format::LeMicro, &packets(0xa0, n, base, ms * 3, 0)),
            stream(Format::BeNano, &packets(0xb0, n, base + ms, ms * 3, 789)),
            stream(
                Format::NgNano,
                &packets(0xc0, n, base + ms * 2, ms * 3, 321),
            ),
        ];
        let froms = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
        let mut log = Log::default();

        // Connect all three first and send their headers; each sender's
        // byte count proves that its connection (and merge lane) is up.
        let mut conns: Vec<TcpStream> = froms.iter().map(|f| connect_from(f, addr)).collect();
        for ((c, s), from) in conns.iter_mut().zip(&streams).zip(froms) {
            c.write_all(&s.header).unwrap();
            let header = s.header.len() as u64;
            wait_counters(&source, from, Duration::from_secs(10), |c| {
                c.bytes >= header
            });
            let local = c.local_addr().unwrap();
            log.wait_connected(&source, &name, local);
        }
        // Now the packets, from three threads at once, in random chunks.
        let writers: Vec<_> = conns
            .into_iter()
            .zip(streams.iter().map(|s| s.body.clone()))
            .enumerate()
            .map(|(i, (mut c, body))| {
                thread::spawn(move || {
                    write_chunked(&mut c, &body, 7 + i as u64, 50_000);
                    c.local_addr().unwrap()
                    // dropped: the sender leaves
                })
            })
            .collect();
        let locals: Vec<SocketAddr> = writers.into_iter().map(|w| w.join().unwrap()).collect();

        let want = merged(&streams.iter().collect::<Vec<_>>());
        let got = collect(&mut source, want.len(), Duration::from_secs(30));
        assert_nondecreasing(&got);
        assert_packets(&got, &want, "the merged stream");

        for (local, s) in locals.iter().zip(&streams) {
            log.wait_for(
                &source,
                Level::Info,
                &[&format!(
                    "{name}: sender {local} left after {} packets",
                    s.want.len()
                )],
                Duration::from_secs(5),
            );
        }
        for from in froms {
            assert_clean(from, &sender(&source, from), 1, u64::from(n));
        }
        let total = source.counters();
        assert_eq!(
            (total.records, total.late),
            (3 * u64::from(n), 0),
            "{total:?}"
        );
        assert!(log.matching(Level::Warn, &[]).is_empty(), "{:#?}", log.seen);
        // Every sender has left; a listening source waits for the next one.
        assert_nothing_more(&mut source, Duration::from_millis(300));
        common::closes_promptly(&mut source, "open");
    })
}

// --- 2. three connect endpoints, merged the same way -------------------------------

#[test]
fn three_connect_endpoints_are_merged_in_timestamp_order() {
    within(Duration::from_secs(60), || {
        let servers: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let endpoints: Vec<String> = servers
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let config = Config {
            merge_window: Duration::from_secs(5),
            // Each stream ends the endpoint; the source ends after the last.
            reconnect: false,
            ..Config::default()
        };
        let mut source = Source::start(&endpoints.join(","), config).unwrap();
        let n = 1500;
        let ms = Duration::from_millis(1);
        let base = Duration::from_secs(BASE_SEC);
        let streams = [
            stream(Format::LeMicro, &packets(0xa1, n, base + ms * 2, ms * 3, 0)),
            stream(Format::BeNano, &packets(0xb1, n, base, ms * 3, 999)),
            stream(Format::NgNano, &packets(0xc1, n, base + ms, ms * 3, 1)),
        ];
        let mut conns: Vec<TcpStream> = servers
            .iter()
            .map(|l| {
                let (c, _) = l.accept().unwrap();
                c.set_nodelay(true).unwrap();
                c
            })
            .collect();
        assert!(matches!(
            source.wait_open(Duration::from_millis(300)),
            Opening::Waiting
        ));
        // The source opens with the first header to arrive, and its link type.
        conns[0].write_all(&streams[0].header).unwrap();
        match source.wait_open(Duration::from_secs(10)) {
            Opening::Open(lt) => assert_eq!(lt, 1),
            other => panic!("expected the source to open: {other:?}"),
        }
        for (i, c) in conns.iter_mut().enumerate().skip(1) {
            c.write_all(&streams[i].header).unwrap();
        }
        for (ep, s) in endpoints.iter().zip(&streams) {
            let header = s.header.len() as u64;
            wait_counters(&source, ep, Duration::from_secs(10), |c| c.bytes >= header);
        }
        let writers: Vec<_> = conns
            .into_iter()
            .zip(streams.iter().map(|s| s.body.clone()))
            .enumerate()
            .map(|(i, (mut c, body))| {
                thread::spawn(move || write_chunked(&mut c, &body, 70 + i as u64, 50_000))
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let want = merged(&streams.iter().collect::<Vec<_>>());
        let got = common_drain(&mut source, Duration::from_secs(30));
        assert_nondecreasing(&got);
        assert_packets(&got, &want, "the merged stream");
        let senders = source.senders();
        let names: Vec<&str> = senders.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            names,
            endpoints.iter().map(String::as_str).collect::<Vec<_>>()
        );
        for (ep, s) in &senders {
            assert_clean(ep, s, 1, u64::from(n));
        }
        common::closes_promptly(&mut source, "open");
    })
}

/// Takes packets until the source ends (within `limit`).
fn common_drain(source: &mut Source, limit: Duration) -> Vec<Pkt> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    loop {
        match source.next_packet() {
            Next::Packet(p) => got.push((p.ts_sec, p.ts_usec(), p.wirelen, p.data.to_vec(), p.dlt)),
            Next::Empty => {
                assert!(
                    Instant::now() < deadline,
                    "the stream did not end within {limit:?}"
                );
                source.wait(Duration::from_millis(50));
            }
            Next::Ended => return got,
        }
    }
}

// --- 3. allowed_senders --------------------------------------------------------------

#[test]
fn a_sender_outside_allowed_senders_is_refused_and_reported_once() {
    within(Duration::from_secs(60), || {
        let config = Config {
            allowed_senders: vec!["10.0.0.0/8".parse().unwrap()],
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut log = Log::default();
        let mut first = connect_from("127.0.0.1", addr);
        let local = first.local_addr().unwrap();
        assert_closed_by_peer(&mut first, "a sender outside allowed_senders");
        let line = log.wait_for(
            &source,
            Level::Warn,
            &["refused sender"],
            Duration::from_secs(5),
        );
        assert_eq!(
            line,
            format!("{name}: refused sender {local}: it is not in PcapOverTcp::allowed_senders")
        );
        // Again from the same address, within 10 s: refused, not reported again.
        let mut again = connect_from("127.0.0.1", addr);
        // (It may be closed already: the write's outcome does not matter.)
        let _ = again.write_all(&stream(Format::LeMicro, &[]).header);
        assert_closed_by_peer(&mut again, "a second sender outside allowed_senders");
        thread::sleep(Duration::from_millis(100));
        log.update(&source);
        assert_eq!(
            log.matching(Level::Warn, &["refused sender"]).len(),
            1,
            "{:#?}",
            log.seen
        );
        assert!(
            log.matching(Level::Info, &["connected"]).is_empty(),
            "{:#?}",
            log.seen
        );
        let total = source.counters();
        assert_eq!((total.connects, total.bytes), (0, 0), "{total:?}");
        assert_nothing_more(&mut source, Duration::from_millis(100));
        common::closes_promptly(&mut source, "open");

        // 127.0.0.0/8 lets a loopback sender in.
        let config = Config {
            allowed_senders: vec!["127.0.0.0/8".parse().unwrap()],
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let s = stream(Format::LeMicro, &from_base(1, 5, 0));
        let mut c = connect_from("127.0.0.1", addr);
        let local = c.local_addr().unwrap();
        c.write_all(&s.header).unwrap();
        c.write_all(&s.body).unwrap();
        assert_packets(
            &collect(&mut source, 5, Duration::from_secs(10)),
            &s.want,
            "the accepted sender's packets",
        );
        let mut log = Log::default();
        log.wait_connected(&source, &name, local);
        assert!(log.matching(Level::Warn, &[]).is_empty(), "{:#?}", log.seen);
        drop(c);
        common::closes_promptly(&mut source, "open");

        // A narrower list: only 127.0.0.2 of the loopback addresses.
        let config = Config {
            allowed_senders: vec!["127.0.0.2/32".parse().unwrap()],
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut log = Log::default();
        let mut outside = connect_from("127.0.0.3", addr);
        let outside_addr = outside.local_addr().unwrap();
        assert_closed_by_peer(&mut outside, "127.0.0.3, outside 127.0.0.2/32");
        log.wait_for(
            &source,
            Level::Warn,
            &[&format!(
                "{name}: refused sender {outside_addr}: it is not in PcapOverTcp::allowed_senders"
            )],
            Duration::from_secs(5),
        );
        let mut inside = connect_from("127.0.0.2", addr);
        inside.write_all(&s.header).unwrap();
        inside.write_all(&s.body).unwrap();
        assert_packets(
            &collect(&mut source, 5, Duration::from_secs(10)),
            &s.want,
            "the accepted sender's packets",
        );
        assert_eq!(sender(&source, "127.0.0.2").records, 5);
        assert!(source.senders().iter().all(|(a, _)| a == "127.0.0.2"));
        common::closes_promptly(&mut source, "open");
    })
}

// --- 4. max_senders ----------------------------------------------------------------

#[test]
fn a_sender_over_max_senders_is_refused_until_one_leaves() {
    within(Duration::from_secs(60), || {
        let config = Config {
            max_senders: 2,
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut log = Log::default();
        let ms = Duration::from_millis(1);
        let base = Duration::from_secs(BASE_SEC);
        let first = stream(Format::LeMicro, &packets(1, 3, base, ms * 3, 0));
        let second = stream(Format::LeMicro, &packets(2, 3, base + ms, ms * 3, 0));
        let fourth = stream(Format::LeMicro, &packets(4, 3, base + ms * 2, ms * 3, 0));

        let mut a = connect_from("127.0.0.2", addr);
        let mut b = connect_from("127.0.0.3", addr);
        for (c, s) in [(&mut a, &first), (&mut b, &second)] {
            c.write_all(&s.header).unwrap();
            let local = c.local_addr().unwrap();
            log.wait_connected(&source, &name, local);
        }
        // A third is one too many, once its header is whole (neither of the
        // others has been silent for header_timeout).
        let mut third = connect_from("127.0.0.4", addr);
        let third_addr = third.local_addr().unwrap();
        third.write_all(&fourth.header).unwrap();
        assert_closed_by_peer(&mut third, "a third sender with max_senders 2");
        log.wait_for(
            &source,
            Level::Warn,
            &[&format!(
                "{name}: refused sender {third_addr}: PcapOverTcp::max_senders (2) senders are connected, and none has been silent for 10.0 s"
            )],
            Duration::from_secs(5),
        );
        assert_eq!(source.counters().connects, 2);

        // The first sender sends its packets and leaves ...
        let a_addr = a.local_addr().unwrap();
        a.write_all(&first.body).unwrap();
        drop(a);
        log.wait_for(
            &source,
            Level::Info,
            &[&format!("{name}: sender {a_addr} left after 3 packets")],
            Duration::from_secs(5),
        );
        // ... and a new sender is let in. (Its slot is given back just after
        // the "left" message: a refusal in between is tried again.)
        let mut refused_first = 0;
        let mut d = loop {
            let mut d = connect_from("127.0.0.4", addr);
            let local = d.local_addr().unwrap();
            let _ = d.write_all(&fourth.header);
            d.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let accepted = loop {
                log.update(&source);
                if !log
                    .matching(Level::Info, &[&format!("sender {local} connected")])
                    .is_empty()
                {
                    break true;
                }
                match d.read(&mut [0u8; 16]) {
                    Ok(0) => break false,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break false,
                    Ok(n) => panic!("the source sent {n} bytes"),
                }
                assert!(
                    Instant::now() < deadline,
                    "the new sender was neither accepted nor refused"
                );
            };
            if accepted {
                break d;
            }
            refused_first += 1;
            assert!(
                refused_first < 20,
                "a sender was refused 20 times after one left"
            );
            thread::sleep(Duration::from_millis(20));
        };
        if refused_first > 0 {
            println!(
                "note: the new sender was refused {refused_first} times before its slot came free"
            );
        }
        d.write_all(&fourth.body).unwrap();
        b.write_all(&second.body).unwrap();
        drop(d);
        drop(b);
        let want = merged(&[&first, &second, &fourth]);
        let got = collect(&mut source, want.len(), Duration::from_secs(10));
        let mut sorted = got.clone();
        sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_packets(&sorted, &want_sorted, "every packet once");
        assert_eq!(sender(&source, "127.0.0.4").records, 3);
        assert_eq!(source.counters().connects, 3);
        common::closes_promptly(&mut source, "open");
    })
}

// --- 5. a sender that speaks something else ----------------------------------------------

#[test]
fn an_ssh_banner_closes_that_sender_as_corrupt_and_the_others_go_on() {
    within(Duration::from_secs(60), || {
        let (mut source, name, addr) = listening("tcp-listen", Config::default());
        let mut log = Log::default();
        let good = stream(Format::BeNano, &from_base(7, 50, 5));
        let mut g = connect_from("127.0.0.2", addr);
        g.write_all(&good.header).unwrap();
        wait_counters(&source, "127.0.0.2", Duration::from_secs(5), |c| {
            c.bytes >= 24
        });

        let mut ssh = connect_from("127.0.0.3", addr);
        let ssh_addr = ssh.local_addr().unwrap();
        ssh.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
        assert_closed_by_peer(&mut ssh, "a sender that sent an SSH banner");
        let line = log.wait_for(
            &source,
            Level::Warn,
            &[&format!("{name}: sender {ssh_addr}: ")],
            Duration::from_secs(5),
        );
        assert!(
            line.contains("not a pcap or pcapng stream")
                && line.contains("SSH-2.0")
                && line.ends_with("its connection was closed after 0 packets"),
            "{line}"
        );
        // Never admitted: it takes no entry among the senders.
        let senders = source.senders();
        assert!(senders.iter().all(|(a, _)| a == "127.0.0.2"), "{senders:?}");

        let g_addr = g.local_addr().unwrap();
        write_chunked(&mut g, &good.body, 3, 700);
        drop(g);
        assert_packets(
            &collect(&mut source, 50, Duration::from_secs(10)),
            &good.want,
            "the good sender's packets",
        );
        log.wait_for(
            &source,
            Level::Info,
            &[&format!("{name}: sender {g_addr} left after 50 packets")],
            Duration::from_secs(5),
        );
        assert_clean("the good sender", &sender(&source, "127.0.0.2"), 1, 50);
        assert_eq!(source.counters().corrupt, 0);
        common::closes_promptly(&mut source, "open");
    })
}

// --- 6. connections that send nothing -------------------------------------------------

/// Opens a connection from `from` every `every` and holds it `hold`
/// without sending a byte, until `stop` is set.
fn storm(
    to: SocketAddr,
    from: &'static str,
    every: Duration,
    hold: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut held: std::collections::VecDeque<(Instant, TcpStream)> = Default::default();
        let mut opened = 0;
        while !stop.load(Ordering::Relaxed) {
            held.push_back((Instant::now(), connect_from(from, to)));
            opened += 1;
            while held.front().is_some_and(|(t, _)| t.elapsed() >= hold) {
                held.pop_front();
            }
            thread::sleep(every);
        }
        opened
    })
}

#[test]
fn connections_that_send_nothing_hold_no_sender_back_and_are_closed_at_header_timeout() {
    within(Duration::from_secs(60), || {
        // A window longer than the header timeout: a connection that held a
        // lane would hold the good sender until it was closed.
        let config = Config {
            header_timeout: Some(Duration::from_secs(2)),
            merge_window: Duration::from_secs(5),
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut log = Log::default();
        let mut silent = connect_from("127.0.0.3", addr);
        let silent_since = Instant::now();
        let silent_addr = silent.local_addr().unwrap();
        // 30 connections a second, each held 0.5 s without a byte.
        let stop = Arc::new(AtomicBool::new(false));
        let storm = storm(
            addr,
            "127.0.0.4",
            Duration::from_millis(33),
            Duration::from_millis(500),
            stop.clone(),
        );
        thread::sleep(Duration::from_millis(300));

        let good = stream(Format::LeMicro, &from_base(8, 2000, 0));
        let mut g = connect_from("127.0.0.2", addr);
        g.write_all(&good.header).unwrap();
        g.write_all(&good.body).unwrap();
        drop(g);
        // Nobody holds it: its packets come at once, not after a window or
        // a header timeout.
        let got = collect(&mut source, 2000, Duration::from_secs(3));
        assert_packets(&got, &good.want, "the good sender's packets");
        stop.store(true, Ordering::Relaxed);
        let opened = storm.join().unwrap();
        assert!(opened >= 10, "the storm opened only {opened} connections");

        let line = log.wait_for(
            &source,
            Level::Warn,
            &[&format!(
                "sender {silent_addr} sent no whole pcap header within"
            )],
            Duration::from_secs(5),
        );
        assert_closed_by_peer(&mut silent, "a silent sender after header_timeout");
        let silent_for = silent_since.elapsed();
        assert_eq!(
            line,
            format!(
                "{name}: sender {silent_addr} sent no whole pcap header within 2.0 s \
                 (PcapOverTcp::header_timeout; 0 bytes received); its connection was closed after 0 packets"
            )
        );
        assert!(
            silent_for >= Duration::from_secs(2) && silent_for < Duration::from_secs(4),
            "closed after {silent_for:?}"
        );
        // Never admitted, the silent connections take no entry.
        let senders = source.senders();
        assert_eq!(senders.len(), 1, "{senders:?}");
        assert_clean("the good sender", &sender(&source, "127.0.0.2"), 1, 2000);
        assert!(
            log.matching(Level::Info, &["127.0.0.3"]).is_empty()
                && log.matching(Level::Info, &["127.0.0.4"]).is_empty(),
            "a connection that sent nothing was reported as connected: {:#?}",
            log.seen
        );
        common::closes_promptly(&mut source, "open");
    })
}

// --- 7. a sender cut off mid-record ----------------------------------------------------------

#[test]
fn a_sender_cut_off_mid_record_loses_only_that_record() {
    within(Duration::from_secs(60), || {
        let (mut source, name, addr) = listening("tcp-listen", Config::default());
        let mut log = Log::default();
        let ms = Duration::from_millis(1);
        let base = Duration::from_secs(BASE_SEC);
        let cut = stream(Format::LeMicro, &packets(0xc, 11, base, ms * 2, 0));
        let whole = stream(Format::LeMicro, &packets(0xd, 10, base + ms, ms * 2, 0));
        let mut a = connect_from("127.0.0.2", addr);
        let mut b = connect_from("127.0.0.3", addr);
        a.write_all(&cut.header).unwrap();
        b.write_all(&whole.header).unwrap();
        for from in ["127.0.0.2", "127.0.0.3"] {
            wait_counters(&source, from, Duration::from_secs(5), |c| c.bytes >= 24);
        }
        let a_addr = a.local_addr().unwrap();
        let b_addr = b.local_addr().unwrap();
        // Ten whole records, then the 16-byte record header and 5 bytes of the 11th.
        let end = cut.record_starts[10] + 16 + 5;
        a.write_all(&cut.body[..end]).unwrap();
        drop(a);
        b.write_all(&whole.body).unwrap();
        drop(b);

        let want = merged(&[&whole]);
        let mut want_all = cut.want[..10].to_vec();
        want_all.extend(want);
        want_all.sort_by_key(|p| (p.0, p.1));
        let got = collect(&mut source, 20, Duration::from_secs(10));
        assert_packets(&got, &want_all, "both senders' packets");
        log.wait_for(
            &source,
            Level::Warn,
            &[&format!(
                "sender {a_addr}: the connection ended in the middle of a record; its 21 bytes were discarded"
            )],
            Duration::from_secs(5),
        );
        log.wait_for(
            &source,
            Level::Info,
            &[&format!("{name}: sender {a_addr} left after 10 packets")],
            Duration::from_secs(5),
        );
        log.wait_for(
            &source,
            Level::Info,
            &[&format!("{name}: sender {b_addr} left after 10 packets")],
            Duration::from_secs(5),
        );
        let s = sender(&source, "127.0.0.2");
        assert_eq!(
            (s.records, s.truncated, s.dropped, s.corrupt, s.late),
            (10, 1, 0, 0, 0),
            "{s:?}"
        );
        assert_clean("the other sender", &sender(&source, "127.0.0.3"), 1, 10);
        assert_eq!(source.stats().dropped, 1, "the cut record is lost");
        assert_nothing_more(&mut source, Duration::from_millis(200));
        common::closes_promptly(&mut source, "open");
    })
}

// --- 8. one sender, reconnecting -------------------------------------------------------------

/// Connects from 127.0.0.1 once per stream, back to back: each connection
/// sends its header, is admitted (its connect counted), sends the rest of
/// its stream and closes before the next one connects. The local addresses,
/// in order.
fn reconnect_back_to_back(
    source: &Source,
    addr: SocketAddr,
    streams: &[Stream],
) -> Vec<SocketAddr> {
    streams
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut c = TcpStream::connect(addr).unwrap();
            let local = c.local_addr().unwrap();
            c.write_all(&s.header).unwrap();
            // The merge orders a connection after those admitted before it
            // (a connection has no lane before its header).
            wait_counters(source, "127.0.0.1", Duration::from_secs(5), |c| {
                c.connects > k as u64
            });
            write_chunked(&mut c, &s.body, k as u64 + 1, 300);
            local
        })
        .collect()
}

#[test]
fn a_sender_that_reconnects_is_counted_under_its_address_and_loses_nothing() {
    within(Duration::from_secs(60), || {
        // A window far longer than the test: order must come from the
        // merge waiting for connected senders, not from luck.
        let config = Config {
            merge_window: Duration::from_secs(5),
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut log = Log::default();
        let formats = [
            Format::LeMicro,
            Format::BeNano,
            Format::NgNano,
            Format::LeMicro,
        ];
        let ms = Duration::from_millis(1);
        // The first connection and three reconnects, each with its own
        // format and later timestamps than the one before.
        let streams: Vec<Stream> = formats
            .into_iter()
            .enumerate()
            .map(|(k, format)| {
                let first = Duration::from_secs(BASE_SEC) + ms * (100 * k as u32);
                stream(format, &packets(0x10 + k as u8, 25, first, ms, 0))
            })
            .collect();
        let want: Vec<Pkt> = streams.iter().flat_map(|s| s.want.clone()).collect();
        let locals = reconnect_back_to_back(&source, addr, &streams);
        let got = collect(&mut source, want.len(), Duration::from_secs(10));

        // Every packet once ...
        let mut sorted = got.clone();
        sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_packets(&sorted, &want_sorted, "every packet once");
        assert_nothing_more(&mut source, Duration::from_millis(200));
        for local in &locals {
            log.wait_connected(&source, &name, *local);
            log.wait_for(
                &source,
                Level::Info,
                &[&format!("{name}: sender {local} left after 25 packets")],
                Duration::from_secs(5),
            );
        }
        // ... counted under the one address ...
        let senders = source.senders();
        assert_eq!(senders.len(), 1, "one address, one entry: {senders:?}");
        assert_eq!(senders[0].0, "127.0.0.1");
        let s = &senders[0].1;
        assert_eq!(
            (
                s.connects,
                s.disconnects,
                s.records,
                s.dropped,
                s.truncated,
                s.corrupt
            ),
            (4, 4, 100, 0, 0, 0),
            "{s:?}"
        );
        // ... and in timestamp order: an earlier connection's packets are
        // never released after a later one's.
        assert_packets(&got, &want, "the four connections' packets, in order");
        assert_eq!(s.late, 0, "{s:?}");
        common::closes_promptly(&mut source, "open");
    })
}

/// The same with many reconnects: each connection was admitted before the
/// next one connected, so the merge knows it before the next one's packets
/// can be released.
#[test]
fn back_to_back_reconnects_are_merged_in_timestamp_order() {
    within(Duration::from_secs(60), || {
        let config = Config {
            merge_window: Duration::from_secs(5),
            ..Config::default()
        };
        let (mut source, _name, addr) = listening("tcp-listen", config);
        let ms = Duration::from_millis(1);
        let streams: Vec<Stream> = (0..30u32)
            .map(|k| {
                let first = Duration::from_secs(BASE_SEC) + ms * (10 * k);
                stream(Format::LeMicro, &packets(k as u8, 4, first, ms, 0))
            })
            .collect();
        let want: Vec<Pkt> = streams.iter().flat_map(|s| s.want.clone()).collect();
        reconnect_back_to_back(&source, addr, &streams);
        let got = collect(&mut source, want.len(), Duration::from_secs(10));
        let late = sender(&source, "127.0.0.1").late;
        assert_packets(&got, &want, "thirty connections' packets, in order");
        assert_eq!(late, 0);
        common::closes_promptly(&mut source, "open");
    })
}

// --- 9. a flooding sender beside a trickling one -----------------------------------------------

#[test]
fn a_flooding_sender_drops_its_own_packets_not_a_trickling_senders() {
    within(Duration::from_secs(60), || {
        let config = Config {
            buffer_size: 1 << 20,
            drop_when_full: true,
            ..Config::default()
        };
        let (mut source, _name, addr) = listening("tcp-listen", config);
        let base = Duration::from_secs(BASE_SEC);
        let trickle = stream(
            Format::LeMicro,
            &packets(
                0x77,
                20,
                base + Duration::from_secs(1),
                Duration::from_millis(1),
                0,
            ),
        );
        // The flood: about 1 MiB of 1000-byte packets, all at BASE, sent
        // over and over.
        let flood = stream(
            Format::LeMicro,
            &(0..1000u32)
                .map(|i| (base, payload(0xf1, i, 1000)))
                .collect::<Vec<_>>(),
        );
        let mut t = connect_from("127.0.0.2", addr);
        let mut f = connect_from("127.0.0.3", addr);
        t.write_all(&trickle.header).unwrap();
        f.write_all(&flood.header).unwrap();
        for from in ["127.0.0.2", "127.0.0.3"] {
            wait_counters(&source, from, Duration::from_secs(5), |c| c.bytes >= 24);
        }

        // The consumer takes nothing while the flood fills the budget.
        let stop = Arc::new(AtomicBool::new(false));
        let flooder = {
            let stop = stop.clone();
            let body = flood.body.clone();
            thread::spawn(move || {
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) && sent < (1 << 32) {
                    if f.write_all(&body).is_err() {
                        break;
                    }
                    sent += body.len();
                }
            })
        };
        wait_counters(&source, "127.0.0.3", Duration::from_secs(20), |c| {
            c.dropped > 0
        });
        // The flood goes on; the trickler sends a packet every 20 ms.
        for i in 0..trickle.want.len() {
            let start = trickle.record_starts[i];
            let end = trickle
                .record_starts
                .get(i + 1)
                .copied()
                .unwrap_or(trickle.body.len());
            t.write_all(&trickle.body[start..end]).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        wait_counters(&source, "127.0.0.2", Duration::from_secs(10), |c| {
            c.records == 20
        });
        let t_mid = sender(&source, "127.0.0.2");
        stop.store(true, Ordering::Relaxed);
        flooder.join().unwrap();
        drop(t);

        // Now everything the source kept is delivered.
        let t_final = wait_counters(&source, "127.0.0.2", Duration::from_secs(10), |c| {
            c.disconnects == 1
        });
        let f_final = wait_counters(&source, "127.0.0.3", Duration::from_secs(10), |c| {
            c.disconnects == 1
        });
        let kept = (t_final.records - t_final.dropped) + (f_final.records - f_final.dropped);
        let got = collect(&mut source, kept as usize, Duration::from_secs(30));
        assert_nothing_more(&mut source, Duration::from_millis(200));
        let trickled: Vec<Pkt> = got.iter().filter(|p| p.3[0] == 0x77).cloned().collect();
        assert_eq!(
            t_mid.dropped, 0,
            "the trickling sender lost packets while the other flooded: {t_mid:?}"
        );
        assert_packets(
            &trickled,
            &trickle.want,
            "the trickling sender's packets, once each, in order",
        );
        assert_eq!(t_final.dropped, 0, "{t_final:?}");
        assert!(
            f_final.dropped > 0,
            "the flooding sender dropped nothing: {f_final:?}"
        );
        assert!(
            got.iter().filter(|p| p.3[0] == 0xf1).count() as u64
                == f_final.records - f_final.dropped,
            "the flooder's kept packets"
        );
        common::closes_promptly(&mut source, "open");
    })
}

// --- 10. the port is taken ---------------------------------------------------------------------

#[test]
fn a_port_in_use_fails_the_start_with_one_clear_line() {
    within(Duration::from_secs(30), || {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let name = format!("tcp-listen://127.0.0.1:{port}");
        let e = match Source::start(&name, Config::default()) {
            Ok(_) => panic!("listening on a port in use succeeded"),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with(&format!("cannot listen on {name}: ")), "{e}");
        assert!(e.contains("Address already in use"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        drop(taken);
    })
}

// --- 11. IPv6 ------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(ipv6_loopback),
    ignore = "this machine could not bind [::1] when the tests were built"
)]
fn listening_on_ipv6_loopback_accepts_a_sender() {
    within(Duration::from_secs(30), || {
        let name = "tcp-listen://[::1]:0".to_string();
        let mut source = Source::start(&name, Config::default()).unwrap();
        assert!(matches!(
            source.wait_open(Duration::from_secs(5)),
            Opening::Open(1)
        ));
        let [addr] = *source.listening() else {
            panic!("bound to {:?}", source.listening());
        };
        assert!(
            addr.ip().is_loopback() && addr.is_ipv6() && addr.port() != 0,
            "{addr}"
        );
        let s = stream(Format::NgNano, &from_base(6, 10, 0));
        let mut c = TcpStream::connect(addr).unwrap();
        let local = c.local_addr().unwrap();
        c.write_all(&s.header).unwrap();
        c.write_all(&s.body).unwrap();
        drop(c);
        assert_packets(
            &collect(&mut source, 10, Duration::from_secs(10)),
            &s.want,
            "the IPv6 sender's packets",
        );
        let mut log = Log::default();
        log.wait_connected(&source, &name, local);
        assert!(local.to_string().starts_with("[::1]:"), "{local}");
        log.wait_for(
            &source,
            Level::Info,
            &[&format!("{name}: sender {local} left after 10 packets")],
            Duration::from_secs(5),
        );
        let senders = source.senders();
        assert_eq!(senders.len(), 1, "{senders:?}");
        assert_eq!(senders[0].0, "::1");
        assert_clean("::1", &senders[0].1, 1, 10);
        common::closes_promptly(&mut source, "open");
    })
}

// --- 12. closing with senders connected ----------------------------------------------------------

#[test]
fn close_with_two_idle_senders_returns_within_a_second_and_closes_them() {
    within(Duration::from_secs(30), || {
        let (mut source, name, addr) = listening("tcp-listen", Config::default());
        let mut log = Log::default();
        let header = stream(Format::LeMicro, &[]).header;
        let mut senders: Vec<TcpStream> = ["127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|from| {
                let mut c = connect_from(from, addr);
                c.write_all(&header).unwrap();
                wait_counters(&source, from, Duration::from_secs(5), |s| s.bytes >= 24);
                let local = c.local_addr().unwrap();
                log.wait_connected(&source, &name, local);
                c
            })
            .collect();
        assert_nothing_more(&mut source, Duration::from_millis(200));
        log.seen
            .extend(common::closes_promptly(&mut source, "two idle senders"));
        for c in &mut senders {
            assert_closed_by_peer(c, "an idle sender when the source closed");
        }
        // Closing is not a departure to report.
        log.update(&source);
        assert!(
            log.matching(Level::Info, &["left after"]).is_empty(),
            "{:#?}",
            log.seen
        );
        assert!(log.matching(Level::Warn, &[]).is_empty(), "{:#?}", log.seen);
        // And the port is no longer listened on.
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        assert!(
            refused.is_err(),
            "the port still accepts connections after close"
        );
    })
}

// --- 13. admission: deadlines, pools, a full listener, one count per source -------------------

#[test]
fn a_header_dripped_a_byte_at_a_time_is_closed_at_header_timeout() {
    within(Duration::from_secs(30), || {
        let config = Config {
            header_timeout: Some(Duration::from_secs(1)),
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut log = Log::default();
        // A pcap header at one byte per 150 ms takes 3.6 s; a pcapng section
        // header followed by custom blocks never ends.
        let pcap = stream(Format::LeMicro, &[]).header;
        let mut pcapng = stream(Format::NgNano, &[]).header[..28].to_vec();
        pcapng.extend(std::iter::repeat_n([0xad, 0x0b, 0, 0, 0x10, 0, 0, 0], 8).flatten());
        let every = Duration::from_millis(150);
        let drippers: Vec<_> = (0..8)
            .map(|i| {
                drip(
                    addr,
                    "127.0.0.3",
                    if i % 2 == 0 {
                        pcap.clone()
                    } else {
                        pcapng.clone()
                    },
                    every,
                )
            })
            .collect();
        for d in drippers {
            let after = d.join().unwrap();
            assert!(
                after.is_some_and(|a| a >= Duration::from_secs(1) && a < Duration::from_millis(2500)),
                "a dripping connection was closed after {after:?}, not at header_timeout (1 s)"
            );
        }
        let line = log.wait_for(
            &source,
            Level::Warn,
            &["sent no whole pcap header within 1.0 s"],
            Duration::from_secs(2),
        );
        assert!(
            line.starts_with(&format!("{name}: sender 127.0.0.3:")),
            "{line}"
        );
        assert!(source.senders().is_empty(), "{:?}", source.senders());
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn pending_connections_take_no_place_among_max_senders() {
    within(Duration::from_secs(30), || {
        let config = Config {
            max_senders: 2,
            header_timeout: Some(Duration::from_secs(20)),
            ..Config::default()
        };
        let (mut source, _name, addr) = listening("tcp-listen", config);
        let silent: Vec<TcpStream> = (0..10).map(|_| connect_from("127.0.0.3", addr)).collect();
        thread::sleep(Duration::from_millis(200));
        let a = stream(Format::LeMicro, &from_base(1, 50, 0));
        let b = stream(Format::BeNano, &from_base(2, 50, 500));
        for (from, s) in [("127.0.0.4", &a), ("127.0.0.5", &b)] {
            let mut c = connect_from(from, addr);
            c.write_all(&s.header).unwrap();
            c.write_all(&s.body).unwrap();
        }
        let got = collect(&mut source, 100, Duration::from_secs(5));
        assert_eq!(got.len(), 100);
        for from in ["127.0.0.4", "127.0.0.5"] {
            assert_eq!(sender(&source, from).records, 50);
        }
        drop(silent);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn a_full_listener_closes_its_longest_silent_sender_for_one_with_packets() {
    within(Duration::from_secs(30), || {
        let config = Config {
            header_timeout: Some(Duration::from_secs(1)),
            ..Config::default()
        };
        let max = Config::default().max_senders;
        let (mut source, _name, addr) = listening("tcp-listen", config);
        let header = stream(Format::LeMicro, &[]).header;
        // max_senders (64) connections that send a header, then nothing.
        let holders: Vec<TcpStream> = (0..max)
            .map(|_| {
                let mut c = connect_from("127.0.0.3", addr);
                c.write_all(&header).unwrap();
                c
            })
            .collect();
        wait_counters(&source, "127.0.0.3", Duration::from_secs(10), |c| {
            c.connects == max as u64
        });
        // At once, none has been silent for header_timeout: refused.
        let good = stream(Format::LeMicro, &from_base(9, 100, 0));
        let mut early = connect_from("127.0.0.2", addr);
        early.write_all(&good.header).unwrap();
        assert_closed_by_peer(&mut early, "a sender while every holder had just arrived");
        // Once they have been silent that long, a sender with packets gets in.
        thread::sleep(Duration::from_millis(1100));
        let mut g = connect_from("127.0.0.2", addr);
        g.write_all(&good.header).unwrap();
        g.write_all(&good.body).unwrap();
        let got = collect(&mut source, 100, Duration::from_secs(5));
        assert_packets(&got, &good.want, "the good sender's packets");
        let h = wait_counters(&source, "127.0.0.3", Duration::from_secs(5), |c| {
            c.disconnects == 1
        });
        assert_eq!((h.connects, h.open), (max as u64, max as u64 - 1), "{h:?}");
        drop(holders);
        common::closes_promptly(&mut source, "open");

        // The line that says so (with 64 arrivals reported, the rate limit
        // would leave it out of this window: two holders here).
        let config = Config {
            header_timeout: Some(Duration::from_millis(300)),
            max_senders: 2,
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tcp-listen", config);
        let mut log = Log::default();
        let holders: Vec<TcpStream> = ["127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|from| {
                let mut c = connect_from(from, addr);
                c.write_all(&header).unwrap();
                wait_counters(&source, from, Duration::from_secs(5), |c| c.connects == 1);
                c
            })
            .collect();
        thread::sleep(Duration::from_millis(400));
        let mut g = connect_from("127.0.0.2", addr);
        g.write_all(&good.header).unwrap();
        g.write_all(&good.body).unwrap();
        collect(&mut source, 100, Duration::from_secs(5));
        let line = log.wait_for(
            &source,
            Level::Warn,
            &["to admit a new sender"],
            Duration::from_secs(5),
        );
        // The first holder has been silent longest.
        let first = holders[0].local_addr().unwrap();
        assert!(
            line.starts_with(&format!(
                "{name}: sender {first} was closed after 0 packets to admit a new sender: it had sent no packet for "
            )) && line.ends_with("PcapOverTcp::max_senders (2) senders were connected"),
            "{line}"
        );
        drop(holders);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn max_senders_counts_over_every_listen_endpoint_of_the_source() {
    within(Duration::from_secs(30), || {
        // (Two hosts: the same endpoint twice is refused as a duplicate.)
        let name = "tcp-listen://127.0.0.1:0,tcp-listen://127.0.0.9:0";
        let config = Config {
            max_senders: 2,
            ..Config::default()
        };
        let mut source = Source::start(name, config).unwrap();
        assert!(matches!(
            source.wait_open(Duration::from_secs(5)),
            Opening::Open(1)
        ));
        let ports: Vec<SocketAddr> = source.listening().to_vec();
        assert_eq!(ports.len(), 2, "{ports:?}");
        let header = stream(Format::LeMicro, &[]).header;
        let mut conns = Vec::new();
        for (i, from) in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
            .iter()
            .enumerate()
        {
            let to = ports[i % 2];
            let mut c = connect_from(from, to);
            c.write_all(&header).unwrap();
            thread::sleep(Duration::from_millis(100));
            conns.push(c);
        }
        thread::sleep(Duration::from_millis(300));
        let total = source.counters();
        assert_eq!(
            (total.connects, total.open),
            (2, 2),
            "{:?}",
            source.senders()
        );
        for c in &mut conns[2..] {
            assert_closed_by_peer(c, "a third and fourth sender over two endpoints");
        }
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn a_storm_of_connections_writes_a_bounded_number_of_lines() {
    within(Duration::from_secs(60), || {
        let (mut source, name, addr) = listening("tcp-listen", Config::default());
        let mut log = Log::default();
        let started = Instant::now();
        // Each connects and closes at once: each is one line's worth.
        for i in 0..2000 {
            drop(connect_from("127.0.0.3", addr));
            if i % 100 == 0 {
                log.update(&source);
            }
        }
        let storm = started.elapsed();
        println!("2000 connections in {storm:?}");
        // A real sender's lines are limited apart from those.
        let good = stream(Format::LeMicro, &from_base(3, 5, 0));
        let mut g = connect_from("127.0.0.2", addr);
        g.write_all(&good.header).unwrap();
        g.write_all(&good.body).unwrap();
        drop(g);
        collect(&mut source, 5, Duration::from_secs(5));
        log.wait_for(
            &source,
            Level::Info,
            &["sender 127.0.0.2:", "left after 5 packets"],
            Duration::from_secs(5),
        );
        // The first window's lines, then its summary.
        let summary = log.wait_for(
            &source,
            Level::Warn,
            &["more lines about connections that were not admitted were left out"],
            Duration::from_secs(15),
        );
        let window = started.elapsed();
        assert!(summary.starts_with(&format!("{name}: ")), "{summary}");
        let about_senders = log
            .seen
            .iter()
            .filter(|(_, m)| m.contains(": sender 127.0.0.3:"))
            .count();
        // 20 per 10 s window: one window unless the machine was slow.
        let windows = 1 + storm.as_secs() / 10;
        assert!(
            about_senders as u64 <= 20 * windows,
            "{about_senders} lines about single connections within {window:?}"
        );
        assert!(
            source.senders().iter().all(|(a, _)| a == "127.0.0.2"),
            "{:?}",
            source.senders()
        );
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn a_scan_of_many_addresses_takes_no_entry_and_a_sender_keeps_its_own() {
    within(Duration::from_secs(30), || {
        let (mut source, _name, addr) = listening("tcp-listen", Config::default());
        for i in 0..1100u32 {
            let from: &'static str =
                Box::leak(format!("127.1.{}.{}", i / 250, 1 + i % 250).into_boxed_str());
            drop(connect_from(from, addr));
        }
        let good = stream(Format::LeMicro, &from_base(4, 5, 0));
        let mut g = connect_from("127.0.0.2", addr);
        g.write_all(&good.header).unwrap();
        g.write_all(&good.body).unwrap();
        collect(&mut source, 5, Duration::from_secs(5));
        let senders = source.senders();
        assert_eq!(
            senders.len(),
            1,
            "{} entries, the first {:?}",
            senders.len(),
            senders.first()
        );
        assert_eq!(senders[0].0, "127.0.0.2");
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn backpressure_grows_while_a_sender_is_blocked() {
    within(Duration::from_secs(30), || {
        let config = Config {
            buffer_size: 256 * 1024,
            ..Config::default()
        };
        let (mut source, _name, addr) = listening("tcp-listen", config);
        let flood = stream(Format::LeMicro, &from_base(5, 20_000, 0));
        let mut c = connect_from("127.0.0.2", addr);
        c.write_all(&flood.header).unwrap();
        let writer = thread::spawn(move || {
            let _ = c.write_all(&flood.body);
            c
        });
        // Nobody takes packets: the sender blocks once its share is full.
        let mut last = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            thread::sleep(Duration::from_millis(200));
            let bytes = source.counters().bytes;
            if bytes > 0 && bytes == last {
                break;
            }
            last = bytes;
            assert!(Instant::now() < deadline, "the sender never blocked");
        }
        let before = sender(&source, "127.0.0.2").backpressure;
        thread::sleep(Duration::from_millis(600));
        let during = sender(&source, "127.0.0.2").backpressure;
        assert!(
            during >= before + Duration::from_millis(500),
            "backpressure went from {before:?} to {during:?} in 600 ms of waiting"
        );
        let got = collect(&mut source, 20_000, Duration::from_secs(10));
        assert_eq!(got.len(), 20_000);
        let after = sender(&source, "127.0.0.2").backpressure;
        assert!(after >= during, "{after:?} < {during:?}");
        drop(writer.join().unwrap());
        common::closes_promptly(&mut source, "open");
    })
}
