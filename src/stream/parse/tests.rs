use std::borrow::Cow;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use super::*;

/// (ts_sec, ts_usec, wirelen, data, dlt) of every packet, parsed in one go.
type Pkt = (i64, u32, u32, Vec<u8>, i32);

fn parse_all(stream: &[u8]) -> Result<(Vec<Pkt>, usize), StreamError> {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    let used = p.parse(stream, &mut out)?;
    Ok((collect(stream, &out), used))
}

fn collect(stream: &[u8], records: &[Record]) -> Vec<Pkt> {
    records
        .iter()
        .map(|r| {
            let data = stream[r.offset..r.offset + r.caplen as usize].to_vec();
            (r.ts_sec, r.ts_usec(), r.wirelen, data, r.dlt)
        })
        .collect()
}

/// Feeds `stream` in pieces whose lengths come from `cuts`, as a reader
/// would: unconsumed bytes are kept and extended by the next piece. After
/// every piece, the link type is unknown until the stream's header (its
/// first `header_len` bytes) has been consumed whole, and `link_type` from
/// then on: never a placeholder such as -1.
fn parse_in_pieces_checked(
    stream: &[u8],
    cuts: impl IntoIterator<Item = usize>,
    header_len: usize,
    link_type: i32,
) -> Vec<Pkt> {
    let mut p = StreamParser::new(Limits::default());
    let mut pending: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    let mut pos = 0;
    let mut consumed = 0;
    let mut cuts = cuts.into_iter();
    while pos < stream.len() {
        let n = cuts
            .next()
            .unwrap_or(stream.len())
            .clamp(1, stream.len() - pos);
        pending.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        let mut out = Vec::new();
        let used = p.parse(&pending, &mut out).expect("valid stream");
        consumed += used;
        let want = (consumed >= header_len).then_some(link_type);
        assert_eq!(
            p.link_type(),
            want,
            "after {pos} bytes, {consumed} consumed"
        );
        got.extend(collect(&pending, &out));
        pending.drain(..used);
    }
    assert!(pending.is_empty(), "{} bytes left unparsed", pending.len());
    got
}

/// `parse_in_pieces_checked` for the pcap streams of these tests (24-byte
/// header, Ethernet).
fn parse_in_pieces(stream: &[u8], cuts: impl IntoIterator<Item = usize>) -> Vec<Pkt> {
    parse_in_pieces_checked(stream, cuts, 24, 1)
}

/// The length of the pcapng blocks before the first packet block of
/// `stream` with its first IDB: the SHB plus that IDB.
fn pcapng_header_len(stream: &[u8], big: bool) -> usize {
    let len_at = |at: usize| {
        let b: [u8; 4] = stream[at + 4..at + 8].try_into().unwrap();
        (if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }) as usize
    };
    let shb = len_at(0);
    shb + len_at(shb)
}

fn packets() -> Vec<(Duration, Vec<u8>)> {
    vec![
        (Duration::new(1_600_000_000, 123_456_789), vec![0xaa; 60]),
        (
            Duration::new(1_600_000_001, 999_999_999),
            (0..=255).collect(),
        ),
        (Duration::new(1_600_000_002, 0), vec![1, 2, 3]),
    ]
}

fn pcap_stream(endianness: Endianness, ts_resolution: TsResolution, datalink: DataLink) -> Vec<u8> {
    let header = PcapHeader {
        endianness,
        ts_resolution,
        datalink,
        snaplen: 65535,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (ts, data) in packets() {
        w.write_packet(&PcapPacket::new(ts, data.len() as u32 + 4, &data))
            .unwrap();
    }
    w.into_writer()
}

fn expected_usec(ts: Duration, resolution: TsResolution) -> u32 {
    match resolution {
        // A microsecond file holds the truncated microseconds already.
        TsResolution::MicroSecond | TsResolution::NanoSecond => ts.subsec_micros(),
    }
}

#[test]
fn pcap_every_magic_and_byte_order() {
    for endianness in [Endianness::Little, Endianness::Big] {
        for res in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            let stream = pcap_stream(endianness, res, DataLink::ETHERNET);
            let (got, used) = parse_all(&stream).unwrap();
            assert_eq!(used, stream.len());
            let want: Vec<Pkt> = packets()
                .into_iter()
                .map(|(ts, d)| {
                    (
                        ts.as_secs() as i64,
                        expected_usec(ts, res),
                        d.len() as u32 + 4,
                        d,
                        1,
                    )
                })
                .collect();
            assert_eq!(got, want, "{endianness:?} {res:?}");
        }
    }
}

