//! What a --connect target had in flight when its connection broke.
//!
//! A target's writer remembers the segments it wrote on the current
//! connection, each with where it ends in the connection's byte count, for
//! as long as the kernel may still hold them unacknowledged (at most the
//! socket's send buffer). When the connection breaks, the kernel's count of
//! bytes the receiver acknowledged (`TCP_INFO`'s `tcpi_bytes_acked`) splits
//! them: a packet whose last byte was acknowledged reached the receiver's
//! kernel (whatever the receiver then did with it is the receiver's to
//! count: the plugin reports it at exit); a packet after it was in flight,
//! and is lost. Over plain TCP the split is exact to the packet; over TLS
//! and zstd the byte counts are the wire's, not the stream's, and a write
//! batch is the unit (the batch that the acknowledgements stopped in counts
//! whole).

use std::collections::VecDeque;
use std::mem::{size_of, MaybeUninit};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use bytes::Bytes;

/// How a stream's records are framed, from its first header unit: what
/// the writer needs to cut a segment of packets at a packet boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// pcap: 16-byte record headers, the captured length at offset 8.
    Pcap { big_endian: bool },
    /// pcapng: the block's total length at offset 4.
    PcapNg { big_endian: bool },
}

impl Framing {
    /// The framing a header unit starts, if it is a pcap file header or a
    /// pcapng section header.
    pub fn of_header(unit: &[u8]) -> Option<Framing> {
        let magic: [u8; 4] = unit.get(..4)?.try_into().ok()?;
        match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => {
                Some(Framing::Pcap { big_endian: false })
            }
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => {
                Some(Framing::Pcap { big_endian: true })
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => match unit.get(8..12)? {
                [0x4d, 0x3c, 0x2b, 0x1a] => Some(Framing::PcapNg { big_endian: false }),
                [0x1a, 0x2b, 0x3c, 0x4d] => Some(Framing::PcapNg { big_endian: true }),
                _ => None,
            },
            _ => None,
        }
    }

    /// The length of the unit `data` starts with; None when `data` does
    /// not hold a whole one (a segment is whole units: it never should).
    fn unit_len(self, data: &[u8]) -> Option<usize> {
        let (at, base, big) = match self {
            Framing::Pcap { big_endian } => (8, 16usize, big_endian),
            Framing::PcapNg { big_endian } => (4, 0, big_endian),
        };
        let raw: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        let n = if big {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        };
        let len = base.checked_add(usize::try_from(n).ok()?)?;
        (len > 0 && len <= data.len()).then_some(len)
    }

    /// How many whole units of `data` (a segment of packets) end at or
    /// before `limit` bytes, and where the last of them ends. A segment
    /// that cannot be walked counts as having none.
    pub fn whole_before(self, data: &[u8], limit: usize) -> (u64, usize) {
        let (mut units, mut pos) = (0, 0);
        while pos < data.len() {
            let Some(len) = self.unit_len(&data[pos..]) else {
                return (units, pos);
            };
            if pos + len > limit {
                break;
            }
            pos += len;
            units += 1;
        }
        (units, pos)
    }

    /// Where the unit that contains byte `at` of `data` ends (`at` itself
    /// when a unit starts there); None when the walk fails.
    pub fn unit_end_after(self, data: &[u8], at: usize) -> Option<usize> {
        let mut pos = 0;
        while pos < at {
            pos += self.unit_len(&data[pos..])?;
        }
        Some(pos)
    }
}

/// `TCP_INFO` of `tcp`: the bytes its peer acknowledged since the start.
pub fn bytes_acked(tcp: &TcpStream) -> Option<u64> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes, and the kernel
    // writes at most `len` bytes into it (and says how many in `len`).
    let rc = unsafe {
        libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // A kernel older than the field (4.2) writes a shorter struct.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + size_of::<u64>();
    if rc != 0 || (len as usize) < needed {
        return None;
    }
    // SAFETY: zero-initialised, then written by the kernel: every field is
    // an integer, valid for any bits.
    Some(unsafe { info.assume_init() }.tcpi_bytes_acked)
}

