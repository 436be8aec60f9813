//! pcapng: a sequence of blocks. Section headers set the byte order and reset
//! the interfaces; interface description blocks declare a link type, snap
//! length and timestamp resolution; enhanced, simple and (obsolete) packet
//! blocks carry packets; every other block is skipped by its length.
//! Framing is ours: of an interface block only the four values its packets
//! need are kept (a few bytes, however large the block), so that a stream of
//! fat interface blocks costs no memory beyond its read buffer.

use super::{normalize_ts, Limits, Record, Step, StreamError};
use crate::stream::linktype::linktype_to_dlt;

const SECTION_HEADER_BLOCK: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION_BLOCK: u32 = 0x0000_0001;
const PACKET_BLOCK: u32 = 0x0000_0002;
const SIMPLE_PACKET_BLOCK: u32 = 0x0000_0003;
const ENHANCED_PACKET_BLOCK: u32 = 0x0000_0006;
const OPT_ENDOFOPT: u16 = 0;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;
/// EPB: packets lost between this packet and the preceding one of its
/// interface (by the interface and the OS).
const EPB_DROPCOUNT: u16 = 4;
/// ISB: packets dropped by the interface, and by the OS, since the capture
/// began (cumulative).
const ISB_IFDROP: u16 = 5;
const ISB_OSDROP: u16 = 7;
const BLOCK_HEADER_LEN: usize = 8;
const SHB_BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Interface description blocks one section may declare. Each is kept for
/// the section's life (as 24 bytes), so a stream of endless IDBs would
/// otherwise grow memory without bound. Real captures have a handful;
/// dumpcap's own limit is far below this.
pub const MAX_INTERFACES: usize = 1024;
const INTERFACE_STATISTICS_BLOCK: u32 = 0x0000_0005;
const NAME_RESOLUTION_BLOCK: u32 = 0x0000_0004;
const DECRYPTION_SECRETS_BLOCK: u32 = 0x0000_000A;
const CUSTOM_BLOCK: u32 = 0x0000_0BAD;
const CUSTOM_BLOCK_NO_COPY: u32 = 0x4000_0BAD;

/// The length of a block's fixed part: header, fixed fields and trailing
/// length. A shorter block would make its fields overlap the next block.
fn min_block_len(block_type: u32) -> u32 {
    match block_type {
        // byte-order magic, version, section length
        SECTION_HEADER_BLOCK => 12 + 16,
        // link type, reserved, snaplen
        INTERFACE_DESCRIPTION_BLOCK => 12 + 8,
        // interface, timestamp (2), caplen, wirelen
        ENHANCED_PACKET_BLOCK | PACKET_BLOCK => 12 + 20,
        // wirelen
        SIMPLE_PACKET_BLOCK => 12 + 4,
        // interface, timestamp (2)
        INTERFACE_STATISTICS_BLOCK => 12 + 12,
        // at least the end-of-records record
        NAME_RESOLUTION_BLOCK => 12 + 4,
        // secrets type, secrets length
        DECRYPTION_SECRETS_BLOCK => 12 + 8,
        // private enterprise number
        CUSTOM_BLOCK | CUSTOM_BLOCK_NO_COPY => 12 + 4,
        _ => 12,
    }
}

/// What a packet block needs to know about its interface, derived once.
#[derive(Debug, Clone, Copy)]
struct Interface {
    dlt: i32,
    snapshot: u32,
    /// Timestamp units per second (if_tsresol; default 10^6).
    resolution: u64,
    /// Seconds added to every timestamp (if_tsoffset).
    offset: i64,
    /// What its capture host says it dropped (see [`Drops`]).
    drops: Drops,
}

/// One interface's upstream drops, as its capture host reports them. EPB
/// drop counts are per gap, so they are summed; ISB counts are cumulative
/// since the capture began, so the latest is kept. Both count the same
/// packets (the EPB's "lost by the interface and the OS" is the ISB's
/// ifdrop + osdrop), so the interface's figure is the larger of the two,
/// never their sum: a writer that sends both is not counted twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Sum of the EPB epb_dropcount values.
    pub epb: u64,
    /// The largest isb_ifdrop + isb_osdrop seen (they only grow).
    pub isb: u64,
    /// The figure already handed out by `take_new_drops`.
    reported: u64,
}

