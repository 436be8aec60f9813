//! `?share=I/N`: which of N workers reading one stream keeps a packet.
//!
//! Every worker connects to the same stream and runs its own [`Sharer`] over
//! the same packets; a packet's share is a pure function of the packet (and,
//! for the fragments of [`ShareBy::FiveTuple`], of the fragments before it),
//! so the N workers agree without talking to each other, and each packet is
//! kept by exactly one of them. The hash is fixed (no per-process seed):
//! workers on different hosts, builds and runs agree.
//!
//! # What is hashed
//!
//! The outermost IP header, found through the link layer: Ethernet with any
//! number of 802.1Q / 802.1ad / 0x9100 VLAN tags, MPLS (labels popped to the
//! bottom of the stack, then IPv4 or IPv6 by the version nibble) and PPPoE
//! sessions; Linux SLL and SLL2; NULL and LOOP (the address family in either
//! byte order); raw IP (DLT_RAW, LINKTYPE_RAW 101, DLT_IPV4, DLT_IPV6); PPP,
//! PPP in HDLC framing, Cisco HDLC, PPP over Ethernet without the Ethernet
//! header; NFLOG. Tunnels are not entered: all flows inside one tunnel share
//! the tunnel's share. A packet that is not IP, or cut before the addresses,
//! is [`Verdict::NotIp`] and goes to share 0; so does every packet of a link
//! type not listed here (with the link type named, for a warning).
//!
//! * [`ShareBy::AddressPair`]: the unordered pair of addresses. Both
//!   directions of a connection, all its fragments, and every packet between
//!   the two hosts land together. No state.
//! * [`ShareBy::FiveTuple`]: the unordered pair of (address, port) endpoints
//!   plus the protocol, for TCP, UDP and SCTP; other protocols (ICMP, ESP,
//!   AH, GRE, ...) by the address pair plus the protocol. Ports are read
//!   behind IPv4 options and behind IPv6 hop-by-hop, routing and destination
//!   options headers.
//!
//! As Zeek does, an IPv6 type 0 routing header with segments left replaces
//! the destination by the route's final one, so that such a packet lands with
//! the rest of the connection Zeek files it under.
//!
//! # Fragments with `FiveTuple`
//!
//! Only a datagram's first fragment carries ports, yet Zeek reassembles a
//! datagram only if one worker sees all of its fragments. The sharer
//! therefore keeps a table of fragment groups that mirrors Zeek's
//! reassembler: a group is keyed as Zeek keys it (source, final destination
//! and IP ID or IPv6 fragment ID; not the protocol), begins with the first
//! fragment of that key seen, and ends when its fragment data covers
//! contiguously from offset 0 up to the datagram's size (known from a last
//! fragment, MF clear), exactly when Zeek's `FragReassembler` completes and is
//! removed. Every fragment of a group goes to the group's share:
//!
//! * the 5-tuple share of the group's first packet if that is the datagram's
//!   first fragment (the usual order): the datagram lands with its flow's
//!   unfragmented packets;
//! * otherwise (a later fragment arrived first, as when a sender emits the
//!   last fragment first) the address pair plus protocol share, which the
//!   first fragment then follows: the datagram stays whole, but may land on
//!   another worker than its flow; that worker's Zeek sees the datagram and
//!   not the rest of the flow.
//!
//! A fragment that was not captured in full (caplen below the IP length), or
//! an IPv4 fragment with a bad header checksum, is one Zeek does not add to a
//! reassembler: it does not change the table (a first fragment goes by its own
//! 5-tuple, as Zeek analyses it alone; a later one follows its group if there
//! is one). An IPv6 fragment header with offset 0 and M clear is a group of
//! one, as in Zeek.
//!
//! Limits of the table, which is per sharer (per connection):
//! * a group idle for 60 s of packet time is forgotten (Zeek, by default,
//!   keeps an incomplete datagram forever); at most 8192 groups are kept,
//!   the oldest evicted first. A fragment arriving after its group was
//!   forgotten starts a new group, possibly on another worker.
//! * the covered ranges of a group are tracked as at most 8 disjoint runs; a
//!   group needing more (fragments arriving out of order with more than 8
//!   holes) completes later than Zeek's, which can misplace the fragments of
//!   a later datagram that reuses the ID.
//! * the table only agrees between workers that saw the same packets: a
//!   worker that joins or reconnects mid-stream, or a stream server that
//!   drops packets for one client, can make the workers disagree on the
//!   fragments of a datagram in progress (a fragment then kept by none or by
//!   two of them). `AddressPair` has no state and none of these limits.
//!
//! Without fragments `FiveTuple` keeps no state, and `AddressPair` never
//! does; neither allocates per packet. A count of 1 (or 0) puts every packet
//! in share 0 without parsing it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;

