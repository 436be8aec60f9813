//! Several connections become one stream, in timestamp order.
//!
//! Each connection queues its batches on its own [`Lane`]; the merge thread
//! hands the hand-off runs of records cut from those batches (zero copy: a run
//! shares its read's bytes) in timestamp order. A record is released when
//! every other active connection has a queued record at least as late, or
//! when every active connection with nothing queued has been quiet for
//! `merge_window` (wall clock, since its last read): a sender that keeps
//! sending is waited for, one that went quiet delays the others by at most
//! the window, and one whose share of the buffer is held downstream is
//! waited for until Zeek takes those packets. Nor is a sender quiet while
//! bytes wait unread in its socket: its reader thread is behind (on a busy
//! machine, with many senders, a reader may wait longer than the window
//! for a core), and releasing past it would make its packets late.
//!
//! Whatever the other senders do, no record waits in the merge longer than
//! `merge_max_hold` (wall clock, from the read that brought it): then it is
//! released past whoever it waits for. A sender whose newest packet has
//! been behind the released front for longer than `merge_max_hold` is not
//! waited for at all: waiting cannot make its packets timely. A record
//! older than one already released is still delivered, and counted as
//! `late` for its own sender, since Zeek's network time never goes
//! backwards and would skew it otherwise. A record dated more than
//! `merge_max_skew` after both this host's clock and the released front is
//! dropped and counted as `skewed` for its sender: released, it would move
//! Zeek's network time ahead for every sender and make all their packets
//! late.
//!
//! A lane counts as active from its connection's start until its end (a
//! connected sender may be about to send older packets); what it queued
//! before the end is still merged. Memory is bounded by the
//! [`Budget`] all lanes share; the hand-off after the merge has no bound of its
//! own.

pub mod budget;

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::handoff::queue::{Batch, HandOff, Part, Push};
use crate::merge::budget::{Account, Budget, Grant};
use crate::net::tls::unread;
use crate::shared::counters::Counters;
use crate::shared::sync::lock;
use crate::stream::parse::Record;

/// A record's time, comparable.
type Ts = (i64, u32);

/// A lane's head in the merge's heap: ordered by time, then by the lane's
/// index (the first lane on a tie), compared as one integer (the heap's
/// comparisons were a fifth of the merge thread's instructions with 64
/// senders as tuples).
fn heap_key((sec, nsec): Ts, lane: usize) -> u128 {
    // Flipping the sign bit orders i64 as u64.
    let sec = (sec as u64) ^ (1 << 63);
    (u128::from(sec) << 64) | (u128::from(nsec) << 32) | (lane as u128 & 0xffff_ffff)
}

fn lane_of(key: u128) -> usize {
    (key & 0xffff_ffff) as usize
}

fn ts_of(key: u128) -> Ts {
    (((key >> 64) as u64 ^ (1 << 63)) as i64, (key >> 32) as u32)
}

fn ts(r: &Record) -> Ts {
    (r.ts_sec, r.ts_nsec)
}

/// How far `later` is after `earlier`, saturating (zero if it is not).
fn after(later: Ts, earlier: Ts) -> Duration {
    let ns = |t: Ts| i128::from(t.0) * 1_000_000_000 + i128::from(t.1);
    let d = ns(later) - ns(earlier);
    if d <= 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(d / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (d % 1_000_000_000) as u32)
}

/// The merge's timing rules (the `merge_*` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a quiet sender is waited for (`merge_window`).
    pub window: Duration,
    /// The longest a record waits in the merge (`merge_max_hold`); at least
    /// the window.
    pub hold: Duration,
    /// How far after this host's clock and the released front a record may
    /// be dated (`merge_max_skew`); zero: no limit.
    pub skew: Duration,
}

impl Timing {
    /// The rules with the hold at least the window.
    pub fn new(window: Duration, hold: Duration, skew: Duration) -> Timing {
        Timing {
            window,
            hold: hold.max(window),
            skew,
        }
    }
}

pub struct Merge {
    timing: Timing,
    budget: Arc<Budget>,
    state: Mutex<State>,
    /// Signalled on every change the merge thread may act on.
    changed: Condvar,
    next_lane: AtomicU64,
    /// The released front's second (`State::last`), for the pushing
    /// threads' skew check without the lock; `i64::MIN` before the first.
    front_sec: AtomicI64,
}

