//! What the connections count, readable at any time from the main thread:
//! one set of counters per sender (a connect endpoint, or a listening
//! source's sender address), and their sum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::shared::sync::lock;
use std::time::{Duration, Instant};

/// Senders beyond this many distinct addresses are counted together under
/// [`OTHER_SENDERS`], so that a scan of the listening port cannot grow the
/// list without bound.
pub const MAX_SENDERS_LISTED: usize = 1024;
pub const OTHER_SENDERS: &str = "other";

#[derive(Debug, Default)]
pub struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
    bytes: AtomicU64,
    records: AtomicU64,
    dropped: AtomicU64,
    upstream_dropped: AtomicU64,
    truncated: AtomicU64,
    corrupt: AtomicU64,
    late: AtomicU64,
    skewed: AtomicU64,
    /// Set once, when the source closes (see [`Counters::set_unanalysed`]).
    unanalysed: AtomicU64,
    /// Records read from the socket at close (also in `records`), for
    /// the closing line's split of `unanalysed`.
    unread: AtomicU64,
    /// Nanoseconds its newest packet was behind the merge's front, as of
    /// its last read.
    lag: AtomicU64,
    outages: AtomicU64,
    other_share: AtomicU64,
    connected: Mutex<Connected>,
    /// Time spent waiting for buffer space (TCP backpressure).
    backpressure: Mutex<Backpressure>,
}

/// A push that lasts this long counts as waiting for room while it lasts;
/// one that does not wait takes microseconds.
pub const ONGOING_AFTER: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct Backpressure {
    /// Finished waits.
    total: Duration,
    /// When the push under way began (one at a time per connection; of
    /// several connections from one address, the latest).
    pushing: Option<Instant>,
}

impl Backpressure {
    /// What a snapshot shows now: the ongoing wait included once it has
    /// lasted [`ONGOING_AFTER`], so that a sender blocked for minutes shows
    /// its backpressure growing, not only when the wait ends.
    fn now(&self) -> Duration {
        let ongoing = self
            .pushing
            .map(|since| since.elapsed())
            .filter(|d| *d >= ONGOING_AFTER)
            .unwrap_or_default();
        self.total + ongoing
    }
}

#[derive(Debug, Default)]
struct Connected {
    /// Closed connections' time.
    total: Duration,
    /// When each open connection began (several may share an address).
    open: Vec<Instant>,
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
    /// Packets the capture host says it dropped (pcapng EPB and ISB drop
    /// counts, see [`crate::stream::parse::Drops`]): lost before the stream.
    pub upstream_dropped: u64,
    /// Records cut off by the end of a connection.
    pub truncated: u64,
    /// Connections whose stream turned out not to be valid pcap/pcapng.
    pub corrupt: u64,
    /// Records older than a record the merge had already released
    /// (delivered all the same).
    pub late: u64,
    /// Records dated too far after this host's clock and the merge's front
    /// (`merge_max_skew`), dropped.
    pub skewed: u64,
    /// Records received but never analysed: when the source closed, still
    /// in its buffer (the hand-off, the merge, a batch being handed on) or
    /// unread in a connection's socket (read then, without waiting, and
    /// counted in `records` too). Not those `dropped` or `skewed`. 0 until
    /// the source closes.
    pub unanalysed: u64,
    /// How far its newest packet was behind the merge's front at its last
    /// read (packet time; the largest of any sender's in a total).
    pub lag: Duration,
    /// Outages: a connection lost and not yet back (connect endpoints).
    pub outages: u64,
    /// Records of other workers' shares (`?share=I/N`), discarded.
    pub other_share: u64,
    /// Connections open now.
    pub open: u64,
    /// Time spent waiting for buffer space, while TCP slowed the sender.
    pub backpressure: Duration,
    /// Time spent connected, the current connection included (summed over
    /// connections for a total).
    pub connected: Duration,
}