#[test]
fn pcap_split_at_every_byte_offset() {
    for endianness in [Endianness::Little, Endianness::Big] {
        for res in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            let stream = pcap_stream(endianness, res, DataLink::ETHERNET);
            let (whole, _) = parse_all(&stream).unwrap();
            for cut in 1..stream.len() {
                assert_eq!(parse_in_pieces(&stream, [cut]), whole, "cut at {cut}");
            }
            // And one byte at a time.
            assert_eq!(parse_in_pieces(&stream, std::iter::repeat(1)), whole);
        }
    }
}

#[test]
fn pcap_raw_ip_link_type_is_mapped() {
    let stream = pcap_stream(Endianness::Little, TsResolution::MicroSecond, DataLink::RAW);
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    p.parse(&stream, &mut out).unwrap();
    assert_eq!(p.link_type(), Some(12));
    assert!(out.iter().all(|r| r.dlt == 12));
}

#[test]
fn pcap_records_beyond_the_snaplen_are_cut_to_it() {
    let mut stream = pcap_stream(
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
    );
    stream[16..20].copy_from_slice(&10u32.to_le_bytes()); // snaplen 10
    let (got, used) = parse_all(&stream).unwrap();
    assert_eq!(used, stream.len());
    assert_eq!(got[1].3, (0..10).collect::<Vec<u8>>());
    assert_eq!(got[1].2, 260, "the wire length is kept");
    assert_eq!(got[2].3, vec![1, 2, 3]);
}

fn idb(linktype: DataLink, options: Vec<InterfaceDescriptionOption<'static>>) -> Block<'static> {
    Block::InterfaceDescription(InterfaceDescriptionBlock {
        linktype,
        snaplen: 0,
        options,
    })
}

fn epb(interface_id: u32, raw_ts: u64, data: &[u8]) -> Block<'_> {
    Block::EnhancedPacket(EnhancedPacketBlock {
        interface_id,
        timestamp: Duration::from_nanos(raw_ts),
        original_len: data.len() as u32,
        data: Cow::Borrowed(data),
        options: vec![],
    })
}

fn pcapng_stream(endianness: Endianness) -> Vec<u8> {
    let shb = SectionHeaderBlock {
        endianness,
        ..Default::default()
    };
    let mut w = PcapNgWriter::with_section_header(Vec::new(), shb).unwrap();
    // Interface 0: default microseconds, Ethernet.
    w.write_block(&idb(DataLink::ETHERNET, vec![])).unwrap();
    // Interface 1: nanoseconds, raw IP, one hour of offset.
    w.write_block(&idb(
        DataLink::RAW,
        vec![
            InterfaceDescriptionOption::IfTsResol(9),
            InterfaceDescriptionOption::IfTsOffset(3600),
        ],
    ))
    .unwrap();
    // Interface 2: 2^-20 s units, Linux SLL.
    w.write_block(&idb(
        DataLink::LINUX_SLL,
        vec![InterfaceDescriptionOption::IfTsResol(0x80 | 20)],
    ))
    .unwrap();
    let data: Vec<u8> = (0..61).collect();
    w.write_block(&epb(0, 1_600_000_000_123_456, &data))
        .unwrap();
    w.write_block(&epb(1, 1_600_000_000_123_456_789, &data[..7]))
        .unwrap();
    w.write_block(&epb(2, (5u64 << 20) | (1 << 19), &data[..1]))
        .unwrap();
    w.write_block(&Block::SimplePacket(SimplePacketBlock {
        original_len: 5,
        data: Cow::Borrowed(&data[..5]),
    }))
    .unwrap();
    w.into_inner()
}