struct State {
    lanes: Vec<LaneState>,
    /// Threads that may still open lanes (dialers, listeners).
    producers: usize,
    stopped: bool,
    /// The latest timestamp released.
    last: Option<Ts>,
}

struct LaneState {
    id: u64,
    queue: VecDeque<Queued>,
    /// Its connection is still open.
    open: bool,
    counters: Arc<Counters>,
    account: Arc<Account>,
    /// When it last queued a read (or opened).
    last_push: Instant,
    /// The time of its first record not yet released: kept here, since
    /// every run released looks at every lane's.
    head: Option<Ts>,
    /// The latest time it has queued: it is not expected to send earlier.
    watermark: Option<Ts>,
    /// When its newest packet was last found at or past the released
    /// front (or it opened).
    caught_up: Instant,
    /// A lane that has queued nothing yet: when others' packets first
    /// waited for it. Its window counts from then, not from its header,
    /// so senders that start together are merged from their first packets
    /// (a header sent long before the packets would otherwise make it
    /// quiet already, and its first packets late); once, so a sender that
    /// never sends holds the others for one window only.
    first_wait: Option<Instant>,
    /// Its connection's socket, asked whether bytes wait unread.
    socket: Option<Weak<TcpStream>>,
}

struct Queued {
    /// One read: one part.
    batch: Batch,
    /// When it was queued: it is released at `merge_max_hold` after.
    arrived: Instant,
    /// The first record not yet released.
    next: usize,
    /// Its part's index in the batch being built, if it has one there:
    /// (`Outgoing::generation`, index).
    slot: Option<(u64, u16)>,
}

impl LaneState {
    fn head(&self) -> Option<Ts> {
        self.head
    }

    /// Its newest packet is behind the released front.
    fn trails(&self, front: Option<Ts>) -> bool {
        matches!((self.watermark, front), (Some(w), Some(f)) if w < f)
    }

    /// Its newest packet has been behind the released front for longer
    /// than `hold` (wall clock): its packets are late whatever the others
    /// wait, so nobody waits. Wall clock, not packet time: a replay at 100
    /// times real time turns a few milliseconds of scheduling into seconds.
    fn behind(&self, front: Option<Ts>, now: Instant, hold: Duration) -> bool {
        self.trails(front) && now.saturating_duration_since(self.caught_up) > hold
    }

    /// After its queue changed.
    fn refresh_head(&mut self) {
        self.head = self
            .queue
            .front()
            .and_then(|q| q.batch.records.get(q.next))
            .map(ts);
    }
}

/// What the merge thread does next.
#[derive(Debug)]
enum Step {
    /// The batch being built is full.
    Released,
    /// Nothing is releasable before this instant (or before a change).
    Wait(Option<Instant>),
    /// Every producer and lane has ended, and everything was released.
    Ended,
}

/// One connection's queue into the merge. Dropping it ends the connection's
/// part: its queued records are still merged.
pub struct Lane {
    merge: Arc<Merge>,
    id: u64,
    account: Arc<Account>,
    input: u32,
    counters: Arc<Counters>,
    /// Names the connection in the operator's messages.
    label: String,
    /// Its skewed records have been reported (once per connection).
    skew_reported: AtomicBool,
}

/// A thread that may open lanes; the merge ends only once every producer
/// has been dropped.
pub struct Producer {
    merge: Arc<Merge>,
}

impl Merge {
    pub fn new(timing: Timing, buffer_size: usize) -> Arc<Merge> {
        Arc::new(Merge {
            timing,
            budget: Budget::new(buffer_size),
            state: Mutex::new(State {
                lanes: Vec::new(),
                producers: 0,
                stopped: false,
                last: None,
            }),
            changed: Condvar::new(),
            next_lane: AtomicU64::new(0),
            front_sec: AtomicI64::new(i64::MIN),
        })
    }

    pub fn producer(self: &Arc<Self>) -> Producer {
        lock(&self.state).producers += 1;
        Producer {
            merge: self.clone(),
        }
    }