#[cfg(test)]
mod tests;

/// How flows are hashed (`PcapOverTcp::share_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShareBy {
    /// The unordered address pair: stateless, every fragment with its flow.
    #[default]
    AddressPair,
    /// The unordered (address, port) pair and the protocol: finer, for few
    /// busy host pairs; fragments go through a table (see the module doc).
    FiveTuple,
}

/// The share of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// This share, in `0..count`.
    Share(u32),
    /// Not hashable (not IP, truncated before the addresses, or a link type
    /// the sharer does not parse): goes to share 0. `unhashable_link_type`
    /// is `Some(dlt)` when the reason is the link type (the caller warns once
    /// per link type), `None` for a packet of a known link type.
    NotIp { unhashable_link_type: Option<i32> },
}

impl Verdict {
    /// The share the packet goes to: `NotIp` goes to share 0.
    pub fn share(self) -> u32 {
        match self {
            Verdict::Share(s) => s,
            Verdict::NotIp { .. } => 0,
        }
    }
}

/// Decides, packet by packet, which share a packet belongs to. One per
/// connection: with [`ShareBy::FiveTuple`] it keeps state for fragments.
pub struct Sharer {
    by: ShareBy,
    count: u32,
    groups: Groups,
}

impl fmt::Debug for Sharer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sharer")
            .field("by", &self.by)
            .field("count", &self.count)
            .field("fragment_groups", &self.groups.map.len())
            .finish()
    }
}

impl Sharer {
    /// A sharer for `count` shares (0 counts as 1).
    pub fn new(by: ShareBy, count: u32) -> Sharer {
        Sharer {
            by,
            count: count.max(1),
            groups: Groups::default(),
        }
    }