fn pcapng_expected() -> Vec<Pkt> {
    let data: Vec<u8> = (0..61).collect();
    vec![
        (1_600_000_000, 123_456, 61, data.clone(), 1),
        (1_600_000_000 + 3600, 123_456, 7, data[..7].to_vec(), 12),
        (5, 500_000, 1, data[..1].to_vec(), 113),
        (0, 0, 5, data[..5].to_vec(), 1),
    ]
}

#[test]
fn pcapng_both_byte_orders_with_per_interface_link_type_and_resolution() {
    for endianness in [Endianness::Little, Endianness::Big] {
        let stream = pcapng_stream(endianness);
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        assert_eq!(p.parse(&stream, &mut out).unwrap(), stream.len());
        assert_eq!(p.link_type(), Some(1), "the first interface's");
        assert_eq!(collect(&stream, &out), pcapng_expected(), "{endianness:?}");
    }
}

#[test]
fn pcapng_split_at_every_byte_offset() {
    for endianness in [Endianness::Little, Endianness::Big] {
        let stream = pcapng_stream(endianness);
        let header = pcapng_header_len(&stream, endianness == Endianness::Big);
        for cut in 1..stream.len() {
            assert_eq!(
                parse_in_pieces_checked(&stream, [cut], header, 1),
                pcapng_expected(),
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse_in_pieces_checked(&stream, std::iter::repeat(1), header, 1),
            pcapng_expected()
        );
    }
}

#[test]
fn pcapng_new_section_resets_interfaces_and_may_change_byte_order() {
    let mut stream = pcapng_stream(Endianness::Little);
    stream.extend(pcapng_stream(Endianness::Big));
    let (got, used) = parse_all(&stream).unwrap();
    assert_eq!(used, stream.len());
    let mut want = pcapng_expected();
    want.extend(pcapng_expected());
    assert_eq!(got, want);
}

#[test]
fn not_a_pcap_stream_shows_the_first_bytes() {
    let err = parse_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").unwrap_err();
    assert_eq!(err, StreamError::NotPcap("SSH-2.0-OpenSSH_".into()));
    let err = parse_all(b"HTTP/1.1 400 Bad Request\r\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("not a pcap or pcapng stream (first bytes: \"HTTP/1.1 400 Bad"),
        "{err}"
    );
    let err = parse_all(&[0x00, 0xff, 0x10]).unwrap_err();
    assert_eq!(err, StreamError::NotPcap("\\x00\\xff\\x10".into()));
    // A prefix of a valid magic waits for more.
    assert_eq!(parse_all(&[0xd4, 0xc3]).unwrap().1, 0);
}

#[test]
fn a_huge_caplen_is_an_error_before_its_bytes_arrive() {
    let mut stream = pcap_stream(
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
    );
    stream.truncate(24 + 16);
    stream[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        parse_all(&stream).unwrap_err(),
        StreamError::CaplenTooLarge {
            caplen: u32::MAX,
            limit: 262_144
        }
    );
}

#[test]
fn unsupported_pcap_version() {
    let mut stream = pcap_stream(
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
    );
    stream[4..6].copy_from_slice(&3u16.to_le_bytes());
    assert!(matches!(
        parse_all(&stream).unwrap_err(),
        StreamError::UnsupportedPcapVersion { major: 3, .. }
    ));
}

#[test]
fn pcapng_bad_block_lengths() {
    let good = pcapng_stream(Endianness::Little);
    let shb_len = u32::from_le_bytes(good[4..8].try_into().unwrap()) as usize;
    // The IDB after the SHB: length not a multiple of 4.
    let mut s = good.clone();
    s[shb_len + 4..shb_len + 8].copy_from_slice(&21u32.to_le_bytes());
    assert!(matches!(
        parse_all(&s).unwrap_err(),
        StreamError::BadPcapNg(_)
    ));
    // Length beyond the limit: an error at once, not a wait for 4 GiB.
    let mut s = good.clone();
    s.truncate(shb_len + 12);
    s[shb_len + 4..shb_len + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(matches!(
        parse_all(&s).unwrap_err(),
        StreamError::BlockTooLarge { .. }
    ));
    // A packet for an interface nobody declared: the first EPB follows the
    // SHB and three IDBs; point it at interface 7.
    let mut s = good.clone();
    let mut at = 0;
    for _ in 0..4 {
        at += u32::from_le_bytes(s[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    assert_eq!(
        u32::from_le_bytes(s[at..at + 4].try_into().unwrap()),
        6,
        "an EPB"
    );
    s[at + 8..at + 12].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(parse_all(&s).unwrap_err(), StreamError::UnknownInterface(7));
}

#[test]
fn printable_escapes() {
    assert_eq!(printable(b"a\"b\\c\n\x7f"), "a\\\"b\\\\c\\n\\x7f");
}

#[test]
fn snaplen_zero_means_the_maximum_and_caplen_zero_is_a_packet() {
    // As libpcap reads them: snaplen 0 is "no limit"; a caplen-0 record is
    // delivered (Zeek's shim reports it as the weird empty_pcap_header).
    let mut stream = pcap_stream(
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
    );
    stream[16..20].copy_from_slice(&0u32.to_le_bytes());
    stream.extend_from_slice(&1_600_000_003u32.to_le_bytes());
    stream.extend_from_slice(&[0; 4]);
    stream.extend_from_slice(&[0; 4]); // caplen 0
    stream.extend_from_slice(&60u32.to_le_bytes());
    let (got, used) = parse_all(&stream).unwrap();
    assert_eq!(used, stream.len());
    assert_eq!(got.len(), 4);
    assert_eq!(got[1].3.len(), 256, "not cut");
    assert_eq!(got[3], (1_600_000_003, 0, 60, vec![], 1));
}

#[test]
fn pcap_header_in_pieces_reports_no_link_type_until_whole() {
    // Raw IP (LINKTYPE 101 -> DLT_RAW 12) in pieces of 7 bytes, as a sender
    // writing small chunks delivers it; and 10 + 14 bytes of header.
    for res in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
        let stream = pcap_stream(Endianness::Big, res, DataLink::RAW);
        let whole = parse_in_pieces_checked(&stream, [stream.len()], 24, 12);
        assert!(whole.iter().all(|p| p.4 == 12), "every packet's DLT");
        assert_eq!(
            parse_in_pieces_checked(&stream, std::iter::repeat(7), 24, 12),
            whole
        );
        assert_eq!(parse_in_pieces_checked(&stream, [10, 14], 24, 12), whole);
    }
}

/// SHB + Ethernet IDB + `blocks` (raw little-endian block bytes).
fn pcapng_with(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_block(&idb(DataLink::ETHERNET, vec![])).unwrap();
    let mut s = w.into_inner();
    for b in blocks {
        s.extend_from_slice(b);
    }
    s
}

/// A little-endian block of `block_type` whose total length is `len`,
/// filled with `fill`.
fn raw_block(block_type: u32, len: u32, fill: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&block_type.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.resize(len as usize - 4, fill);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// The bytes of one EPB for interface 0.
fn epb_bytes(data: &[u8]) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_block(&idb(DataLink::ETHERNET, vec![])).unwrap();
    let header = w.get_ref().len();
    w.write_block(&epb(0, 1_600_000_000_000_000, data)).unwrap();
    w.into_inner().split_off(header)
}

#[test]
fn a_12_byte_simple_packet_block_is_corrupt_and_counts_no_packet() {
    let data: Vec<u8> = (0..40).collect();
    let stream = pcapng_with(&[
        epb_bytes(&data),
        raw_block(3, 12, 0),
        epb_bytes(&data[..20]),
    ]);
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    let e = p.parse(&stream, &mut out).unwrap_err();
    assert_eq!(
        e,
        StreamError::BlockTooShort {
            block_type: 3,
            len: 12,
            min: 16
        }
    );
    // The packet before the bad block is kept; nothing is made up.
    assert_eq!(collect(&stream, &out).len(), 1);
    assert_eq!(collect(&stream, &out)[0].3, data);
}

#[test]
fn every_block_type_shorter_than_its_fixed_part_is_rejected() {
    // (type, fixed length): SHB needs its own stream start, the rest follow
    // an SHB and an IDB.
    for (block_type, min) in [
        (1u32, 20u32),
        (2, 32),
        (3, 16),
        (4, 16),
        (5, 24),
        (6, 32),
        (0xA, 20),
        (0xBAD, 16),
        (0x4000_0BAD, 16),
    ] {
        for len in (12..min).step_by(4) {
            let stream = pcapng_with(&[raw_block(block_type, len, 0)]);
            let e = parse_all(&stream).unwrap_err();
            assert_eq!(
                e,
                StreamError::BlockTooShort {
                    block_type,
                    len,
                    min
                },
                "type {block_type:#x} of {len} bytes"
            );
        }
    }
    let mut shb = raw_block(0x0A0D_0D0A, 24, 0);
    shb[8..12].copy_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    assert!(matches!(
        parse_all(&shb).unwrap_err(),
        StreamError::BlockTooShort { min: 28, .. }
    ));
    // Unknown block types need only the common header and trailer.
    let stream = pcapng_with(&[raw_block(0x7777, 12, 0), epb_bytes(b"abcd")]);
    assert_eq!(parse_all(&stream).unwrap().0.len(), 1);
}

#[test]
fn interface_blocks_per_section_are_capped() {
    let mut stream = pcapng_with(&[]);
    let shb_len = u32::from_le_bytes(stream[4..8].try_into().unwrap()) as usize;
    let one_idb = stream[shb_len..].to_vec();
    for _ in 1..pcapng::MAX_INTERFACES {
        stream.extend_from_slice(&one_idb);
    }
    assert!(parse_all(&stream).is_ok());
    stream.extend_from_slice(&one_idb);
    assert_eq!(
        parse_all(&stream).unwrap_err(),
        StreamError::TooManyInterfaces(pcapng::MAX_INTERFACES)
    );
}

#[test]
fn records_keep_nanoseconds_and_their_interface() {
    // pcapng: interface 1 counts nanoseconds, interface 2 in 2^-20 s (its
    // packet is at 2^19 units: half a second).
    for endianness in [Endianness::Little, Endianness::Big] {
        let stream = pcapng_stream(endianness);
        let mut out = Vec::new();
        StreamParser::new(Limits::default())
            .parse(&stream, &mut out)
            .unwrap();
        let got: Vec<(u32, u32)> = out.iter().map(|r| (r.ts_nsec, r.interface)).collect();
        let want = vec![(123_456_000, 0), (123_456_789, 1), (500_000_000, 2), (0, 0)];
        assert_eq!(got, want, "{endianness:?}");
    }
    // pcap: a nanosecond file keeps its nanoseconds; Zeek gets microseconds.
    for endianness in [Endianness::Little, Endianness::Big] {
        let stream = pcap_stream(endianness, TsResolution::NanoSecond, DataLink::ETHERNET);
        let mut out = Vec::new();
        StreamParser::new(Limits::default())
            .parse(&stream, &mut out)
            .unwrap();
        let want: Vec<(u32, u32)> = packets()
            .iter()
            .map(|(ts, _)| (ts.subsec_nanos(), ts.subsec_micros()))
            .collect();
        let got: Vec<(u32, u32)> = out.iter().map(|r| (r.ts_nsec, r.ts_usec())).collect();
        assert_eq!(got, want, "{endianness:?}");
        assert!(out.iter().all(|r| r.interface == 0));
    }
}

/// A little-endian pcap stream with one record whose header fields are
/// given raw: the writer would refuse a fraction of a second or more.
fn pcap_raw_record(magic: [u8; 4], ts_sec: u32, ts_frac: u32) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&magic);
    for v in [2u16, 4] {
        s.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0u32, 0, 65535, 1] {
        s.extend_from_slice(&v.to_le_bytes());
    }
    for v in [ts_sec, ts_frac, 1, 1] {
        s.extend_from_slice(&v.to_le_bytes());
    }
    s.push(0xab);
    s
}

#[test]
fn a_fraction_of_a_second_or_more_is_carried_into_the_seconds() {
    // µs: 1,500,000 is 1.5 s. It used to stay in the fraction as 1.5 s of
    // "nanoseconds", sorting before the next second's packets.
    let us = pcap_raw_record([0xd4, 0xc3, 0xb2, 0xa1], 100, 1_500_000);
    let mut out = Vec::new();
    StreamParser::new(Limits::default())
        .parse(&us, &mut out)
        .unwrap();
    assert_eq!((out[0].ts_sec, out[0].ts_nsec), (101, 500_000_000));
    // ns: u32::MAX ns is 4.294967295 s.
    let ns = pcap_raw_record([0x4d, 0x3c, 0xb2, 0xa1], u32::MAX, u32::MAX);
    out.clear();
    StreamParser::new(Limits::default())
        .parse(&ns, &mut out)
        .unwrap();
    assert_eq!(
        (out[0].ts_sec, out[0].ts_nsec),
        (i64::from(u32::MAX) + 4, 294_967_295)
    );
    assert!(out.iter().all(|r| r.ts_usec() < 1_000_000));
}

/// SHB + one IDB with these options + one EPB at `raw_ts`.
fn pcapng_one_packet(options: Vec<InterfaceDescriptionOption<'static>>, raw_ts: u64) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_block(&idb(DataLink::ETHERNET, options)).unwrap();
    w.write_block(&epb(0, raw_ts, &[1, 2, 3])).unwrap();
    w.into_inner()
}

#[test]
fn pcapng_times_saturate_instead_of_wrapping() {
    let parsed = |stream: Vec<u8>| {
        let mut out = Vec::new();
        StreamParser::new(Limits::default())
            .parse(&stream, &mut out)
            .unwrap();
        (out[0].ts_sec, out[0].ts_nsec)
    };
    // 2^64-1 at a resolution of 1 s: it wrapped to -1 (1969).
    let whole_seconds = InterfaceDescriptionOption::IfTsResol(0);
    assert_eq!(
        parsed(pcapng_one_packet(vec![whole_seconds.clone()], u64::MAX)),
        (i64::MAX, 0)
    );
    // if_tsoffset at either end of its range saturates too.
    let far = InterfaceDescriptionOption::IfTsOffset(i64::MAX as u64);
    assert_eq!(
        parsed(pcapng_one_packet(vec![far], 1_000_000)),
        (i64::MAX, 0)
    );
    let before = InterfaceDescriptionOption::IfTsOffset(i64::MIN as u64);
    assert_eq!(
        parsed(pcapng_one_packet(vec![before], 1_500_000)),
        (i64::MIN + 1, 500_000_000)
    );
}

/// The resident set of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn fat_interface_blocks_cost_no_memory_beyond_the_read() {
    // 300 interface blocks of 256 KiB of options each (a comment): 75 MiB
    // that the pcap-file framing kept whole for the section's life.
    let comment = "x".repeat(65_000);
    let fat: Vec<InterfaceDescriptionOption<'static>> = (0..4)
        .map(|_| InterfaceDescriptionOption::Comment(Cow::Owned(comment.clone())))
        .collect();
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_block(&idb(DataLink::ETHERNET, fat)).unwrap();
    let bytes = w.into_inner();
    let shb_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let (shb, one) = bytes.split_at(shb_len);
    let mut parser = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(parser.parse(shb, &mut out), Ok(shb.len()));
    let before = rss_kib();
    for _ in 0..300 {
        assert_eq!(parser.parse(one, &mut out), Ok(one.len()));
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "300 fat interface blocks grew RSS by {grown} KiB"
    );
    assert_eq!(parser.link_type(), Some(1));
}

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};

