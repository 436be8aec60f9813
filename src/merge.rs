//! Several connections become one stream, in timestamp order.
//!
//! Each connection queues its batches on its own [`Lane`]; the merge thread
//! hands the ring runs of records cut from those batches (zero copy: a run
//! shares its read's bytes) in timestamp order. A record is released when
//! every other active connection has a queued record at least as late, or
//! when every active connection with nothing queued has been quiet for
//! `merge_window` (wall clock, since its last read): a sender that keeps
//! sending is waited for, one that went quiet delays the others by at most
//! the window, and one whose share of the buffer is held downstream is
//! waited for until Zeek takes those packets. A record older than one
//! already released is still delivered, and counted as `late`, since Zeek's
//! network time never goes backwards and would skew it otherwise.
//!
//! A lane counts as active from its connection's start until its end (a
//! connected sender may be about to send older packets); what it queued
//! before the end is still merged. Memory is bounded by the
//! [`Budget`] all lanes share; the ring after the merge has no bound of its
//! own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::budget::{Account, Budget, Grant};
use crate::counters::Counters;
use crate::ring::{Batch, Push, Ring};
use crate::sync::lock;

/// A record's time, comparable.
type Ts = (i64, u32);

pub struct Merge {
    window: Duration,
    budget: Arc<Budget>,
    state: Mutex<State>,
    /// Signalled on every change the merge thread may act on.
    changed: Condvar,
    next_lane: AtomicU64,
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
}

struct Queued {
    batch: Batch,
    /// The first record not yet released.
    next: usize,
}

impl LaneState {
    fn head(&self) -> Option<Ts> {
        let q = self.queue.front()?;
        let r = q.batch.records.get(q.next)?;
        Some((r.ts_sec, r.ts_usec))
    }
}

/// What the merge thread does next.
#[derive(Debug)]
enum Step {
    Release(Batch),
    /// Nothing is releasable before this instant (or before a change).
    Wait(Option<Instant>),
    /// Every producer and lane has ended, and everything was released.
    Done,
}

/// One connection's queue into the merge. Dropping it ends the connection's
/// part: its queued records are still merged.
pub struct Lane {
    merge: Arc<Merge>,
    id: u64,
    account: Arc<Account>,
}

/// A thread that may open lanes; the merge ends only once every producer
/// has been dropped.
pub struct Producer {
    merge: Arc<Merge>,
}

impl Merge {
    pub fn new(window: Duration, buffer_size: usize) -> Arc<Merge> {
        Arc::new(Merge {
            window,
            budget: Budget::new(buffer_size),
            state: Mutex::new(State {
                lanes: Vec::new(),
                producers: 0,
                stopped: false,
                last: None,
            }),
            changed: Condvar::new(),
            next_lane: AtomicU64::new(0),
        })
    }

    pub fn producer(self: &Arc<Self>) -> Producer {
        lock(&self.state).producers += 1;
        Producer {
            merge: self.clone(),
        }
    }

    /// A lane for one connection, counted against `counters` (its `late`).
    pub fn lane(self: &Arc<Self>, counters: Arc<Counters>) -> Lane {
        let id = self.next_lane.fetch_add(1, Ordering::Relaxed);
        let account = self.budget.open_account();
        lock(&self.state).lanes.push(LaneState {
            id,
            queue: VecDeque::new(),
            open: true,
            counters,
            account: account.clone(),
            last_push: Instant::now(),
        });
        Lane {
            merge: self.clone(),
            id,
            account,
        }
    }

    /// The source is closing: the merge thread and every waiting lane return.
    pub fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
        self.budget.close();
    }

    /// Bytes queued or held by Zeek, across all lanes.
    pub fn used(&self) -> usize {
        self.budget.used()
    }

    /// The merge thread: releases runs to `ring` until every producer and
    /// lane has ended (then finishes the ring) or the source closes.
    pub fn run(&self, ring: &Ring) {
        let mut st = lock(&self.state);
        loop {
            if st.stopped {
                return;
            }
            match st.step(Instant::now(), self.window) {
                Step::Release(batch) => {
                    drop(st);
                    if ring.push(batch, false) == Push::Closed {
                        return;
                    }
                    st = lock(&self.state);
                }
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
                Step::Done => {
                    drop(st);
                    ring.finish();
                    return;
                }
            }
        }
    }
}