/// One counter as script land sees it: the `PcapOverTcp::Stats` field it
/// fills, by name, and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    Count(&'static str, u64),
    Interval(&'static str, Duration),
    /// A count that goes up and down (a `count` field too).
    Level(&'static str, u64),
    /// An interval that goes up and down.
    IntervalLevel(&'static str, Duration),
}

impl Snapshot {
    /// The counters by their `PcapOverTcp::Stats` field names (types.zeek):
    /// the one list the shim fills the record from.
    pub fn fields(&self) -> [Field; 17] {
        use Field::{Count, Interval, IntervalLevel, Level};
        [
            Count("connects", self.connects),
            Count("disconnects", self.disconnects),
            Count("bytes", self.bytes),
            Count("records", self.records),
            Count("dropped", self.dropped),
            Count("upstream_dropped", self.upstream_dropped),
            Count("truncated", self.truncated),
            Count("corrupt", self.corrupt),
            Count("late", self.late),
            Count("skewed", self.skewed),
            Count("unanalysed", self.unanalysed),
            IntervalLevel("lag", self.lag),
            Count("outages", self.outages),
            Count("other_share", self.other_share),
            Level("open", self.open),
            Interval("backpressure", self.backpressure),
            Interval("connected", self.connected),
        ]
    }

    fn add(mut self, o: &Snapshot) -> Snapshot {
        self.connects += o.connects;
        self.disconnects += o.disconnects;
        self.bytes += o.bytes;
        self.records += o.records;
        self.dropped += o.dropped;
        self.upstream_dropped += o.upstream_dropped;
        self.truncated += o.truncated;
        self.corrupt += o.corrupt;
        self.late += o.late;
        self.skewed += o.skewed;
        self.unanalysed += o.unanalysed;
        self.lag = self.lag.max(o.lag);
        self.outages += o.outages;
        self.other_share += o.other_share;
        self.open += o.open;
        self.backpressure += o.backpressure;
        self.connected += o.connected;
        self
    }
}

impl Counters {
    pub fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let mut c = lock(&self.connected);
        c.open.push(Instant::now());
    }

    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
        let mut c = lock(&self.connected);
        // Which connection ended does not matter: the sum of the open ones'
        // times plus the closed ones' comes out the same.
        if let Some(since) = c.open.pop() {
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

    pub fn add_upstream_dropped(&self, n: u64) {
        self.upstream_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Upstream drops so far; cheap.
    pub fn upstream_dropped(&self) -> u64 {
        self.upstream_dropped.load(Ordering::Relaxed)
    }

    pub fn add_truncated(&self) {
        self.truncated.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_corrupt(&self) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_late(&self, n: u64) {
        self.late.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_skewed(&self, n: usize) {
        self.skewed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records read from the socket when the source closed: counted as
    /// parsed, and later as unanalysed.
    pub fn add_unread(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
        self.unread.fetch_add(n, Ordering::Relaxed);
    }

    /// Records read from the socket when the source closed (part of
    /// `records`).
    pub fn unread(&self) -> u64 {
        self.unread.load(Ordering::Relaxed)
    }

    /// The records received and never analysed, found when the source
    /// closed.
    pub fn set_unanalysed(&self, n: u64) {
        self.unanalysed.store(n, Ordering::Relaxed);
    }

    pub fn set_lag(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.lag.store(ns, Ordering::Relaxed);
    }

    pub fn add_outage(&self) {
        self.outages.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_other_share(&self, n: usize) {
        self.other_share.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A push of records begins (it may wait for room).
    pub fn push_started(&self) {
        lock(&self.backpressure).pushing = Some(Instant::now());
    }

    /// The push ended, after waiting `waited` for room. A push that lasted
    /// [`ONGOING_AFTER`] counts whole, so that the total never falls below
    /// what a snapshot showed during it.
    pub fn push_ended(&self, waited: Duration) {
        let mut b = lock(&self.backpressure);
        let lasted = b.pushing.take().map(|s| s.elapsed()).unwrap_or_default();
        b.total += if lasted >= ONGOING_AFTER {
            lasted.max(waited)
        } else {
            waited
        };
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
        let (connected, open) = {
            let c = lock(&self.connected);
            (
                c.open.iter().fold(c.total, |t, s| t + s.elapsed()),
                c.open.len() as u64,
            )
        };
        Snapshot {
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            upstream_dropped: self.upstream_dropped.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            skewed: self.skewed.load(Ordering::Relaxed),
            unanalysed: self.unanalysed.load(Ordering::Relaxed),
            lag: Duration::from_nanos(self.lag.load(Ordering::Relaxed)),
            outages: self.outages.load(Ordering::Relaxed),
            other_share: self.other_share.load(Ordering::Relaxed),
            open,
            backpressure: lock(&self.backpressure).now(),
            connected,
        }
    }
}

/// Every sender's counters, in order of first appearance. A sender keeps its
/// entry after it leaves, so that totals never go down.
#[derive(Debug, Default)]
pub struct Registry {
    senders: Mutex<Vec<(String, Arc<Counters>)>>,
}

impl Registry {
    /// The counters of `address`, created on first use.
    pub fn sender(&self, address: &str) -> Arc<Counters> {
        self.sender_indexed(address).1
    }

    /// The counters of `address`, created on first use, and their index in
    /// order of first appearance (which marks its packets' input).
    pub fn sender_indexed(&self, address: &str) -> (u32, Arc<Counters>) {
        let mut senders = lock(&self.senders);
        let address = match senders.iter().position(|(a, _)| a == address) {
            Some(i) => return (i as u32, senders[i].1.clone()),
            None if senders.len() >= MAX_SENDERS_LISTED => OTHER_SENDERS,
            None => address,
        };
        if let Some(i) = senders.iter().position(|(a, _)| a == address) {
            return (i as u32, senders[i].1.clone());
        }
        let c = Arc::new(Counters::default());
        senders.push((address.to_string(), c.clone()));
        ((senders.len() - 1) as u32, c)
    }

    /// The counters of the `index`th sender (in order of first appearance).
    pub fn sender_at(&self, index: usize) -> Option<Snapshot> {
        lock(&self.senders).get(index).map(|(_, c)| c.snapshot())
    }

    /// The `index`th sender's address (a connect endpoint as written, a
    /// listening sender's IP address, or [`OTHER_SENDERS`]).
    pub fn address_at(&self, index: usize) -> Option<String> {
        lock(&self.senders).get(index).map(|(a, _)| a.clone())
    }

    /// How many senders there are.
    pub fn count(&self) -> usize {
        lock(&self.senders).len()
    }

    /// Each sender's counters.
    pub fn senders(&self) -> Vec<(String, Snapshot)> {
        lock(&self.senders)
            .iter()
            .map(|(a, c)| (a.clone(), c.snapshot()))
            .collect()
    }

    /// The sum over all senders.
    pub fn total(&self) -> Snapshot {
        lock(&self.senders)
            .iter()
            .fold(Snapshot::default(), |sum, (_, c)| sum.add(&c.snapshot()))
    }

    /// The source has closed and its threads have ended: each sender's
    /// records neither taken by the consumer (`taken`, by sender index)
    /// nor dropped nor skewed were received and never analysed; sets its
    /// `unanalysed`. Returns the total, and how many of them were read
    /// from the sockets at close.
    pub fn settle_unanalysed(&self, taken: &[u64]) -> (u64, u64) {
        let senders = lock(&self.senders);
        let (mut total, mut unread) = (0u64, 0u64);
        for (i, (_, c)) in senders.iter().enumerate() {
            let gone = c.dropped.load(Ordering::Relaxed)
                + c.skewed.load(Ordering::Relaxed)
                + taken.get(i).copied().unwrap_or(0);
            let left = c.records().saturating_sub(gone);
            c.set_unanalysed(left);
            total += left;
            unread += c.unread().min(left);
        }
        (total, unread)
    }

    /// Records parsed, records lost by the reader and packets dropped
    /// upstream, summed; cheap enough for Zeek's periodic statistics.
    pub fn records_and_lost(&self) -> (u64, u64, u64) {
        lock(&self.senders)
            .iter()
            .fold((0, 0, 0), |(r, l, u), (_, c)| {
                (r + c.records(), l + c.lost(), u + c.upstream_dropped())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of record `name` in scripts/types.zeek, as (field, type)
    /// pairs in order, without `skip`.
    fn record(name: &str, skip: &str) -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/types.zeek");
        let text = std::fs::read_to_string(path).unwrap();
        let body = text
            .split_once(&format!("type {name}: record {{"))
            .and_then(|(_, rest)| rest.split_once("};"))
            .map(|(body, _)| body)
            .unwrap_or_else(|| panic!("a {name} record in types.zeek"));
        body.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("##") && l.ends_with(';'))
            .filter_map(|l| {
                let (name, ty) = l.trim_end_matches(';').split_once(':')?;
                Some((name.trim().to_string(), ty.trim().to_string()))
            })
            .filter(|(field, _)| field != skip)
            .collect()
    }

    fn ours() -> Vec<(String, String)> {
        Snapshot::default()
            .fields()
            .iter()
            .map(|f| match f {
                Field::Count(name, _) | Field::Level(name, _) => {
                    (name.to_string(), "count".to_string())
                }
                Field::Interval(name, _) | Field::IntervalLevel(name, _) => {
                    (name.to_string(), "interval".to_string())
                }
            })
            .collect()
    }

    #[test]
    fn the_counter_list_is_the_stats_and_sender_records_of_types_zeek() {
        assert_eq!(ours(), record("Stats", "senders"));
        assert_eq!(ours(), record("Sender", "address"));
    }

    #[test]
    fn a_wait_under_way_shows_in_backpressure_and_the_total_never_falls() {
        let c = Counters::default();
        c.push_started();
        std::thread::sleep(ONGOING_AFTER * 3);
        let during = c.snapshot().backpressure;
        assert!(during >= ONGOING_AFTER * 3, "{during:?}");
        // The push reports less waiting than a snapshot showed: the total
        // still does not fall.
        c.push_ended(Duration::from_millis(1));
        assert!(c.snapshot().backpressure >= during);
        // A quick push that did not wait adds nothing.
        let before = c.snapshot().backpressure;
        c.push_started();
        c.push_ended(Duration::ZERO);
        assert_eq!(c.snapshot().backpressure, before);
    }

    #[test]
    fn totals_sum_the_senders_and_the_list_is_bounded() {
        let r = Registry::default();
        r.sender("10.0.0.1").add_records(3);
        r.sender("10.0.0.2").add_records(4);
        r.sender("10.0.0.1").add_dropped(1);
        r.sender("10.0.0.2").add_upstream_dropped(5);
        assert_eq!(r.total().records, 7);
        assert_eq!(r.total().upstream_dropped, 5);
        assert_eq!(r.records_and_lost(), (7, 1, 5));
        for i in 0..2000 {
            r.sender(&format!("10.1.{}.{}", i / 256, i % 256))
                .add_records(1);
        }
        let senders = r.senders();
        assert_eq!(senders.len(), MAX_SENDERS_LISTED + 1);
        assert_eq!(senders.last().map(|(a, _)| a.as_str()), Some(OTHER_SENDERS));
        assert_eq!(r.total().records, 2007);
    }
}