    /// A lane for one connection, counted against `counters` (its `late`,
    /// `skewed` and `lag`) and named `label` in messages; its packets are
    /// marked as from `input`.
    pub fn lane(self: &Arc<Self>, counters: Arc<Counters>, input: u32, label: &str) -> Lane {
        let id = self.next_lane.fetch_add(1, Ordering::Relaxed);
        let account = self.budget.open_account();
        lock(&self.state).lanes.push(LaneState {
            id,
            queue: VecDeque::new(),
            open: true,
            counters: counters.clone(),
            account: account.clone(),
            last_push: Instant::now(),
            head: None,
            watermark: None,
            caught_up: Instant::now(),
            first_wait: None,
            socket: None,
        });
        Lane {
            merge: self.clone(),
            id,
            account,
            input,
            counters,
            label: label.to_string(),
            skew_reported: AtomicBool::new(false),
        }
    }

    /// The source is closing: the merge thread and every waiting lane return.
    pub fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
        self.budget.close();
    }

    /// How many lanes there are (open, or with records left).
    #[cfg(test)]
    pub(crate) fn lanes(&self) -> usize {
        lock(&self.state).lanes.len()
    }

    /// Bytes queued or held by Zeek, across all lanes.
    pub fn used(&self) -> usize {
        self.budget.used()
    }

    /// The merge thread: releases runs to `hand-off` until every producer and
    /// lane has ended (then ends the hand-off) or the source closes. Never
    /// inlined: bench/run.py counts the merge thread's instructions by its
    /// name (inlined into the thread's closure, it has none).
    #[inline(never)]
    pub fn run(&self, hand_off: &HandOff) {
        let mut out = Outgoing::default();
        let mut st = lock(&self.state);
        loop {
            if st.stopped {
                return;
            }
            // Everything releasable now, up to a full batch, in one hold.
            let now = Instant::now();
            st.forget_ended();
            let step = st.release(now, &self.timing, &mut out);
            if !out.is_empty() {
                if let Some((sec, _)) = st.last {
                    self.front_sec.store(sec, Ordering::Relaxed);
                }
                drop(st);
                if hand_off.push(out.take(), false) == Push::Closed {
                    return;
                }
                st = lock(&self.state);
                continue;
            }
            match step {
                Step::Released => {} // unreachable: `out` has its run
                Step::Wait(None) => {
                    st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                Step::Wait(Some(until)) => {
                    let left = until.saturating_duration_since(Instant::now());
                    st = self
                        .changed
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                Step::Ended => {
                    drop(st);
                    hand_off.end();
                    return;
                }
            }
        }
    }
}

/// Most records in one batch of runs: Zeek gets work without waiting for a
/// long build, and the lanes wait little for the lock.
const MAX_RECORDS: usize = 4096;
/// Most reads one batch of runs may point into (its part index is a u16).
const MAX_PARTS: usize = 256;

/// Runs released in one hold of the lock, handed to the hand-off as one batch:
/// one lock and one wake-up on each side of the hand-off per batch, not per
/// run (with interleaved senders a run is often a single packet).
#[derive(Default)]
struct Outgoing {
    parts: Vec<Part>,
    records: Vec<Record>,
    /// As `Batch::part_of`: records past its end lie in part 0.
    part_of: Vec<u16>,
    /// Tells this batch's part slots (`Queued::slot`) from earlier ones'.
    generation: u64,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn is_full(&self) -> bool {
        self.records.len() >= MAX_RECORDS || self.parts.len() >= MAX_PARTS
    }

    /// Takes a whole read into this (empty) batch: its index is moved,
    /// not copied.
    fn take_whole(&mut self, batch: Batch) {
        let Batch { parts, records, .. } = batch;
        self.parts = parts;
        self.records = records;
    }

    /// Appends `q`'s next record, adding its read as a part unless this
    /// batch has it already.
    fn push(&mut self, q: &mut Queued, r: Record) {
        let part = self.part(q);
        if part != 0 {
            // Records past `part_of`'s end lie in part 0.
            if self.part_of.len() < self.records.len() {
                self.part_of.resize(self.records.len(), 0);
            }
            self.part_of.push(part);
        }
        self.records.push(r);
    }

    /// Appends `q`'s next `n` records, as `push` does.
    fn push_run(&mut self, q: &mut Queued, n: usize) {
        let part = self.part(q);
        let run = q.batch.records.get(q.next..q.next + n).unwrap_or_default();
        if part != 0 {
            self.part_of.resize(self.records.len(), 0);
            self.part_of.resize(self.records.len() + run.len(), part);
        }
        self.records.extend_from_slice(run);
        q.next += run.len();
    }

    /// `q`'s read's index among this batch's parts.
    #[inline]
    fn part(&mut self, q: &mut Queued) -> u16 {
        match q.slot {
            Some((generation, part)) if generation == self.generation => part,
            _ => self.add_part(q),
        }
    }

    /// Adds `q`'s read as a part of this batch (the first, in a new batch).
    #[cold]
    fn add_part(&mut self, q: &mut Queued) -> u16 {
        if self.records.capacity() == 0 {
            self.records.reserve(MAX_RECORDS);
            self.part_of.reserve(MAX_RECORDS);
        }
        let part = self.parts.len() as u16; // < MAX_PARTS
        self.parts.extend(q.batch.parts.first().cloned());
        q.slot = Some((self.generation, part));
        part
    }

    /// The batch built so far; the next one starts empty.
    fn take(&mut self) -> Batch {
        self.generation += 1;
        let mut part_of = std::mem::take(&mut self.part_of);
        if self.parts.len() == 1 {
            part_of = Vec::new();
        }
        Batch {
            parts: std::mem::take(&mut self.parts),
            records: std::mem::take(&mut self.records),
            part_of,
        }
    }
}

impl State {
    /// Forgets the lanes that have ended and have nothing left to merge.
    /// Done once per hold of the lock, not per run: a lane that empties
    /// during a hold is forgotten at the next, and one hold that released
    /// nothing emptied no lane.
    fn forget_ended(&mut self) {
        self.lanes.retain(|l| l.open || !l.queue.is_empty());
    }

    /// Releases records into `out` until it is full or nothing more can
    /// go; says why it stopped. One pass over the lanes per call: the heads
    /// go into a tournament and the empty lanes' state is summed once, so a
    /// record costs O(log lanes), not a scan of every lane (64 senders cost
    /// the merge thread 2954 instructions a packet with a scan per run).
    /// Record by record, not run by run: with interleaved senders a run is
    /// one packet, and a run's setup cost as much as the packet's merge.
    fn release(&mut self, now: Instant, timing: &Timing, out: &mut Outgoing) -> Step {
        let mut heads = Heads::new(self.lanes.len());
        let mut empty = Empty::default();
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if !lane.trails(self.last) {
                lane.caught_up = now;
            }
            match lane.head() {
                Some(ts) => heads.put(i, heap_key(ts, i)),
                None => empty.add(lane, self.last, now, timing),
            }
        }
        heads.play();
        let (mut previous, mut streak) = (usize::MAX, 0u32);
        if heads.top().is_some() {
            // Packets wait for the lanes that have sent none yet: their
            // window starts now.
            for lane in &mut self.lanes {
                if lane.watermark.is_none() && lane.open {
                    lane.first_wait.get_or_insert(now);
                }
            }
        }
        loop {
            // The lane with the earliest head (the first such lane on a tie).
            let Some(top) = heads.top() else {
                return if self.lanes.is_empty() && self.producers == 0 {
                    Step::Ended
                } else {
                    Step::Wait(None)
                };
            };
            let pick = lane_of(top);
            let Some(lane) = self.lanes.get_mut(pick) else {
                return Step::Wait(None); // unreachable: the tournament's lanes
            };
            let Some(q) = lane.queue.front_mut() else {
                return Step::Wait(None); // unreachable: the lane has a head
            };
            if empty.any() {
                if let Some(wait) = empty.holds(q.arrived, now, timing) {
                    return Step::Wait(wait);
                }
            }
            if out.is_empty() && q.next == 0 {
                // A whole read that goes before every other lane's head is
                // moved into the batch, not copied record by record.
                if let Some(late) = whole_run(&q.batch.records, heads.second(), &mut self.last) {
                    if late > 0 {
                        lane.counters.add_late(late);
                    }
                    if let Some(q) = lane.queue.pop_front() {
                        out.take_whole(q.batch);
                    }
                    lane.refresh_head();
                    heads.replace(pick, lane.head());
                    if lane.head().is_none() {
                        empty.add(lane, self.last, now, timing);
                    }
                    if out.is_full() {
                        return Step::Released;
                    }
                    continue;
                }
            }
            // A lane that keeps winning is in a run (its sender is ahead of
            // the others): the rest of the run, up to the next head
            // elsewhere, goes in one pass, not a replay of the heads each.
            // Not before its third win: interleaved senders' ties make short
            // streaks, for which finding that head costs more than it saves.
            streak = if pick == previous { streak + 1 } else { 0 };
            previous = pick;
            if streak < 2 {
                let Some(&r) = q.batch.records.get(q.next) else {
                    return Step::Wait(None); // unreachable: the head is a record
                };
                let ts = ts(&r);
                if self.last.is_some_and(|last| ts < last) {
                    lane.counters.add_late(1);
                } else {
                    self.last = Some(ts);
                }
                out.push(q, r);
                q.next += 1;
            } else {
                let bound = heads.second();
                let room = MAX_RECORDS.saturating_sub(out.records.len()).max(1);
                let rest = q.batch.records.get(q.next..).unwrap_or_default();
                let run = rest
                    .iter()
                    .take(room)
                    .take_while(|r| bound.is_none_or(|b| heap_key(ts(r), pick) < b))
                    .count()
                    .max(1);
                let late = released(&q.batch.records[q.next..q.next + run], &mut self.last);
                if late > 0 {
                    lane.counters.add_late(late);
                }
                out.push_run(q, run);
            }
            lane.head = match q.batch.records.get(q.next) {
                Some(r) => Some(self::ts(r)),
                None => {
                    lane.queue.pop_front();
                    lane.queue
                        .front()
                        .and_then(|q| q.batch.records.get(q.next))
                        .map(self::ts)
                }
            };
            heads.replace(pick, lane.head);
            if lane.head.is_none() {
                // Emptied: from now on it may hold the others.
                empty.add(lane, self.last, now, timing);
            }
            if out.is_full() {
                return Step::Released;
            }
        }
    }
}