impl State {
    fn step(&mut self, now: Instant, window: Duration) -> Step {
        self.lanes.retain(|l| l.open || !l.queue.is_empty());
        // The lane with the earliest head (the first such lane on a tie).
        let mut first: Option<(usize, Ts)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(ts) = lane.head() {
                if first.is_none_or(|(_, f)| ts < f) {
                    first = Some((i, ts));
                }
            }
        }
        let Some((pick, _)) = first else {
            return if self.lanes.is_empty() && self.producers == 0 {
                Step::Done
            } else {
                Step::Wait(None)
            };
        };
        let others = || {
            self.lanes
                .iter()
                .enumerate()
                .filter(move |(i, _)| *i != pick)
        };
        // Release no further than the next head elsewhere.
        let bound = others().filter_map(|(_, l)| l.head()).min();
        // The empty lane heard from last: the others wait until it has been
        // quiet for the window. A sender that keeps sending (its lane empty
        // only between two reads) is waited for; one that went quiet holds
        // nobody once the window has passed since its last read.
        let quiet_since = others()
            .filter(|(_, l)| l.open && l.queue.is_empty())
            .map(|(_, l)| l.last_push)
            .max();
        // A lane that is empty because its share of the buffer is held
        // downstream (its earlier packets wait in the ring or in Zeek) is
        // not a quiet sender: it refills as Zeek takes them, so it is
        // waited for without a window. Releasing the others past it would
        // put its next packets out of order, while Zeek has work anyway.
        if others().any(|(_, l)| l.open && l.queue.is_empty() && l.account.waiting()) {
            return Step::Wait(None);
        }
        let lane = &mut self.lanes[pick];
        let Some(q) = lane.queue.front_mut() else {
            return Step::Wait(None); // unreachable: the lane has a head
        };
        if let Some(since) = quiet_since {
            let due = since + window;
            if due > now {
                return Step::Wait(Some(due));
            }
        }
        let start = q.next;
        let mut end = start;
        let mut late = 0;
        for r in &q.batch.records[start..] {
            let ts = (r.ts_sec, r.ts_usec);
            if end > start && bound.is_some_and(|b| ts > b) {
                break;
            }
            if self.last.is_some_and(|last| ts < last) {
                late += 1;
            } else {
                self.last = Some(ts);
            }
            end += 1;
        }
        if late > 0 {
            lane.counters.add_late(late);
        }
        let batch = if start == 0 && end == q.batch.records.len() {
            // The whole read at once: no copy of its index.
            match lane.queue.pop_front() {
                Some(q) => q.batch,
                None => return Step::Wait(None), // unreachable: `q` was its front
            }
        } else {
            let run = Batch {
                chunk: q.batch.chunk.clone(),
                records: q.batch.records[start..end].to_vec(),
                charge: q.batch.charge.clone(),
            };
            q.next = end;
            if end == q.batch.records.len() {
                lane.queue.pop_front();
            }
            run
        };
        Step::Release(batch)
    }
}

impl Lane {
    /// The time pushes waited for room since the last call.
    pub fn take_waited(&self) -> Duration {
        self.account.take_waited()
    }

    /// Queues a read's batch, charged to this connection's share of the
    /// budget: waits for room, or with `drop_when_full` drops it.
    pub fn push(&self, mut batch: Batch, drop_when_full: bool) -> Push {
        let n = batch.records.len();
        let (grant, charge) = self.account.charge(batch.cost(), drop_when_full);
        match grant {
            Grant::Granted => {}
            Grant::Full => return Push::Dropped(n),
            Grant::Closed => return Push::Closed,
        }
        batch.charge = charge.map(Arc::new);
        let merge = &self.merge;
        let mut st = lock(&merge.state);
        if st.stopped {
            return Push::Closed;
        }
        let queued = Queued { batch, next: 0 };
        // An open lane is never removed, so it is found.
        if let Some(lane) = st.lanes.iter_mut().find(|l| l.id == self.id) {
            lane.queue.push_back(queued);
            lane.last_push = Instant::now();
        }
        drop(st);
        merge.changed.notify_one();
        Push::Queued
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
