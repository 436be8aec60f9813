//! Classic pcap: a 24-byte global header, then 16-byte record headers each
//! followed by its data. Decoded here, field by field: the parser keeps only
//! what the records need (byte order, resolution, link type, snap length).

use super::{normalize_ts, Limits, Record, Step, StreamError};
use crate::stream::linktype::{linktype_to_dlt, strip_extension_bits};

const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

#[derive(Debug)]
pub(super) struct PcapFormat {
    limits: Limits,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    AwaitingHeader,
    Records(Header),
}

/// What the records need of the global header.
#[derive(Debug, Clone, Copy)]
struct Header {
    big: bool,
    dlt: i32,
    /// Records longer than this are cut to it, as libpcap does.
    snapshot: u32,
    /// Timestamp fraction units per second.
    resolution: u64,
}

impl Header {
    fn u16_at(&self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }
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
            State::Records(h) => Some(h.dlt),
        }
    }

    pub(super) fn step(&mut self, buf: &[u8]) -> Result<Step, StreamError> {
        match self.state {
            State::AwaitingHeader => self.header(buf),
            State::Records(h) => record(&h, buf, self.limits),
        }
    }

    fn header(&mut self, buf: &[u8]) -> Result<Step, StreamError> {
        if buf.len() < GLOBAL_HEADER_LEN {
            return Ok(Step::NeedMore);
        }
        // `detect` accepted one of the four magics.
        let (big, resolution) = match [buf[0], buf[1], buf[2], buf[3]] {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, 1_000_000),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, 1_000_000),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, 1_000_000_000),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, 1_000_000_000),
            _ => return Err(StreamError::NotPcap(super::printable(buf))),
        };
        let mut h = Header {
            big,
            dlt: 0,
            snapshot: 0,
            resolution,
        };
        let (major, minor) = (h.u16_at(buf, 4), h.u16_at(buf, 6));
        if major != 2 {
            return Err(StreamError::UnsupportedPcapVersion { major, minor });
        }
        // thiszone (8) and sigfigs (12) are unused, as by libpcap.
        let snaplen = h.u32_at(buf, 16);
        // As libpcap: a snaplen of 0 or beyond the maximum means "the maximum".
        h.snapshot = if snaplen == 0 || snaplen > self.limits.max_caplen {
            self.limits.max_caplen
        } else {
            snaplen
        };
        h.dlt = linktype_to_dlt(strip_extension_bits(h.u32_at(buf, 20)));
        self.state = State::Records(h);
        Ok(Step::Skip(GLOBAL_HEADER_LEN))
    }
}

fn record(h: &Header, buf: &[u8], limits: Limits) -> Result<Step, StreamError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Ok(Step::NeedMore);
    }
    // Check the claimed length before waiting for that many bytes: a corrupt
    // length must end the stream, not stall it or grow a buffer.
    let incl_len = h.u32_at(buf, 8);
    if incl_len > limits.max_caplen {
        return Err(StreamError::CaplenTooLarge {
            caplen: incl_len,
            limit: limits.max_caplen,
        });
    }
    let len = RECORD_HEADER_LEN + incl_len as usize;
    if buf.len() < len {
        return Ok(Step::NeedMore);
    }
    let (ts_sec, ts_nsec) = normalize_ts(
        i64::from(h.u32_at(buf, 0)),
        u64::from(h.u32_at(buf, 4)),
        h.resolution,
    );
    Ok(Step::Packet(
        len,
        Record {
            offset: RECORD_HEADER_LEN,
            caplen: incl_len.min(h.snapshot),
            wirelen: h.u32_at(buf, 12),
            ts_sec,
            ts_nsec,
            dlt: h.dlt,
            interface: 0,
        },
    ))
}
