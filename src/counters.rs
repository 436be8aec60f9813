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