fn epb_dropping(interface_id: u32, data: &[u8], dropcount: u64) -> Block<'_> {
    Block::EnhancedPacket(EnhancedPacketBlock {
        interface_id,
        timestamp: Duration::from_secs(1_600_000_000),
        original_len: data.len() as u32,
        data: Cow::Borrowed(data),
        options: vec![EnhancedPacketOption::DropCount(dropcount)],
    })
}

fn isb(interface_id: u32, ifdrop: u64, osdrop: u64) -> Block<'static> {
    Block::InterfaceStatistics(InterfaceStatisticsBlock {
        interface_id,
        timestamp: 1_600_000_000_000_000,
        options: vec![
            InterfaceStatisticsOption::IsbIfDrop(ifdrop),
            InterfaceStatisticsOption::IsbOsDrop(osdrop),
        ],
    })
}

/// The bytes of a little-endian ISB for `interface` reporting `ifdrop`.
fn isb_bytes(interface: u32, ifdrop: u64) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    for _ in 0..=interface {
        w.write_block(&idb(DataLink::ETHERNET, vec![])).unwrap();
    }
    let header = w.get_ref().len();
    w.write_block(&isb(interface, ifdrop, 0)).unwrap();
    w.into_inner().split_off(header)
}

/// A section of two Ethernet interfaces and `blocks`, in `endianness`.
fn pcapng_section(endianness: Endianness, blocks: &[Block]) -> Vec<u8> {
    let shb = SectionHeaderBlock {
        endianness,
        ..Default::default()
    };
    let mut w = PcapNgWriter::with_section_header(Vec::new(), shb).unwrap();
    w.write_block(&idb(DataLink::ETHERNET, vec![])).unwrap();
    w.write_block(&idb(DataLink::ETHERNET, vec![])).unwrap();
    for b in blocks {
        w.write_block(b).unwrap();
    }
    w.into_inner()
}

