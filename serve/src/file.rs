//! Serving a file: each client (or target) reads it at its own pace, from
//! its start, optionally looped and rate-limited.

use std::fs;
use std::io::{self, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pcapovertcp::parse::{Limits, StreamParser};

use crate::conn::Conn;
use crate::stats::ClientStats;

/// Records written at once on the fast path (and counted between writes,
/// so that SIGUSR1 shows progress).
const WRITE_RUN: usize = 256 * 1024;

/// A stream cut into its units: the header blocks, then one unit per record.
pub struct Framed {
    data: Vec<u8>,
    /// Where the first packet starts: before it, the header blocks.
    header_end: usize,
    /// Where the last whole unit ends.
    units_end: usize,
    /// (start, end) of each packet unit.
    packets: Vec<(usize, usize)>,
    /// For pcap: whether multi-byte fields are big-endian.
    pcap_big_endian: Option<bool>,
    first_ts: i64,
    last_ts: i64,
}

fn frame(data: Vec<u8>) -> Result<Framed, String> {
    let mut parser = StreamParser::new(Limits::default());
    let mut header_end = None;
    let mut packets = Vec::new();
    let (mut first_ts, mut last_ts) = (None, 0);
    let consumed = parser
        .parse_units(&data, |range, record| {
            if let Some(r) = record {
                header_end.get_or_insert(range.start);
                first_ts.get_or_insert(r.ts_sec);
                last_ts = r.ts_sec;
                packets.push((range.start, range.end));
            }
        })
        .map_err(|e| e.to_string())?;
    if consumed != data.len() {
        log::warn!(
            "the last {} bytes are not a whole record; they are not sent",
            data.len() - consumed
        );
    }
    let pcap_big_endian = match data.get(..4) {
        Some([0xa1, 0xb2, ..]) => Some(true),
        Some([_, _, 0xb2, 0xa1]) => Some(false),
        _ => None,
    };
    Ok(Framed {
        header_end: header_end.unwrap_or(consumed),
        units_end: consumed,
        data,
        packets,
        pcap_big_endian,
        first_ts: first_ts.unwrap_or(0),
        last_ts,
    })
}

/// Reads and frames the file to serve; an unreadable or invalid one is one
/// line.
pub fn load(input: &str) -> Result<Arc<Framed>, String> {
    fs::read(input)
        .map_err(|e| e.to_string())
        .and_then(frame)
        .map(Arc::new)
        .map_err(|e| format!("{input}: {e}"))
}

/// Paces writes to a packet rate.
struct Pacer {
    rate: Option<f64>,
    start: Instant,
    sent: u64,
}

impl Pacer {
    fn tick(&mut self) {
        let Some(rate) = self.rate else { return };
        self.sent += 1;
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
    }
}

/// Sends the file (`loops` times; 0: for ever) to `out`, counting in `stats`.
pub fn serve_file(
    out: &mut Conn,
    framed: &Framed,
    loops: u64,
    rate: Option<f64>,
    stats: &ClientStats,
) -> io::Result<()> {
    let _ = out.tcp().set_nodelay(true);
    let header = &framed.data[..framed.header_end];
    out.write_all(header)?;
    stats.sent(0, header.len() as u64);
    if framed.packets.is_empty() {
        // Nothing to repeat: --loop 0 would spin for ever sending nothing.
        return Ok(());
    }
    let mut pacer = Pacer {
        rate,
        start: Instant::now(),
        sent: 0,
    };
    let span = (framed.last_ts - framed.first_ts + 1).max(1);
    let mut round: u64 = 0;
    let mut scratch = Vec::new();
    while loops == 0 || round < loops {
        let shift = span.saturating_mul(round as i64);
        if rate.is_none() && shift == 0 {
            // The fast path: the units as they are (the blocks between and
            // after the packets too), in runs of whole units.
            let (mut start, mut count) = (framed.header_end, 0);
            for (i, &(_, end)) in framed.packets.iter().enumerate() {
                count += 1;
                let last = i + 1 == framed.packets.len();
                let end = if last { framed.units_end } else { end };
                if end - start >= WRITE_RUN || last {
                    out.write_all(&framed.data[start..end])?;
                    stats.sent(count, (end - start) as u64);
                    (start, count) = (end, 0);
                }
            }
        } else {
            for &(start, end) in &framed.packets {
                let unit = &framed.data[start..end];
                match framed.pcap_big_endian {
                    Some(big) if shift != 0 => {
                        scratch.clear();
                        scratch.extend_from_slice(unit);
                        let ts = [unit[0], unit[1], unit[2], unit[3]];
                        let old = if big {
                            u32::from_be_bytes(ts)
                        } else {
                            u32::from_le_bytes(ts)
                        };
                        let new = (i64::from(old) + shift) as u32;
                        let bytes = if big {
                            new.to_be_bytes()
                        } else {
                            new.to_le_bytes()
                        };
                        scratch[..4].copy_from_slice(&bytes);
                        out.write_all(&scratch)?;
                    }
                    _ => out.write_all(unit)?,
                }
                stats.sent(1, unit.len() as u64);
                pacer.tick();
            }
        }
        round += 1;
    }
    out.flush()
}