    pub fn by(&self) -> ShareBy {
        self.by
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The share (`0..count`) of one packet: `data` is the captured bytes,
    /// `dlt` its DLT_ link type (as [`crate::stream::linktype`] maps it),
    /// `ts_sec` its time (for forgetting idle fragment groups).
    pub fn share_of(&mut self, data: &[u8], dlt: i32, ts_sec: i64) -> Verdict {
        if self.count == 1 {
            return Verdict::Share(0);
        }
        let ip = match ip_offset(data, dlt) {
            Link::Ip(off) => data.get(off..).unwrap_or_default(),
            Link::NotIp => return NOT_IP,
            Link::Unsupported => {
                return Verdict::NotIp {
                    unhashable_link_type: Some(dlt),
                }
            }
        };
        let share = match self.by {
            ShareBy::AddressPair => pair_hash(ip).map(|h| scale(h, self.count)),
            ShareBy::FiveTuple => self.five_tuple(ip, ts_sec),
        };
        share.map_or(NOT_IP, Verdict::Share)
    }

    /// Whether share `index` keeps the packet (`NotIp` belongs to share 0).
    pub fn keeps(&mut self, index: u32, data: &[u8], dlt: i32, ts_sec: i64) -> bool {
        self.share_of(data, dlt, ts_sec).share() == index
    }

    #[inline(never)]
    fn five_tuple(&mut self, ip: &[u8], ts: i64) -> Option<u32> {
        let n = self.count;
        let p = match ip.first()? >> 4 {
            4 => parse_v4(ip)?,
            6 => parse_v6(ip)?,
            _ => return None,
        };
        let own = scale(p.hash(p.ports), n);
        let Some(frag) = &p.frag else {
            return Some(own);
        };
        let key = Key {
            v6: p.v6,
            src: p.src,
            dst: p.dst,
            id: frag.id,
        };
        let fallback = || scale(p.hash(None), n);
        Some(self.groups.place(key, frag, own, fallback, ts))
    }
}

const NOT_IP: Verdict = Verdict::NotIp {
    unhashable_link_type: None,
};

/// The share of a hash: its high bits scaled to `0..count` (not a modulo).
fn scale(h: u64, count: u32) -> u32 {
    ((u128::from(h) * u128::from(count)) >> 64) as u32
}

// ---------------------------------------------------------------------------
// Link layers

const DLT_NULL: i32 = 0;
const DLT_EN10MB: i32 = 1;
const DLT_PPP: i32 = 9;
#[cfg(target_os = "openbsd")]
const DLT_RAW: i32 = 14;
#[cfg(not(target_os = "openbsd"))]
const DLT_RAW: i32 = 12;
const DLT_PPP_SERIAL: i32 = 50;
const DLT_PPP_ETHER: i32 = 51;
const LINKTYPE_RAW: i32 = 101;
const DLT_C_HDLC: i32 = 104;
const DLT_LOOP: i32 = 108;
const DLT_LINUX_SLL: i32 = 113;
const DLT_IPV4: i32 = 228;
const DLT_IPV6: i32 = 229;
const DLT_NFLOG: i32 = 239;
const DLT_LINUX_SLL2: i32 = 276;

/// Where the outermost IP header starts.
enum Link {
    Ip(usize),
    NotIp,
    Unsupported,
}

impl From<Option<usize>> for Link {
    fn from(o: Option<usize>) -> Link {
        o.map_or(Link::NotIp, Link::Ip)
    }
}

fn ip_offset(d: &[u8], dlt: i32) -> Link {
    match dlt {
        DLT_EN10MB => be16(d, 12).and_then(|t| ethertype(d, 14, t)).into(),
        DLT_LINUX_SLL => be16(d, 14).and_then(|t| ethertype(d, 16, t)).into(),
        DLT_LINUX_SLL2 => be16(d, 0).and_then(|t| ethertype(d, 20, t)).into(),
        DLT_NULL | DLT_LOOP => address_family(d).into(),
        DLT_RAW | LINKTYPE_RAW | DLT_IPV4 | DLT_IPV6 => Link::Ip(0),
        DLT_PPP | DLT_PPP_SERIAL | DLT_C_HDLC => hdlc(d).into(),
        DLT_PPP_ETHER => pppoe(d, 0).into(),
        DLT_NFLOG => nflog(d).into(),
        _ => Link::Unsupported,
    }
}

/// The IP header behind an ethertype `t` whose payload starts at `off`.
fn ethertype(d: &[u8], mut off: usize, mut t: u16) -> Option<usize> {
    loop {
        match t {
            0x0800 | 0x86DD => return Some(off),
            // 802.1Q, 802.1ad, the old QinQ tag: TCI, then the next type.
            0x8100 | 0x88A8 | 0x9100 => {
                t = be16(d, off + 2)?;
                off += 4;
            }
            0x8847 | 0x8848 => return mpls(d, off),
            0x8864 => return pppoe(d, off),
            _ => return None,
        }
    }
}

/// Pops MPLS labels to the bottom of the stack, then guesses by the nibble.
fn mpls(d: &[u8], mut off: usize) -> Option<usize> {
    loop {
        let bottom = d.get(off + 2)? & 1 == 1;
        off += 4;
        if bottom {
            break;
        }
    }
    matches!(d.get(off)? >> 4, 4 | 6).then_some(off)
}

/// A PPPoE session header at `off`, then a PPP protocol.
fn pppoe(d: &[u8], off: usize) -> Option<usize> {
    ppp_protocol(d, off + 6, be16(d, off + 6)?, 2)
}

fn ppp_protocol(d: &[u8], off: usize, proto: u16, len: usize) -> Option<usize> {
    match proto {
        0x0021 | 0x0057 => Some(off + len),
        0x0281 | 0x0283 => mpls(d, off + len),
        _ => None,
    }
}

/// PPP (with or without HDLC address and control, protocol field compressed
/// or not) or Cisco HDLC.
fn hdlc(d: &[u8]) -> Option<usize> {
    match (*d.first()?, *d.get(1)?) {
        (0xFF, 0x03) => ppp(d, 2),
        (0x0F | 0x8F, 0x00) => ethertype(d, 4, be16(d, 2)?),
        _ => ppp(d, 0),
    }
}

fn ppp(d: &[u8], off: usize) -> Option<usize> {
    let first = *d.get(off)?;
    if first & 1 == 1 {
        // Protocol-field compression: one byte.
        ppp_protocol(d, off, u16::from(first), 1)
    } else {
        ppp_protocol(d, off, be16(d, off)?, 2)
    }
}

/// NULL and LOOP: a 4-byte address family, in either byte order.
fn address_family(d: &[u8]) -> Option<usize> {
    let b: [u8; 4] = d.get(..4)?.try_into().ok()?;
    let ip = |af: u32| matches!(af, 2 | 10 | 24 | 28 | 30);
    (ip(u32::from_le_bytes(b)) || ip(u32::from_be_bytes(b))).then_some(4)
}

/// NFLOG: a 4-byte header, then TLVs (length and type in the capturing
/// host's byte order) until the payload one (type 9).
fn nflog(d: &[u8]) -> Option<usize> {
    if !matches!(d.first()?, 2 | 10) {
        return None;
    }
    let mut off = 4;
    let mut little = None;
    while let Some(&[a, b, c, e]) = d.get(off..off + 4) {
        // The types are small: the order whose type fits in the low byte.
        let le = *little.get_or_insert(e == 0 || c > e);
        let (len, ty) = if le {
            (u16::from_le_bytes([a, b]), u16::from_le_bytes([c, e]))
        } else {
            (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, e]))
        };
        let len = usize::from(len);
        if len < 4 {
            return None;
        }
        if ty & 0x7FFF == 9 {
            return Some(off + 4);
        }
        off += (len + 3) & !3;
    }
    None
}