/// If every record of `records` is at or before `bound` (the next head
/// elsewhere): how many of them are late, with `last` moved to the latest
/// released. `None`, `last` untouched: the read must be cut.
fn whole_run(records: &[Record], bound: Option<u128>, last: &mut Option<Ts>) -> Option<u64> {
    let bound = bound.map(ts_of);
    if records.iter().any(|r| bound.is_some_and(|b| ts(r) > b)) {
        return None;
    }
    Some(released(records, last))
}

/// Releases `records`: how many are late (before `last`), with `last`
/// moved to the latest.
fn released(records: &[Record], last: &mut Option<Ts>) -> u64 {
    let mut late = 0;
    for r in records {
        let ts = ts(r);
        if last.is_some_and(|last| ts < last) {
            late += 1;
        } else {
            *last = Some(ts);
        }
    }
    late
}

/// No head: a leaf of a lane with nothing queued. Never a key: a key's
/// nanoseconds are below 10^9.
const NO_HEAD: u128 = u128::MAX;

/// The lanes' heads (`heap_key`s) as a tournament that keeps its losers:
/// every inner node holds the later head of the two its subtrees' winners
/// met with, so the winner's new head is played up one path against the
/// heads it beat, one comparison a level and a store only where it loses
/// (a binary heap's sift down makes two comparisons a level and moves
/// every level).
struct Heads {
    /// Leaves: the lane count rounded up to a power of two.
    leaves: usize,
    /// Inner nodes: 1 is the root, node i's children are 2i and 2i + 1,
    /// lane i's leaf would be `leaves + i`; node 0 is unused.
    losers: Vec<u128>,
    /// The earliest head.
    winner: u128,
    /// Leaves while the tournament is built (`put`, then `play`).
    start: Vec<u128>,
}

