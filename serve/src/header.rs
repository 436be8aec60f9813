//! The header blocks a client that joins the relay later gets first: the
//! pcap file header, or pcapng's section header and interfaces, kept up to
//! MAX_HEADER bytes so that an input cannot make the tool keep without
//! bound what it sends before (or between) its packets. Blocks a reader
//! can do without (name resolution, custom blocks) take at most half of
//! it, so that a flood of them leaves room for the interfaces.

use bytes::Bytes;

/// What is kept of the header blocks at most, together.
pub const MAX_HEADER: usize = 1 << 20;
/// What blocks other than section headers and interfaces take of it.
pub const MAX_OTHER: usize = MAX_HEADER / 2;

/// What `observe` has to report (once per stream).
#[derive(Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Blocks that are neither a section header nor an interface were not
    /// kept: joining clients do without them.
    Dropped,
    /// An interface block was not kept: a joining client cannot be given
    /// a valid stream (its packets may refer to that interface).
    Incomplete,
}

#[derive(Default)]
pub struct Header {
    pub units: Vec<Bytes>,
    /// Bytes in `units`.
    bytes: usize,
    /// A packet came: later blocks are no longer header, but for pcapng's
    /// interface descriptions (packets may refer to them) and a new
    /// section (which starts a new header).
    done: bool,
    pcapng: bool,
    big_endian: bool,
    /// Overflow::Dropped was reported for this stream.
    said_dropped: bool,
    /// An interface block was not kept (see Overflow::Incomplete).
    pub incomplete: bool,
}

impl Header {
    /// Takes note of one unit of the stream; an overflow to report, the
    /// first time one happens in the stream.
    pub fn observe(&mut self, unit: &[u8], is_packet: bool) -> Option<Overflow> {
        if is_packet {
            self.done = true;
            return None;
        }
        if unit.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            self.pcapng = true;
            self.big_endian = unit.get(8..12) == Some(&[0x1a, 0x2b, 0x3c, 0x4d][..]);
            if self.done {
                *self = Header {
                    pcapng: true,
                    big_endian: self.big_endian,
                    ..Header::default()
                };
            }
        }
        let is_interface = || {
            let t = [unit[0], unit[1], unit[2], unit[3]];
            let t = if self.big_endian {
                u32::from_be_bytes(t)
            } else {
                u32::from_le_bytes(t)
            };
            t == 1
        };
        let interface = self.pcapng && unit.len() >= 4 && is_interface();
        if self.done && !interface {
            return None;
        }
        let needed = interface || self.units.is_empty();
        let bound = if needed { MAX_HEADER } else { MAX_OTHER };
        if self.bytes + unit.len() <= bound {
            self.bytes += unit.len();
            self.units.push(Bytes::copy_from_slice(unit));
            return None;
        }
        if needed {
            let first = !self.incomplete;
            self.incomplete = true;
            return first.then_some(Overflow::Incomplete);
        }
        let first = !self.said_dropped;
        self.said_dropped = true;
        first.then_some(Overflow::Dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_client_gets_the_header_and_later_interfaces() {
        // pcapng (little-endian): SHB, IDB, EPB-like packet unit, IDB.
        let mut h = Header::default();
        let shb = [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
        let idb = [1, 0, 0, 0, 20, 0, 0, 0];
        let nrb = [4, 0, 0, 0, 12, 0, 0, 0];
        h.observe(&shb, false);
        h.observe(&idb, false);
        h.observe(&[6, 0, 0, 0], true);
        h.observe(&nrb, false);
        h.observe(&idb, false);
        assert_eq!(h.units.len(), 3);
        // A new section starts a new header.
        h.observe(&shb, false);
        assert_eq!(h.units.len(), 1);
    }

    #[test]
    fn the_header_is_bounded_and_a_missing_interface_is_reported() {
        let mut h = Header::default();
        let shb = [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
        assert_eq!(h.observe(&shb, false), None);
        let mut custom = vec![0u8; 64 << 10];
        custom[..4].copy_from_slice(&0xbadu32.to_le_bytes());
        let mut reports = Vec::new();
        for _ in 0..100 {
            reports.extend(h.observe(&custom, false));
        }
        assert_eq!(reports, [Overflow::Dropped]);
        assert!(h.bytes <= MAX_OTHER && !h.incomplete);
        // Interfaces still fit, up to MAX_HEADER.
        let mut idb = vec![0u8; 64 << 10];
        idb[0] = 1;
        assert_eq!(h.observe(&idb, false), None);
        let mut reports = Vec::new();
        for _ in 0..20 {
            reports.extend(h.observe(&idb, false));
        }
        assert_eq!(reports, [Overflow::Incomplete]);
        assert!(h.incomplete && h.bytes <= MAX_HEADER);
    }
}