fn be16(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(off..off + 2)?.try_into().ok()?))
}

fn be32(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(off..off + 4)?.try_into().ok()?))
}

fn be128(d: &[u8], off: usize) -> Option<u128> {
    Some(u128::from_be_bytes(d.get(off..off + 16)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------
// IP

/// What the hash and the fragment table need from one IP packet.
struct Parsed {
    v6: bool,
    /// IPv4 addresses in the low 32 bits.
    src: u128,
    /// The final destination (see the module doc).
    dst: u128,
    /// The upper-layer protocol (for an IPv6 fragment after the first, the
    /// fragment header's next header).
    proto: u8,
    /// TCP, UDP or SCTP ports, when present.
    ports: Option<(u16, u16)>,
    frag: Option<Frag>,
}

impl Parsed {
    fn hash(&self, ports: Option<(u16, u16)>) -> u64 {
        let (sp, dp) = ports.unwrap_or((0, 0));
        flow_hash(self.v6, (self.src, sp), (self.dst, dp), self.proto)
    }
}

/// One fragment, as Zeek's reassembler sees it.
struct Frag {
    id: u32,
    /// Byte offset of its data in the datagram.
    offset: u32,
    /// Its data bytes (the IP length minus the headers up to the fragment's
    /// data).
    len: u32,
    /// MF (more fragments) set.
    more: bool,
    /// Zeek adds it to a reassembler: captured in full, lengths consistent,
    /// and for IPv4 a good header checksum.
    counts: bool,
}

fn port_protocol(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

/// The AddressPair hash of the IP packet `p`.
fn pair_hash(p: &[u8]) -> Option<u64> {
    match p.first()? >> 4 {
        4 => Some(flow_hash(
            false,
            (u128::from(be32(p, 12)?), 0),
            (u128::from(be32(p, 16)?), 0),
            0,
        )),
        6 => {
            // Only a routing header can change the pair; the parse is needed
            // only when extension headers precede the upper layer.
            let (src, dst) = if matches!(p.get(6)?, 0 | 43 | 60) {
                let v6 = parse_v6(p)?;
                (v6.src, v6.dst)
            } else {
                (be128(p, 8)?, be128(p, 24)?)
            };
            Some(flow_hash(true, (src, 0), (dst, 0), 0))
        }
        _ => None,
    }
}

#[inline(always)]
fn parse_v4(p: &[u8]) -> Option<Parsed> {
    let src = be32(p, 12)?;
    let dst = be32(p, 16)?;
    let ihl = usize::from(p[0] & 0x0F) * 4;
    if ihl < 20 {
        return None;
    }
    let total = usize::from(be16(p, 2)?);
    let full = total >= ihl && total <= p.len();
    // Ethernet padding is not part of the packet.
    let end = if full { total } else { p.len() };
    let proto = p[9];
    let flags = be16(p, 6)?;
    let offset = u32::from(flags & 0x1FFF) * 8;
    let more = flags & 0x2000 != 0;
    let frag = (more || offset != 0).then(|| Frag {
        id: u32::from(u16::from_be_bytes([p[4], p[5]])),
        offset,
        len: total.saturating_sub(ihl) as u32,
        more,
        counts: full && checksum_ok(&p[..ihl]),
    });
    let ports = if offset == 0 && port_protocol(proto) && ihl + 4 <= end {
        Some((be16(p, ihl)?, be16(p, ihl + 2)?))
    } else {
        None
    };
    Some(Parsed {
        v6: false,
        src: u128::from(src),
        dst: u128::from(dst),
        proto,
        ports,
        frag,
    })
}

/// The ones' complement sum of an IPv4 header is 0xFFFF.
fn checksum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = h
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum == 0xFFFF
}

#[inline(always)]
fn parse_v6(p: &[u8]) -> Option<Parsed> {
    let src = be128(p, 8)?;
    let mut dst = be128(p, 24)?;
    let payload = usize::from(be16(p, 4)?);
    let total = 40 + payload;
    let full = payload != 0 && total <= p.len();
    let end = if full { total } else { p.len() };
    let mut nh = p[6];
    let mut pos = 40;
    let mut routed = false;
    let mut frag = None;
    loop {
        match nh {
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                let Some(&[next, ext_len]) = p.get(pos..(pos + 2).min(end)) else {
                    break;
                };
                let len = (usize::from(ext_len) + 1) * 8;
                if pos + len > end {
                    break;
                }
                // Zeek's final destination: the first type 0 routing header
                // with segments left, before any fragment header.
                if nh == 43 && !routed && frag.is_none() {
                    let (kind, left) = (p[pos + 2], p[pos + 3]);
                    if kind == 0 && left > 0 && ext_len >= 2 && ext_len % 2 == 0 {
                        dst = be128(p, pos + len - 16)?;
                        routed = true;
                    }
                }
                nh = next;
                pos += len;
            }
            44 if frag.is_none() => {
                let Some(h) = p.get(pos..pos + 8).filter(|_| pos + 8 <= end) else {
                    break;
                };
                let flags = u16::from_be_bytes([h[2], h[3]]);
                let offset = u32::from(flags & 0xFFF8);
                nh = h[0];
                pos += 8;
                frag = Some(Frag {
                    id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    offset,
                    len: total.saturating_sub(pos) as u32,
                    more: flags & 1 != 0,
                    counts: full,
                });
                if offset != 0 {
                    break;
                }
            }
            _ => break,
        }
    }
    let first = frag.as_ref().is_none_or(|f| f.offset == 0);
    let ports = if first && port_protocol(nh) && pos + 4 <= end {
        Some((be16(p, pos)?, be16(p, pos + 2)?))
    } else {
        None
    };
    Some(Parsed {
        v6: true,
        src,
        dst,
        proto: nh,
        ports,
        frag,
    })
}

// ---------------------------------------------------------------------------
// The hash

const SEED: u64 = 0x7063_6170_6f76_6572; // "pcapover"

fn absorb(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 32)
}

/// MurmurHash3's finalizer.
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// A symmetric hash of two (address, port) endpoints and a protocol: the
/// endpoints are ordered before hashing.
fn flow_hash(v6: bool, a: (u128, u16), b: (u128, u16), proto: u8) -> u64 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = SEED;
    if v6 {
        h = absorb(h, (lo.0 >> 64) as u64);
        h = absorb(h, lo.0 as u64);
        h = absorb(h, (hi.0 >> 64) as u64);
        h = absorb(h, hi.0 as u64);
    } else {
        h = absorb(h, ((lo.0 as u64) << 32) | (hi.0 as u64 & 0xFFFF_FFFF));
    }
    let tail = (u64::from(lo.1) << 48)
        | (u64::from(hi.1) << 32)
        | (u64::from(proto) << 8)
        | if v6 { 6 } else { 4 };
    finish(absorb(h, tail))
}

