//! pcapng: a sequence of blocks. Section headers set the byte order and reset
//! the interfaces; interface description blocks declare a link type, snap
//! length and timestamp resolution; enhanced, simple and (obsolete) packet
//! blocks carry packets; every other block is skipped by its length.
//! Framing is ours: of an interface block only the four values its packets
//! need are kept (a few bytes, however large the block), so that a stream of
//! fat interface blocks costs no memory beyond its read buffer.

use super::{normalize_ts, Limits, Record, Step, StreamError};
use crate::linktype::linktype_to_dlt;

const SECTION_HEADER_BLOCK: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION_BLOCK: u32 = 0x0000_0001;
const PACKET_BLOCK: u32 = 0x0000_0002;
const SIMPLE_PACKET_BLOCK: u32 = 0x0000_0003;
const ENHANCED_PACKET_BLOCK: u32 = 0x0000_0006;
const OPT_ENDOFOPT: u16 = 0;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;
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
}

#[derive(Debug, Default)]
pub(super) struct PcapNgFormat {
    limits: Limits,
    /// The current section's byte order; `None` before the first section.
    big: Option<bool>,
    interfaces: Vec<Interface>,
    /// The first interface's link type; it stays the stream's link type.
    first_dlt: Option<i32>,
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
            _ => {}
        }
        Ok(Step::Skip(len))
    }

    fn packet(
        &self,
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
    // Options lie between the fixed fields and the trailing length; the
    // block's length was checked against min_block_len.
    let end = block.len() - 4;
    let mut at = 16;
    while at + 4 <= end {
        let (code, olen) = (u16_at(at), usize::from(u16_at(at + 2)));
        if code == OPT_ENDOFOPT {
            break;
        }
        let value = block
            .get(at + 4..at + 4 + olen)
            .filter(|_| at + 4 + olen <= end);
        let Some(value) = value else {
            return Err(StreamError::BadPcapNg(format!(
                "an interface description option of {olen} bytes overruns its block"
            )));
        };
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
        // Values are padded to 32 bits.
        at += 4 + olen.div_ceil(4) * 4;
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
    })
}