impl Heads {
    fn new(lanes: usize) -> Heads {
        let leaves = lanes.max(1).next_power_of_two();
        Heads {
            leaves,
            losers: vec![NO_HEAD; leaves],
            winner: NO_HEAD,
            start: vec![NO_HEAD; leaves],
        }
    }

    /// Sets lane `lane`'s head before the first `play`.
    fn put(&mut self, lane: usize, key: u128) {
        if let Some(leaf) = self.start.get_mut(lane) {
            *leaf = key;
        }
    }

    /// Plays the heads `put` gave: every node's loser, and the winner.
    fn play(&mut self) {
        // Winners of each node, bottom up: leaves at `leaves + i`.
        let mut winners = vec![NO_HEAD; 2 * self.leaves];
        winners[self.leaves..].copy_from_slice(&self.start);
        for i in (1..self.leaves).rev() {
            let (l, r) = (winners[2 * i], winners[2 * i + 1]);
            winners[i] = l.min(r);
            self.losers[i] = l.max(r);
        }
        self.winner = winners[1];
        self.start = Vec::new();
    }

    fn top(&self) -> Option<u128> {
        (self.winner != NO_HEAD).then_some(self.winner)
    }

    /// The winner's lane's (`lane`'s) new head, played up to the root.
    fn replace(&mut self, lane: usize, head: Option<Ts>) {
        let mut key = head.map_or(NO_HEAD, |ts| heap_key(ts, lane));
        let mut i = (self.leaves + lane) >> 1;
        while let Some(loser) = self.losers.get_mut(i) {
            if i == 0 {
                break;
            }
            if *loser < key {
                std::mem::swap(loser, &mut key);
            }
            i >>= 1;
        }
        self.winner = key;
    }