/// Bytes written to `tcp` that its peer has not acknowledged yet
/// (`SIOCOUTQ`: sent or not).
pub fn unacknowledged(tcp: &TcpStream) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer.
    let rc = unsafe { libc::ioctl(tcp.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    (rc == 0).then(|| u64::try_from(n).unwrap_or(0))
}

/// One segment written on the connection.
struct Written {
    /// Where it starts and ends in the connection's byte count (the
    /// ciphertext's over TLS).
    start: u64,
    end: u64,
    data: Bytes,
    packets: u64,
    /// `start..end` are the segment's own bytes (plain TCP), so that the
    /// acknowledged point can be placed between its packets.
    exact: bool,
}

/// The segments a kept client's writer wrote on one connection, for as
/// long as they may be unacknowledged.
pub struct Flight {
    written: VecDeque<Written>,
    /// Bytes handed to the kernel on this connection.
    pos: u64,
    /// Bytes of the segments kept; at most about `keep` (the kernel never
    /// holds more than its send buffer unacknowledged).
    kept: usize,
    keep: usize,
    /// `tcpi_bytes_acked` when the connection was new: a SYN may count.
    baseline: u64,
    pub framing: Option<Framing>,
    /// Where the connection's byte count stood when the receiver was first
    /// seen to have closed its end (a FIN).
    closed_at: Option<u64>,
}

impl Flight {
    pub fn new(tcp: &TcpStream) -> Flight {
        let sndbuf = socket2::SockRef::from(tcp)
            .send_buffer_size()
            .unwrap_or(4 << 20);
        Flight {
            written: VecDeque::new(),
            pos: 0,
            kept: 0,
            keep: sndbuf.max(1 << 20),
            baseline: bytes_acked(tcp).unwrap_or(0),
            framing: None,
            closed_at: None,
        }
    }

    /// Looks (without blocking, and taking nothing) whether the receiver
    /// closed its end, and notes where the stream stood then. A receiver
    /// that closed altogether takes nothing written after that point (its
    /// kernel answers it with a reset): at the break, what its kernel did
    /// not acknowledge of it is sent again, not lost. One that only closed
    /// its sending side (`ncat` with its standard input at the end) goes on
    /// reading and acknowledging, and nothing is sent twice.
    pub fn note_peer_closed(&mut self, tcp: Option<&TcpStream>) {
        if self.closed_at.is_some() {
            return;
        }
        let Some(tcp) = tcp else { return };
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        let peek = socket2::SockRef::from(tcp)
            .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
        if matches!(peek, Ok(0)) {
            self.closed_at = Some(self.pos);
        }
    }

    /// The segments written after the receiver closed its end of which its
    /// kernel acknowledged nothing, taken out of the record, in order (with
    /// their packets): never read, to be sent again.
    pub fn take_unread_after_close(&mut self, tcp: Option<&TcpStream>) -> Vec<(Bytes, u64)> {
        let Some(closed_at) = self.closed_at else {
            return Vec::new();
        };
        let acked = self.acked(tcp);
        let mut again = Vec::new();
        while let Some(w) = self.written.back() {
            if !w.exact || w.start < closed_at || w.start < acked {
                break;
            }
            let w = self.written.pop_back().expect("a last segment");
            self.kept -= w.data.len();
            again.push((w.data, w.packets));
        }
        again.reverse();
        again
    }

    fn acked(&self, tcp: Option<&TcpStream>) -> u64 {
        tcp.and_then(bytes_acked)
            .map(|a| a.saturating_sub(self.baseline))
            .unwrap_or(0)
    }

    /// `data` (`packets` of them packets) went to the kernel whole, or only
    /// its first `taken` bytes; `tls_end`: over TLS, where the kernel's
    /// count stood after it (the segment's bytes are then not the wire's).
    pub fn wrote(&mut self, data: &Bytes, packets: u64, taken: usize, tls_end: Option<u64>) {
        if self.framing.is_none() && packets == 0 {
            self.framing = Framing::of_header(data);
        }
        let tls_end = tls_end.map(|e| e.saturating_sub(self.baseline));
        let start = self.pos;
        self.pos = match tls_end {
            Some(end) => end.max(self.pos),
            None => self.pos + taken as u64,
        };
        let end = match tls_end {
            Some(_) => self.pos,
            // A cut unit is in flight: it ends past what the kernel took.
            None => start + data.len() as u64,
        };
        self.kept += data.len();
        self.written.push_back(Written {
            start,
            end,
            data: data.clone(),
            packets,
            exact: tls_end.is_none(),
        });
        while self.kept > self.keep {
            match self.written.pop_front() {
                Some(w) => self.kept -= w.data.len(),
                None => break,
            }
        }
    }

    /// The packets in flight when the connection broke: written, but not
    /// acknowledged by the receiver as a whole. None when the kernel does
    /// not say what was acknowledged: then every packet kept counts.
    pub fn lost(&self, tcp: Option<&TcpStream>) -> u64 {
        let acked = self.acked(tcp);
        let mut lost = 0;
        for w in self.written.iter().rev() {
            if w.end <= acked {
                break;
            }
            if w.exact && w.start < acked {
                if let Some(f) = self.framing {
                    let (whole, _) = f.whole_before(&w.data, (acked - w.start) as usize);
                    lost += w.packets.saturating_sub(whole);
                    continue;
                }
            }
            lost += w.packets;
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_records(lens: &[usize]) -> Vec<u8> {
        let mut v = Vec::new();
        for &n in lens {
            v.extend_from_slice(&[0; 8]);
            v.extend_from_slice(&(n as u32).to_le_bytes());
            v.extend_from_slice(&(n as u32).to_le_bytes());
            v.extend(std::iter::repeat_n(7u8, n));
        }
        v
    }

    #[test]
    fn framing_is_read_from_the_header_units() {
        assert_eq!(
            Framing::of_header(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]),
            Some(Framing::Pcap { big_endian: false })
        );
        assert_eq!(
            Framing::of_header(&[0xa1, 0xb2, 0x3c, 0x4d]),
            Some(Framing::Pcap { big_endian: true })
        );
        let shb = [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
        assert_eq!(
            Framing::of_header(&shb),
            Some(Framing::PcapNg { big_endian: false })
        );
        assert_eq!(Framing::of_header(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn a_segment_is_split_at_packet_boundaries() {
        let f = Framing::Pcap { big_endian: false };
        let data = pcap_records(&[10, 20, 30]);
        // 26, 36 and 46 bytes.
        assert_eq!(f.whole_before(&data, 0), (0, 0));
        assert_eq!(f.whole_before(&data, 61), (1, 26));
        assert_eq!(f.whole_before(&data, 62), (2, 62));
        assert_eq!(f.whole_before(&data, 1000), (3, 108));
        assert_eq!(f.unit_end_after(&data, 27), Some(62));
        assert_eq!(f.unit_end_after(&data, 26), Some(26));
        // A length that runs past the segment stops the walk.
        let mut bad = data.clone();
        bad[8] = 200;
        assert_eq!(f.whole_before(&bad, 1000), (0, 0));
        assert_eq!(f.unit_end_after(&bad, 1), None);
    }

    #[test]
    fn packets_past_the_acknowledged_point_are_lost() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut f = Flight::new(&tcp);
        f.framing = Some(Framing::Pcap { big_endian: false });
        let seg = Bytes::from(pcap_records(&[10, 20, 30]));
        f.wrote(&seg, 3, seg.len(), None);
        f.wrote(&seg, 3, seg.len(), None);
        // Nothing written to the socket: nothing acknowledged, all lost.
        assert_eq!(f.lost(Some(&tcp)), 6);
        assert_eq!(f.lost(None), 6);
        // The first segment and the first packet of the second reach the
        // peer's kernel (acknowledged): 2 packets were in flight.
        use std::io::Write;
        (&tcp).write_all(&seg).unwrap();
        (&tcp).write_all(&seg[..26]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while bytes_acked(&tcp).map(|a| a - f.baseline) != Some(seg.len() as u64 + 26) {
            assert!(std::time::Instant::now() < deadline, "not acknowledged");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(f.lost(Some(&tcp)), 2);
    }
}
