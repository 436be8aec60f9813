//! What bench/core.rs and bench/tls_core.rs share: the synthetic stream
//! they send, and the consumer that takes its packets the way the Zeek shim
//! does and reads every byte.

use std::time::Duration;

use pcapovertcp::{Next, Source};

/// A stream: a global header, then `body` repeated `repeat` times.
pub struct Stream {
    pub name: String,
    pub header: Vec<u8>,
    pub body: Vec<u8>,
    pub packets_per_body: u64,
    pub repeat: u64,
}

impl Stream {
    pub fn packets(&self) -> u64 {
        self.packets_per_body * self.repeat
    }

    pub fn bytes(&self) -> u64 {
        self.header.len() as u64 + self.body.len() as u64 * self.repeat
    }
}

/// A little-endian microsecond Ethernet pcap header.
pub fn pcap_header() -> Vec<u8> {
    let mut h = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(&262_144u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// Packets of `size` bytes, about 8 MiB of them repeated to make at least
/// `total_packets`.
pub fn synthetic(size: usize, total_packets: u64) -> Stream {
    let per_body = ((8 << 20) / (size + 16)).max(1) as u64;
    let mut body = Vec::new();
    for i in 0..per_body {
        body.extend_from_slice(&(1_700_000_000u32 + (i / 1000) as u32).to_le_bytes());
        body.extend_from_slice(&((i % 1000) as u32 * 1000).to_le_bytes());
        body.extend_from_slice(&(size as u32).to_le_bytes());
        body.extend_from_slice(&(size as u32).to_le_bytes());
        body.extend((0..size).map(|j| (i as usize + j) as u8));
    }
    Stream {
        name: format!("{size} B"),
        header: pcap_header(),
        body,
        packets_per_body: per_body,
        repeat: total_packets.div_ceil(per_body),
    }
}

/// Takes every packet of `source` to its end as the shim does (waiting on
/// the selectable fd when there is none) and reads every byte: the packet
/// count and a checksum.
pub fn consume(source: &mut Source) -> (u64, u64) {
    let (mut packets, mut checksum) = (0u64, 0u64);
    loop {
        match source.next_packet() {
            Next::Packet(p) => {
                packets += 1;
                checksum = checksum.wrapping_add(sum_bytes(p.data));
            }
            Next::Empty => {
                source.wait(Duration::from_millis(100));
            }
            Next::Ended => return (packets, checksum),
        }
    }
}

/// Reads every byte of a packet, a word at a time as memcpy or a checksum
/// would (a byte-at-a-time loop measured the loop, not the transport).
fn sum_bytes(data: &[u8]) -> u64 {
    let words = data.chunks_exact(8);
    let tail = words.remainder().iter().map(|&b| u64::from(b)).sum::<u64>();
    words
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        .fold(tail, u64::wrapping_add)
}