    /// The earliest head but the winner's lane's: the earliest of those
    /// the winner beat on its way up.
    fn second(&self) -> Option<u128> {
        let top = self.top()?;
        let mut i = (self.leaves + lane_of(top)) >> 1;
        let mut second = NO_HEAD;
        while let Some(&loser) = self.losers.get(i) {
            if i == 0 {
                break;
            }
            second = second.min(loser);
            i >>= 1;
        }
        (second != NO_HEAD).then_some(second)
    }
}

/// What the open lanes with nothing queued ask of the others.
#[derive(Default)]
struct Empty {
    /// The empty lane heard from last: the others wait until it has been
    /// quiet for the window. A sender that keeps sending (its lane empty
    /// only between two reads) is waited for; one that went quiet holds
    /// nobody once the window has passed since its last read.
    quiet_since: Option<Instant>,
    /// A lane that is empty because its share of the buffer is held
    /// downstream (its earlier packets wait in the hand-off or in Zeek) is not
    /// a quiet sender: it refills as Zeek takes them, so it is waited for
    /// without a window. Releasing the others past it would put its next
    /// packets out of order, while Zeek has work anyway.
    held: bool,
}

impl Empty {
    /// Whether any lane with nothing queued may hold the others.
    fn any(&self) -> bool {
        self.held || self.quiet_since.is_some()
    }

    /// Counts `lane` (which has nothing queued) unless it ended, or has
    /// been behind `front` so long that waiting for it is pointless.
    fn add(&mut self, lane: &LaneState, front: Option<Ts>, now: Instant, timing: &Timing) {
        if lane.open && !lane.behind(front, now, timing.hold) {
            self.held |= lane.account.waiting();
            let heard = match (lane.watermark, lane.first_wait) {
                // Nothing queued yet: quiet since others first waited for
                // it (or from now, if none has yet).
                (None, first) => lane.last_push.max(first.unwrap_or(now)),
                _ => lane.last_push,
            };
            // Quiet for the window, as far as its pushes tell; asked only
            // then, and only while no other lane holds the others anyway
            // (a syscall, under the merge's lock), whether its reader has
            // simply not caught up.
            let expired = heard
                .checked_add(timing.window)
                .is_some_and(|due| due <= now);
            if !self.held && expired && lane.socket.as_ref().is_some_and(unread) {
                self.held = true;
            }
            self.quiet_since = self.quiet_since.max(Some(heard));
        }
    }

    /// Whether a record queued at `arrived` must wait for the empty lanes,
    /// and until when (`Some(None)`: until a change). Past the hold, it goes
    /// whoever it waits for.
    fn holds(&self, arrived: Instant, now: Instant, timing: &Timing) -> Option<Option<Instant>> {
        // `None`: a hold too long to represent never ends.
        let forced = arrived.checked_add(timing.hold);
        if forced.is_some_and(|f| f <= now) {
            return None;
        }
        if self.held {
            return Some(forced);
        }
        match self
            .quiet_since
            .map(|since| since.checked_add(timing.window))
        {
            Some(None) => Some(forced),
            Some(Some(due)) if due > now => Some(Some(forced.map_or(due, |f| due.min(f)))),
            _ => None,
        }
    }
}