/// Parses `stream` a byte at a time (every block arrives in pieces) and
/// returns the packets and the drops taken after each consumed unit.
fn drops_in_pieces(stream: &[u8]) -> (usize, Vec<u64>) {
    let mut p = StreamParser::new(Limits::default());
    let mut pending = Vec::new();
    let mut packets = 0;
    let mut taken = Vec::new();
    for b in stream {
        pending.push(*b);
        let mut out = Vec::new();
        let used = p.parse(&pending, &mut out).expect("valid stream");
        packets += out.len();
        pending.drain(..used);
        if used > 0 {
            taken.push(p.take_new_drops());
        }
    }
    assert!(pending.is_empty());
    (packets, taken.into_iter().filter(|&d| d > 0).collect())
}

#[test]
fn epb_drop_counts_are_summed_per_interface_in_either_byte_order() {
    let data = [0u8; 60];
    for endianness in [Endianness::Little, Endianness::Big] {
        let stream = pcapng_section(
            endianness,
            &[
                epb_dropping(0, &data, 3),
                epb_dropping(1, &data, 10),
                epb(0, 1_600_000_000_000_000, &data),
                epb_dropping(0, &data, 4),
            ],
        );
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        assert_eq!(p.parse(&stream, &mut out).unwrap(), stream.len());
        assert_eq!(out.len(), 4, "{endianness:?}");
        assert_eq!(p.take_new_drops(), 17, "{endianness:?}");
        assert_eq!(p.take_new_drops(), 0, "taken once");
        let by_iface: Vec<(u32, u64, u64)> = p
            .drops_by_interface()
            .iter()
            .map(|(i, d)| (*i, d.epb, d.isb))
            .collect();
        assert_eq!(by_iface, [(0, 7, 0), (1, 10, 0)], "{endianness:?}");
        // Byte at a time: the same drops, each when its block is whole.
        assert_eq!(drops_in_pieces(&stream), (4, vec![3, 10, 4]));
    }
}