impl Drops {
    /// The interface's drops: the larger of the two reports.
    pub fn total(&self) -> u64 {
        self.epb.max(self.isb)
    }
}

#[derive(Debug, Default)]
pub(super) struct PcapNgFormat {
    limits: Limits,
    /// The current section's byte order; `None` before the first section.
    big: Option<bool>,
    interfaces: Vec<Interface>,
    /// The first interface's link type; it stays the stream's link type.
    first_dlt: Option<i32>,
    /// Drops of the interfaces of earlier sections, not yet taken.
    unreported_drops: u64,
}

impl PcapNgFormat {
    pub(super) fn new(limits: Limits) -> Self {
        PcapNgFormat {
            limits,
            ..Default::default()
        }
    }

    pub(super) fn first_dlt(&self) -> Option<i32> {
        self.first_dlt
    }

    /// Upstream drops reported since the last call, over all interfaces.
    pub(super) fn take_new_drops(&mut self) -> u64 {
        let mut new = std::mem::take(&mut self.unreported_drops);
        for iface in &mut self.interfaces {
            let total = iface.drops.total();
            new = new.saturating_add(total.saturating_sub(iface.drops.reported));
            iface.drops.reported = total;
        }
        new
    }

    /// Each interface of the current section and its drops.
    pub(super) fn drops(&self) -> Vec<(u32, Drops)> {
        (0u32..)
            .zip(self.interfaces.iter().map(|i| i.drops))
            .filter(|(_, d)| d.total() > 0)
            .collect()
    }