// ---------------------------------------------------------------------------
// Fragment groups (FiveTuple)

/// Groups kept at most; the oldest is evicted first.
const GROUPS_MAX: usize = 8192;
/// A group idle this long (packet time) is forgotten.
const GROUP_IDLE_SECS: i64 = 60;
/// Disjoint covered runs tracked per group.
const RUNS: usize = 8;

/// Zeek's `FragReassemblerKey`: source, destination, ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    v6: bool,
    src: u128,
    dst: u128,
    id: u32,
}

impl std::hash::Hash for Key {
    /// One write: SipHash (the map's keyed hasher, against crafted
    /// collisions) pays per call.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut b = [0; 37];
        b[..16].copy_from_slice(&self.src.to_le_bytes());
        b[16..32].copy_from_slice(&self.dst.to_le_bytes());
        b[32..36].copy_from_slice(&self.id.to_le_bytes());
        b[36] = u8::from(self.v6);
        state.write(&b);
    }
}

#[derive(Debug)]
struct Group {
    share: u32,
    /// Creation number, to match `Groups::order`.
    seq: u64,
    last_ts: i64,
    /// Zeek's `frag_size`: the datagram's data size; 0 while unknown.
    size: u32,
    /// Covered byte ranges, sorted, disjoint, not touching.
    runs: [(u32, u32); RUNS],
    n_runs: u8,
}