#[test]
fn isb_drops_are_cumulative_and_never_add_to_the_epb_counts_of_the_same_loss() {
    let data = [0u8; 60];
    let stream = pcapng_section(
        Endianness::Little,
        &[
            // Interface 0: 5 + 2 dropped so far.
            isb(0, 5, 2),
            // An EPB reporting 3 of those same drops adds nothing.
            epb_dropping(0, &data, 3),
            // The interface's counters grew by 15.
            isb(0, 20, 2),
            // Counters never go down: a smaller ISB adds nothing.
            isb(0, 1, 0),
            // EPB counts beyond the ISB's figure count: 3 + 25 = 28 > 22.
            epb_dropping(0, &data, 25),
            // Interface 1 on its own.
            isb(1, 0, 9),
        ],
    );
    // No IDB declared interface 7: ignored, not an error.
    let mut stream = stream;
    stream.extend(isb_bytes(7, 1000));
    let (packets, taken) = drops_in_pieces(&stream);
    assert_eq!(packets, 2);
    assert_eq!(taken, [7, 15, 6, 9]);
    let mut p = StreamParser::new(Limits::default());
    p.parse(&stream, &mut Vec::new()).unwrap();
    let by_iface: Vec<(u32, u64, u64)> = p
        .drops_by_interface()
        .iter()
        .map(|(i, d)| (*i, d.epb, d.isb))
        .collect();
    assert_eq!(by_iface, [(0, 28, 22), (1, 0, 9)]);
    assert_eq!(p.take_new_drops(), 37);
}