    pub(super) fn step(&mut self, buf: &[u8]) -> Result<Step, StreamError> {
        if buf.len() < 12 {
            return Ok(Step::NeedMore);
        }
        let block_type_le = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let big = if block_type_le == SECTION_HEADER_BLOCK {
            // The section header's byte-order magic decides how to read it.
            let bom = [buf[8], buf[9], buf[10], buf[11]];
            if u32::from_be_bytes(bom) == SHB_BYTE_ORDER_MAGIC {
                true
            } else if u32::from_le_bytes(bom) == SHB_BYTE_ORDER_MAGIC {
                false
            } else {
                return Err(StreamError::BadPcapNg(format!(
                    "section header with an unknown byte-order magic {:02x}{:02x}{:02x}{:02x}",
                    bom[0], bom[1], bom[2], bom[3]
                )));
            }
        } else {
            match self.big {
                Some(big) => big,
                None => {
                    return Err(StreamError::BadPcapNg(
                        "the stream does not start with a section header block".into(),
                    ))
                }
            }
        };
        let read_u32 = |at: usize| {
            let b = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let block_type = read_u32(0);
        let len = read_u32(4);
        if len as usize > self.limits.max_block_len() {
            return Err(StreamError::BlockTooLarge {
                block_type,
                len: u64::from(len),
                limit: self.limits.max_block_len(),
            });
        }
        if len % 4 != 0 || len < 12 {
            return Err(StreamError::BadPcapNg(format!(
                "block of type {block_type:#x} has length {len}, which is not a multiple of 4 of at least 12"
            )));
        }
        let min = min_block_len(block_type);
        if len < min {
            return Err(StreamError::BlockTooShort {
                block_type,
                len,
                min,
            });
        }
        let len = len as usize;
        if buf.len() < len {
            return Ok(Step::NeedMore);
        }
        if block_type == INTERFACE_DESCRIPTION_BLOCK && self.interfaces.len() >= MAX_INTERFACES {
            return Err(StreamError::TooManyInterfaces(MAX_INTERFACES));
        }
        let block = &buf[..len];
        let trailer = read_u32(len - 4);
        if trailer as usize != len {
            return Err(StreamError::BadPcapNg(format!(
                "block of type {block_type:#x} has length {len} but ends with length {trailer}"
            )));
        }
        match block_type {
            SECTION_HEADER_BLOCK => {
                let read_u16 = |at: usize| {
                    let b = [block[at], block[at + 1]];
                    if big {
                        u16::from_be_bytes(b)
                    } else {
                        u16::from_le_bytes(b)
                    }
                };
                let (major, minor) = (read_u16(12), read_u16(14));
                if major != 1 {
                    return Err(StreamError::BadPcapNg(format!(
                        "unsupported pcapng version {major}.{minor} (only 1.x is defined)"
                    )));
                }
                self.big = Some(big);
                // The drops of the ending section's interfaces are kept
                // for the next `take_new_drops`.
                self.unreported_drops = self.take_new_drops();
                self.interfaces.clear();
            }
            INTERFACE_DESCRIPTION_BLOCK => {
                let iface = interface(block, big, self.limits)?;
                self.first_dlt.get_or_insert(iface.dlt);
                self.interfaces.push(iface);
            }
            ENHANCED_PACKET_BLOCK | PACKET_BLOCK => {
                return self
                    .packet(block_type, block, big, read_u32)
                    .map(|r| Step::Packet(len, r))
            }
            SIMPLE_PACKET_BLOCK => {
                let iface = self.interface_for(0)?;
                let wirelen = read_u32(8);
                // `len` is at least min_block_len(SPB), checked above.
                let room =
                    u32::try_from(len.saturating_sub(BLOCK_HEADER_LEN + 4 + 4)).unwrap_or(u32::MAX);
                return Ok(Step::Packet(
                    len,
                    Record {
                        offset: BLOCK_HEADER_LEN + 4,
                        caplen: wirelen.min(room).min(iface.snapshot),
                        wirelen,
                        ts_sec: 0,
                        ts_nsec: 0,
                        dlt: iface.dlt,
                        interface: 0,
                    },
                ));
            }
            INTERFACE_STATISTICS_BLOCK => self.statistics(block, big, read_u32),
            _ => {}
        }
        Ok(Step::Skip(len))
    }

    /// An interface statistics block: its cumulative drop counts. One for
    /// an interface no IDB declared is ignored, as are malformed options:
    /// statistics are advisory, and the stream stays usable.
    fn statistics(&mut self, block: &[u8], big: bool, read_u32: impl Fn(usize) -> u32) {
        let Some(iface) = self.interfaces.get_mut(read_u32(8) as usize) else {
            return;
        };
        let (mut ifdrop, mut osdrop) = (0u64, 0u64);
        for (code, value) in options(block, BLOCK_HEADER_LEN + 12, big).map_while(Result::ok) {
            match code {
                ISB_IFDROP => ifdrop = u64_of(value, big).unwrap_or(0),
                ISB_OSDROP => osdrop = u64_of(value, big).unwrap_or(0),
                _ => {}
            }
        }
        let isb = ifdrop.saturating_add(osdrop);
        iface.drops.isb = iface.drops.isb.max(isb);
    }

    fn packet(
        &mut self,
        block_type: u32,
        block: &[u8],
        big: bool,
        read_u32: impl Fn(usize) -> u32,
    ) -> Result<Record, StreamError> {
        const FIXED: usize = BLOCK_HEADER_LEN + 20;
        if block.len() < FIXED + 4 {
            return Err(StreamError::BadPcapNg(format!(
                "packet block of {} bytes is too short for its fixed fields",
                block.len()
            )));
        }
        let interface_id = if block_type == PACKET_BLOCK {
            // Obsolete Packet Block: a 16-bit interface id, then a 16-bit drop count.
            let id = [block[8], block[9]];
            u32::from(if big {
                u16::from_be_bytes(id)
            } else {
                u16::from_le_bytes(id)
            })
        } else {
            read_u32(8)
        };
        let iface = self.interface_for(interface_id)?;
        let ts = (u64::from(read_u32(12)) << 32) | u64::from(read_u32(16));
        let caplen = read_u32(20);
        let wirelen = read_u32(24);
        let room = block.len() - FIXED - 4;
        if caplen as usize > room {
            return Err(StreamError::BadPcapNg(format!(
                "packet block claims {caplen} captured bytes but holds only {room}"
            )));
        }
        if caplen > self.limits.max_caplen {
            return Err(StreamError::CaplenTooLarge {
                caplen,
                limit: self.limits.max_caplen,
            });
        }
        if block_type == ENHANCED_PACKET_BLOCK {
            // Options follow the data, padded to 32 bits. Malformed ones
            // are ignored (the packet is fine); see `statistics`.
            let start = FIXED + (caplen as usize).div_ceil(4) * 4;
            let dropcount = options(block, start, big)
                .map_while(Result::ok)
                .filter(|(code, _)| *code == EPB_DROPCOUNT)
                .find_map(|(_, value)| u64_of(value, big))
                .unwrap_or(0);
            if let Some(i) = self.interfaces.get_mut(interface_id as usize) {
                i.drops.epb = i.drops.epb.saturating_add(dropcount);
            }
        }
        let (secs, ts_nsec) = normalize_ts(0, ts, iface.resolution);
        Ok(Record {
            offset: FIXED,
            caplen: caplen.min(iface.snapshot),
            wirelen,
            ts_sec: secs.saturating_add(iface.offset),
            ts_nsec,
            dlt: iface.dlt,
            interface: interface_id,
        })
    }

    fn interface_for(&self, id: u32) -> Result<Interface, StreamError> {
        self.interfaces
            .get(id as usize)
            .copied()
            .ok_or(StreamError::UnknownInterface(id))
    }
}

/// The values packets need from an interface description block: link type
/// (8), snap length (12), and the options if_tsresol and if_tsoffset.
fn interface(block: &[u8], big: bool, limits: Limits) -> Result<Interface, StreamError> {
    let u16_at = |at: usize| {
        let b = [block[at], block[at + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |at: usize| {
        let b = [block[at], block[at + 1], block[at + 2], block[at + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let mut resolution: u64 = 1_000_000;
    let mut offset: i64 = 0;
    for option in options(block, 16, big) {
        let (code, value) = option?;
        match (code, value) {
            (IF_TSRESOL, [v, ..]) => {
                let exp = u32::from(v & 0x7f);
                resolution = if v & 0x80 != 0 {
                    1u64.checked_shl(exp).filter(|_| exp < 64)
                } else {
                    10u64.checked_pow(exp)
                }
                .ok_or_else(|| {
                    StreamError::BadPcapNg(format!("if_tsresol {v:#x} is out of range"))
                })?;
            }
            (IF_TSOFFSET, [a, b, c, d, e, f, g, h]) => {
                let bytes = [*a, *b, *c, *d, *e, *f, *g, *h];
                offset = if big {
                    i64::from_be_bytes(bytes)
                } else {
                    i64::from_le_bytes(bytes)
                };
            }
            _ => {}
        }
    }
    let snaplen = u32_at(12);
    Ok(Interface {
        dlt: linktype_to_dlt(u32::from(u16_at(8))),
        snapshot: if snaplen == 0 || snaplen > limits.max_caplen {
            limits.max_caplen
        } else {
            snaplen
        },
        resolution,
        offset,
        drops: Drops::default(),
    })
}

/// The options of `block` from byte `start` to its trailing length, as
/// (code, value), up to opt_endofopt. Lengths come from the stream: each is
/// checked against the block (already bounded by `max_block_len`), none
/// sizes an allocation, and an option that overruns the block is an error
/// (after which the iterator ends).
fn options(
    block: &[u8],
    start: usize,
    big: bool,
) -> impl Iterator<Item = Result<(u16, &[u8]), StreamError>> {
    let end = block.len().saturating_sub(4);
    let mut at = start;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || at.saturating_add(4) > end {
            return None;
        }
        let u16_at = |i: usize| {
            let b = [block[i], block[i + 1]];
            if big {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let (code, olen) = (u16_at(at), usize::from(u16_at(at + 2)));
        if code == OPT_ENDOFOPT {
            done = true;
            return None;
        }
        let Some(value) = block
            .get(at + 4..at + 4 + olen)
            .filter(|_| at + 4 + olen <= end)
        else {
            done = true;
            return Some(Err(StreamError::BadPcapNg(format!(
                "an option of {olen} bytes overruns its block"
            ))));
        };
        // Values are padded to 32 bits.
        at += 4 + olen.div_ceil(4) * 4;
        Some(Ok((code, value)))
    })
}

/// An 8-byte option value in the section's byte order; `None` for any
/// other length.
fn u64_of(value: &[u8], big: bool) -> Option<u64> {
    let bytes: [u8; 8] = value.try_into().ok()?;
    Some(if big {
        u64::from_be_bytes(bytes)
    } else {
        u64::from_le_bytes(bytes)
    })
}
