//! Classic pcap: a 24-byte global header, then 16-byte record headers each
//! followed by its data. Header and records are decoded by `pcap-file`; the
//! checks that keep a corrupt length from stalling the stream are ours.

use pcap_file::pcap::{PcapHeader, PcapParser};
use pcap_file::{PcapError, TsResolution};

use super::{frac_to_nsec, Limits, Record, Step, StreamError};
use crate::linktype::{linktype_to_dlt, strip_extension_bits};

const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

#[derive(Debug)]
pub(super) struct PcapFormat {
    limits: Limits,
    state: State,
}

#[derive(Debug)]
enum State {
    AwaitingHeader,
    Records {
        parser: PcapParser,
        dlt: i32,
        /// Records longer than this are cut to it, as libpcap does.
        snapshot: u32,
        resolution: u64,
    },
}

impl PcapFormat {
    pub(super) fn new(limits: Limits) -> Self {
        PcapFormat {
            limits,
            state: State::AwaitingHeader,
        }
    }

    /// The stream's DLT_ value, once the whole global header has arrived.
    pub(super) fn dlt(&self) -> Option<i32> {
        match &self.state {
            State::AwaitingHeader => None,
            State::Records { dlt, .. } => Some(*dlt),
        }
    }

    pub(super) fn step(&mut self, buf: &[u8]) -> Result<Step, StreamError> {
        match &self.state {
            State::AwaitingHeader => self.header(buf),
            State::Records {
                parser,
                dlt,
                snapshot,
                resolution,
            } => record(parser, buf, self.limits, *dlt, *snapshot, *resolution),
        }
    }

    fn header(&mut self, buf: &[u8]) -> Result<Step, StreamError> {
        if buf.len() < GLOBAL_HEADER_LEN {
            return Ok(Step::NeedMore);
        }
        let parser = match PcapParser::new(buf) {
            Ok((_, parser)) => parser,
            Err(PcapError::IncompleteBuffer) => return Ok(Step::NeedMore),
            Err(_) => return Err(StreamError::NotPcap(super::printable(buf))),
        };
        let PcapHeader {
            version_major,
            version_minor,
            snaplen,
            datalink,
            ts_resolution,
            ..
        } = parser.header();
        if version_major != 2 {
            return Err(StreamError::UnsupportedPcapVersion {
                major: version_major,
                minor: version_minor,
            });
        }
        // As libpcap: a snaplen of 0 or beyond the maximum means "the maximum".
        let snapshot = if snaplen == 0 || snaplen > self.limits.max_caplen {
            self.limits.max_caplen
        } else {
            snaplen
        };
        let dlt = linktype_to_dlt(strip_extension_bits(u32::from(datalink)));
        let resolution = match ts_resolution {
            TsResolution::MicroSecond => 1_000_000,
            TsResolution::NanoSecond => 1_000_000_000,
        };
        self.state = State::Records {
            parser,
            dlt,
            snapshot,
            resolution,
        };
        Ok(Step::Skip(GLOBAL_HEADER_LEN))
    }
}

fn record(
    parser: &PcapParser,
    buf: &[u8],
    limits: Limits,
    dlt: i32,
    snapshot: u32,
    resolution: u64,
) -> Result<Step, StreamError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Ok(Step::NeedMore);
    }
    // Check the claimed length before waiting for that many bytes: a corrupt
    // length must end the stream, not stall it or grow a buffer.
    let caplen_bytes: [u8; 4] = [buf[8], buf[9], buf[10], buf[11]];
    let claimed = match parser.header().endianness {
        pcap_file::Endianness::Big => u32::from_be_bytes(caplen_bytes),
        pcap_file::Endianness::Little => u32::from_le_bytes(caplen_bytes),
    };
    if claimed > limits.max_caplen {
        return Err(StreamError::CaplenTooLarge {
            caplen: claimed,
            limit: limits.max_caplen,
        });
    }
    let raw = match parser.next_raw_packet(buf) {
        Ok((_, raw)) => raw,
        Err(_) => return Ok(Step::NeedMore),
    };
    // Timestamps in the fraction field that reach a full second are kept as
    // they are by libpcap too; only the unit is converted (a microsecond
    // fraction past 4.29 s saturates).
    let ts_nsec = match resolution {
        1_000_000_000 => raw.ts_frac,
        1_000_000 => raw.ts_frac.saturating_mul(1000),
        _ => frac_to_nsec(u64::from(raw.ts_frac), resolution),
    };
    Ok(Step::Packet(
        RECORD_HEADER_LEN + raw.incl_len as usize,
        Record {
            offset: RECORD_HEADER_LEN,
            caplen: raw.incl_len.min(snapshot),
            wirelen: raw.orig_len,
            ts_sec: i64::from(raw.ts_sec),
            ts_nsec,
            dlt,
            interface: 0,
        },
    ))
}