impl Group {
    /// Adds a fragment; true when the group is complete (Zeek reassembles
    /// and forgets it).
    fn add(&mut self, f: &Frag) -> bool {
        let upper = f.offset + f.len;
        if !f.more && (self.size == 0 || upper > self.size) {
            self.size = upper;
        }
        if self.size != 0 && upper > self.size {
            self.size = upper;
        }
        if f.len == 0 {
            // Zeek inserts no block, so does not check for completion.
            return false;
        }
        self.insert(f.offset, upper);
        let prefix = match self.runs[..usize::from(self.n_runs)] {
            [(0, end), ..] => end,
            _ => 0,
        };
        self.size != 0 && prefix >= self.size
    }

    /// Merges `[lo, hi)` into the runs; if they overflow, the highest run is
    /// dropped (which can only delay completion).
    fn insert(&mut self, mut lo: u32, mut hi: u32) {
        let mut out = [(0, 0); RUNS];
        let mut n = 0;
        let mut push = |r: (u32, u32)| {
            if n < RUNS {
                out[n] = r;
                n += 1;
            }
        };
        let mut placed = false;
        for &(a, b) in &self.runs[..usize::from(self.n_runs)] {
            if b < lo {
                push((a, b));
            } else if a > hi {
                if !placed {
                    push((lo, hi));
                    placed = true;
                }
                push((a, b));
            } else {
                lo = lo.min(a);
                hi = hi.max(b);
            }
        }
        if !placed {
            push((lo, hi));
        }
        self.runs = out;
        self.n_runs = n as u8;
    }
}

#[derive(Debug, Default)]
struct Groups {
    map: HashMap<Key, Group>,
    /// Groups by creation, for eviction; entries of groups already gone are
    /// skipped (their `seq` no longer matches).
    order: VecDeque<(Key, u64)>,
    seq: u64,
}

impl Groups {
    /// The share of fragment `f` of datagram `key`: `own` is its 5-tuple
    /// share, `fallback` its address pair and protocol share.
    #[inline(never)]
    fn place(
        &mut self,
        key: Key,
        f: &Frag,
        own: u32,
        fallback: impl FnOnce() -> u32,
        ts: i64,
    ) -> u32 {
        let live = |g: &Group| ts.saturating_sub(g.last_ts) <= GROUP_IDLE_SECS;
        if !f.counts {
            // Zeek analyses such a first fragment alone and drops the others.
            return match self.map.get(&key) {
                _ if f.offset == 0 => own,
                Some(g) if live(g) => g.share,
                _ => fallback(),
            };
        }
        // Room for one more group, before the lookup borrows the map.
        while self.map.len() >= GROUPS_MAX || self.order.len() >= 2 * GROUPS_MAX {
            let Some((k, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|g| g.seq == seq) {
                self.map.remove(&k);
            }
        }
        let entry = match self.map.entry(key) {
            Entry::Occupied(mut o) if live(o.get()) => {
                let g = o.get_mut();
                let share = g.share;
                g.last_ts = g.last_ts.max(ts);
                if g.add(f) {
                    o.remove();
                }
                return share;
            }
            // Absent, or idle too long: a new group.
            entry => entry,
        };
        let share = if f.offset == 0 { own } else { fallback() };
        self.seq += 1;
        let mut g = Group {
            share,
            seq: self.seq,
            last_ts: ts,
            size: 0,
            runs: [(0, 0); RUNS],
            n_runs: 0,
        };
        if g.add(f) {
            // A group of one fragment: complete at once.
            if let Entry::Occupied(o) = entry {
                o.remove();
            }
        } else {
            entry.insert_entry(g);
            self.order.push_back((key, self.seq));
        }
        share
    }
}
