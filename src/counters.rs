//! What the reader thread counts, readable at any time from the main thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
    bytes: AtomicU64,
    records: AtomicU64,
    dropped: AtomicU64,
    truncated: AtomicU64,
    corrupt: AtomicU64,
    connected: Mutex<Connected>,
}

#[derive(Debug, Default)]
struct Connected {
    total: Duration,
    since: Option<Instant>,
}

/// A consistent-enough copy of the counters for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    /// Connections established.
    pub connects: u64,
    /// Connections that ended (closed, failed, or found corrupt).
    pub disconnects: u64,
    /// Bytes read from the socket.
    pub bytes: u64,
    /// Records parsed from the stream.
    pub records: u64,
    /// Records dropped because the buffer was full (`drop_when_full`).
    pub dropped: u64,
    /// Records cut off by the end of a connection.
    pub truncated: u64,
    /// Connections whose stream turned out not to be valid pcap/pcapng.
    pub corrupt: u64,
    /// Time spent connected, the current connection included.
    pub connected: Duration,
}

/// One counter as script land sees it: the `PcapOverTcp::Stats` field it
/// fills, by name, and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    Count(&'static str, u64),
    Interval(&'static str, Duration),
}

impl Snapshot {
    /// The counters by their `PcapOverTcp::Stats` field names (types.zeek):
    /// the one list the shim fills the record from.
    pub fn fields(&self) -> [Field; 8] {
        use Field::{Count, Interval};
        [
            Count("connects", self.connects),
            Count("disconnects", self.disconnects),
            Count("bytes", self.bytes),
            Count("records", self.records),
            Count("dropped", self.dropped),
            Count("truncated", self.truncated),
            Count("corrupt", self.corrupt),
            Interval("connected", self.connected),
        ]
    }
}

impl Counters {
    pub fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let mut c = lock(&self.connected);
        c.since = Some(Instant::now());
    }

    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
        let mut c = lock(&self.connected);
        if let Some(since) = c.since.take() {
            c.total += since.elapsed();
        }
    }

    pub fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_records(&self, n: usize) {
        self.records.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_dropped(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_truncated(&self) {
        self.truncated.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_corrupt(&self) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    /// Records parsed so far; cheap (for per-packet statistics).
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Records lost by the source: dropped while full, or cut by a disconnect.
    pub fn lost(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) + self.truncated.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        let connected = {
            let c = lock(&self.connected);
            c.total + c.since.map_or(Duration::ZERO, |s| s.elapsed())
        };
        Snapshot {
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            connected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `PcapOverTcp::Stats` record of scripts/types.zeek, as
    /// (field, type) pairs in order.
    fn stats_record() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/types.zeek");
        let text = std::fs::read_to_string(path).unwrap();
        let body = text
            .split_once("type Stats: record {")
            .and_then(|(_, rest)| rest.split_once("};"))
            .map(|(body, _)| body)
            .expect("a Stats record in types.zeek");
        body.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("##") && l.ends_with(';'))
            .filter_map(|l| {
                let (name, ty) = l.trim_end_matches(';').split_once(':')?;
                Some((name.trim().to_string(), ty.trim().to_string()))
            })
            .collect()
    }

    #[test]
    fn the_counter_list_is_the_stats_record_of_types_zeek() {
        let ours: Vec<(String, String)> = Snapshot::default()
            .fields()
            .iter()
            .map(|f| match f {
                Field::Count(name, _) => (name.to_string(), "count".to_string()),
                Field::Interval(name, _) => (name.to_string(), "interval".to_string()),
            })
            .collect();
        assert_eq!(ours, stats_record());
    }
}