impl Lane {
    /// Tells the merge its connection's socket: while bytes wait unread in
    /// it, the lane is not quiet, however long since its last push.
    pub fn watch(&self, socket: Weak<TcpStream>) {
        let mut st = lock(&self.merge.state);
        if let Some(lane) = st.lanes.iter_mut().find(|l| l.id == self.id) {
            lane.socket = Some(socket);
        }
    }

    /// The time pushes waited for room since the last call.
    pub fn take_waited(&self) -> Duration {
        self.account.take_waited()
    }

    /// Queues a read's batch, charged to this connection's share of the
    /// budget: waits for room, or with `drop_when_full` drops it.
    pub fn push(&self, mut batch: Batch, drop_when_full: bool) -> Push {
        self.drop_skewed(&mut batch);
        if batch.records.is_empty() {
            return Push::Queued;
        }
        let newest = batch.records.iter().map(ts).max();
        let n = batch.records.len();
        let (grant, charge) = self.account.charge(batch.cost(), drop_when_full);
        match grant {
            Grant::Granted => {}
            Grant::Full => return Push::Dropped(n),
            Grant::Closed => return Push::Closed,
        }
        let charge = charge.map(Arc::new);
        for part in &mut batch.parts {
            part.charge = charge.clone();
            part.input = self.input;
        }
        let merge = &self.merge;
        let mut st = lock(&merge.state);
        if st.stopped {
            return Push::Closed;
        }
        let now = Instant::now();
        let queued = Queued {
            batch,
            arrived: now,
            next: 0,
            slot: None,
        };
        let front = st.last;
        // An open lane is never removed, so it is found.
        if let Some(lane) = st.lanes.iter_mut().find(|l| l.id == self.id) {
            lane.queue.push_back(queued);
            lane.last_push = now;
            lane.watermark = lane.watermark.max(newest);
            if lane.head.is_none() {
                lane.refresh_head();
            }
            let lag = match (front, lane.watermark) {
                (Some(f), Some(w)) => after(f, w),
                _ => Duration::ZERO,
            };
            self.counters.set_lag(lag);
        }
        drop(st);
        merge.changed.notify_one();
        Push::Queued
    }
}

impl Lane {
    /// Drops the records dated more than `merge_max_skew` after both this
    /// host's clock and the released front, counting them as `skewed`;
    /// the first time, says so with how far ahead they were.
    fn drop_skewed(&self, batch: &mut Batch) {
        let skew = self.merge.timing.skew;
        if skew.is_zero() {
            return;
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let front = self.merge.front_sec.load(Ordering::Relaxed);
        let reference = wall.max(front);
        let limit = reference.saturating_add(i64::try_from(skew.as_secs()).unwrap_or(i64::MAX));
        if batch.records.iter().all(|r| r.ts_sec <= limit) {
            return;
        }
        let mut furthest = 0;
        let before = batch.records.len();
        batch.records.retain(|r| {
            let keep = r.ts_sec <= limit;
            if !keep {
                furthest = furthest.max(r.ts_sec);
            }
            keep
        });
        let dropped = before - batch.records.len();
        self.counters.add_skewed(dropped);
        if !self.skew_reported.swap(true, Ordering::Relaxed) {
            let ahead = i128::from(furthest) - i128::from(reference);
            let packets = if dropped == 1 { "packet" } else { "packets" };
            crate::shared::logger::warning!(
                "{}: dropped {dropped} {packets} dated up to {ahead} s after this host's clock and the merge's newest packet (more than PcapOverTcp::merge_max_skew, {} s): they would move Zeek's network time ahead for every sender; check this sender's clock (later ones are only counted as skewed)",
                self.label,
                skew.as_secs()
            );
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut st = lock(&self.merge.state);
        if let Some(lane) = st.lanes.iter_mut().find(|l| l.id == self.id) {
            lane.open = false;
        }
        drop(st);
        self.merge.changed.notify_one();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let mut st = lock(&self.merge.state);
        st.producers = st.producers.saturating_sub(1);
        drop(st);
        self.merge.changed.notify_one();
    }
}

#[cfg(test)]
mod tests;