#[test]
fn a_new_section_keeps_the_old_sections_drops_and_starts_counting_again() {
    let data = [0u8; 60];
    let mut stream = pcapng_section(Endianness::Little, &[isb(0, 10, 0)]);
    // The capture restarted: its counters start again from 0.
    stream.extend(pcapng_section(
        Endianness::Big,
        &[isb(0, 4, 0), epb_dropping(0, &data, 1)],
    ));
    let mut p = StreamParser::new(Limits::default());
    p.parse(&stream, &mut Vec::new()).unwrap();
    assert_eq!(p.take_new_drops(), 14);
}

/// An EPB for interface 0 with 60 bytes of data and `options` as raw
/// little-endian bytes after it.
fn epb_with_raw_options(options: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for v in [0u32, 0, 0, 60, 60] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&[0u8; 60]);
    body.extend_from_slice(options);
    let len = (8 + body.len() + 4) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn option(code: u16, value: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(&code.to_le_bytes());
    o.extend_from_slice(&(value.len() as u16).to_le_bytes());
    o.extend_from_slice(value);
    o.resize(4 + value.len().div_ceil(4) * 4, 0);
    o
}

#[test]
fn malformed_drop_options_are_ignored_and_the_packet_is_kept() {
    let cases: [(Vec<u8>, u64); 5] = [
        // A well-formed one, for contrast.
        (option(4, &6u64.to_le_bytes()), 6),
        // Four bytes where eight belong.
        (option(4, &6u32.to_le_bytes()), 0),
        // A length running past the block (and past any allocation).
        ([4u8, 0, 0xff, 0xff, 1, 0, 0, 0].to_vec(), 0),
        // opt_endofopt ends the options: what follows is not read.
        ([option(0, &[]), option(4, &6u64.to_le_bytes())].concat(), 0),
        // Another option before it is skipped by its padded length.
        (
            [option(1, b"abcde"), option(4, &6u64.to_le_bytes())].concat(),
            6,
        ),
    ];
    for (options, want) in cases {
        let stream = pcapng_with(&[epb_with_raw_options(&options)]);
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        assert_eq!(p.parse(&stream, &mut out).unwrap(), stream.len());
        assert_eq!(out.len(), 1, "{options:?}");
        assert_eq!(out[0].caplen, 60);
        assert_eq!(p.take_new_drops(), want, "{options:?}");
    }
}
