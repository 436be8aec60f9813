//! Incremental parsing of a PCAP-over-IP byte stream.
//!
//! The stream is a pcap or pcapng file, sent as it is written. Bytes arrive in
//! reads of any size, so a header or record may be split anywhere. The parser
//! is fed the unconsumed bytes, reports how many it consumed (only whole units)
//! and describes each packet by its position in those bytes: it never copies
//! packet data and never sizes an allocation from a length in the stream.

mod pcap;
mod pcapng;

pub use pcapng::Drops;

use std::fmt::Write as _;

/// Bounds that turn hostile or corrupt lengths into errors instead of waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest caplen accepted (`PcapOverTcp::max_caplen`).
    pub max_caplen: u32,
}

impl Limits {
    /// The largest pcapng block accepted: a maximal packet plus room for the
    /// block's fixed fields and options.
    pub fn max_block_len(&self) -> usize {
        self.max_caplen as usize + 64 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_caplen: 262_144,
        }
    }
}

/// One packet of the stream, located in the parsed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Offset of the packet data from the start of the slice given to `parse`.
    pub offset: usize,
    /// Bytes of packet data present (after truncation to the snap length).
    pub caplen: u32,
    /// Length of the packet on the wire.
    pub wirelen: u32,
    pub ts_sec: i64,
    /// Nanoseconds, 0..1_000_000_000 (finer input is truncated).
    pub ts_nsec: u32,
    /// DLT_ value of the interface the packet was captured on.
    pub dlt: i32,
    /// That interface's number in its stream (pcapng's interface id); 0
    /// in a pcap stream.
    pub interface: u32,
}

impl Record {
    /// Its packet's bytes in `parsed`, the bytes it was parsed from. The
    /// parser only describes bytes it consumed; `get` keeps a violation of
    /// that (or the wrong slice) from becoming a panic, in Zeek's process
    /// too: an empty packet instead.
    pub fn data<'a>(&self, parsed: &'a [u8]) -> &'a [u8] {
        parsed
            .get(self.offset..self.offset + self.caplen as usize)
            .unwrap_or_default()
    }

    /// Microseconds, truncated as libpcap does: what Zeek is given.
    pub fn ts_usec(&self) -> u32 {
        self.ts_nsec / 1000
    }
}

/// Why the stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("not a pcap or pcapng stream (first bytes: \"{0}\")")]
    NotPcap(String),
    #[error("unsupported pcap version {major}.{minor} (only 2.x is defined)")]
    UnsupportedPcapVersion { major: u16, minor: u16 },
    #[error("corrupt stream: a record claims {caplen} captured bytes, more than PcapOverTcp::max_caplen ({limit})")]
    CaplenTooLarge { caplen: u32, limit: u32 },
    #[error("corrupt stream: pcapng block of type {block_type:#x} claims {len} bytes, more than the limit of {limit}")]
    BlockTooLarge {
        block_type: u32,
        len: u64,
        limit: usize,
    },
    #[error("corrupt pcapng stream: {0}")]
    BadPcapNg(String),
    #[error("corrupt pcapng stream: a packet names interface {0}, which no interface description block declared")]
    UnknownInterface(u32),
    #[error("corrupt pcapng stream: block of type {block_type:#x} has length {len}, shorter than the {min} bytes of its fixed fields")]
    BlockTooShort { block_type: u32, len: u32, min: u32 },
    #[error("corrupt pcapng stream: more than {0} interface description blocks in one section")]
    TooManyInterfaces(usize),
}

/// What one step of a format parser found at the front of its input.
#[derive(Debug)]
enum Step {
    /// Not enough bytes for the next unit.
    NeedMore,
    /// A unit that carries no packet (a header, an interface description, ...).
    Skip(usize),
    /// A packet; `offset` in the record is relative to the unit's start.
    Packet(usize, Record),
}

#[derive(Debug)]
enum Format {
    Pcap(pcap::PcapFormat),
    PcapNg(pcapng::PcapNgFormat),
}

/// Parses one stream, from its first byte on.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    format: Option<Format>,
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

impl StreamParser {
    pub fn new(limits: Limits) -> Self {
        StreamParser {
            limits,
            format: None,
        }
    }

    /// The DLT_ value of the stream, once its header has been parsed whole:
    /// the pcap global header's, or the first pcapng interface's. `None`
    /// before that, however many of the header's bytes have arrived.
    pub fn link_type(&self) -> Option<i32> {
        match &self.format {
            None => None,
            Some(Format::Pcap(p)) => p.dlt(),
            Some(Format::PcapNg(p)) => p.first_dlt(),
        }
    }

    /// "pcap" or "pcapng", once the first bytes have been seen.
    pub fn format_name(&self) -> Option<&'static str> {
        match &self.format {
            None => None,
            Some(Format::Pcap(_)) => Some("pcap"),
            Some(Format::PcapNg(_)) => Some("pcapng"),
        }
    }

    /// Packets the capture host says it dropped (pcapng's EPB drop counts
    /// and ISB drop statistics, folded per interface as [`Drops`] says),
    /// reported since the last call; 0 for a pcap stream, which carries
    /// none.
    pub fn take_new_drops(&mut self) -> u64 {
        match &mut self.format {
            Some(Format::PcapNg(p)) => p.take_new_drops(),
            _ => 0,
        }
    }

    /// The current section's interfaces that reported drops, by interface
    /// id, with what they reported.
    pub fn drops_by_interface(&self) -> Vec<(u32, Drops)> {
        match &self.format {
            Some(Format::PcapNg(p)) => p.drops(),
            _ => Vec::new(),
        }
    }

    /// Parses every whole unit at the front of `buf`, appending its packets to
    /// `out`, and returns the number of bytes consumed. Call again with the
    /// unconsumed rest plus newly read bytes.
    pub fn parse(&mut self, buf: &[u8], out: &mut Vec<Record>) -> Result<usize, StreamError> {
        self.parse_units(buf, |_, record| {
            if let Some(r) = record {
                out.push(r)
            }
        })
    }

    /// Like `parse`, but reports every unit (header, block or record) with
    /// its byte range, and its packet if it carries one: for tools that
    /// re-frame a stream.
    pub fn parse_units(
        &mut self,
        buf: &[u8],
        mut unit: impl FnMut(std::ops::Range<usize>, Option<Record>),
    ) -> Result<usize, StreamError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            let step = match &mut self.format {
                None => match detect(rest, self.limits)? {
                    None => Step::NeedMore,
                    Some(format) => {
                        self.format = Some(format);
                        continue;
                    }
                },
                Some(Format::Pcap(p)) => p.step(rest)?,
                Some(Format::PcapNg(p)) => p.step(rest)?,
            };
            match step {
                Step::NeedMore => return Ok(pos),
                Step::Skip(n) => {
                    unit(pos..pos + n, None);
                    pos += n;
                }
                Step::Packet(n, mut record) => {
                    record.offset += pos;
                    unit(pos..pos + n, Some(record));
                    pos += n;
                }
            }
        }
    }
}

/// Recognises the format from the first four bytes.
fn detect(buf: &[u8], limits: Limits) -> Result<Option<Format>, StreamError> {
    let Some(magic) = buf.get(..4) else {
        // A peer that sends fewer than four bytes and waits is not
        // recognisably wrong yet, but a prefix no magic starts with is.
        let possible = PCAP_MAGICS
            .iter()
            .chain(std::iter::once(&PCAPNG_MAGIC))
            .any(|m| m.starts_with(buf));
        return if possible {
            Ok(None)
        } else {
            Err(StreamError::NotPcap(printable(buf)))
        };
    };
    if PCAP_MAGICS.iter().any(|m| m == magic) {
        Ok(Some(Format::Pcap(pcap::PcapFormat::new(limits))))
    } else if magic == PCAPNG_MAGIC {
        Ok(Some(Format::PcapNg(pcapng::PcapNgFormat::new(limits))))
    } else {
        Err(StreamError::NotPcap(printable(buf)))
    }
}

/// The first bytes of a stream, escaped for one line of text: an HTTP or SSH
/// banner stays readable, binary shows as \xNN.
pub fn printable(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(16) {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// A timestamp of whole seconds and a fraction in units of `1/resolution`
/// as (seconds, nanoseconds 0..10^9), truncated to nanoseconds. A fraction
/// of a second or more (a pcap µs field of 1,500,000, say) is carried into
/// the seconds, as Zeek would read libpcap's timeval; seconds saturate
/// instead of wrapping, so that no value comes out earlier than it went in.
pub(crate) fn normalize_ts(secs: i64, frac: u64, resolution: u64) -> (i64, u32) {
    let resolution = resolution.max(1);
    let carry = i64::try_from(frac / resolution).unwrap_or(i64::MAX);
    // u128: frac % resolution < resolution <= 2^64, times 10^9 fits.
    let nsec = (u128::from(frac % resolution) * 1_000_000_000) / u128::from(resolution);
    // < 10^9: the remainder is below one resolution unit's second.
    (secs.saturating_add(carry), nsec as u32)
}

#[cfg(test)]
mod tests;
