//! The bounded buffer between the reader thread and Zeek's main loop.
//!
//! The reader hands over whole reads ("batches"): a frozen `Bytes` chunk of
//! complete records plus where each packet lies in it. Zeek reads packet
//! bytes in place (zero copy); a batch's bytes count against the capacity
//! from `push` until the consumer has moved past its last packet. When the
//! next batch would exceed the capacity, `push` waits (lossless TCP
//! backpressure: the socket is not read meanwhile).
//!
//! One lock per batch on each side, never per packet; the wake fd and the
//! condition variable are touched only when the other side is waiting.
//!
//! The wake fd is edge-triggered by hand: it turns readable when a consumer
//! that was told `Empty` has something to take (a batch, or the end), and is
//! cleared once it takes a batch. A consumer that has just got a batch or a
//! packet asks again without waiting (the shim's `GetNextTimeout()` returns 0
//! then), so the fd stays quiet while Zeek is busy: a readable fd costs Zeek
//! an `ioctl()` on each of its poll turns, one per 10 packets.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use crate::handoff::wake::Wake;
use crate::merge::budget::Charge;
use crate::shared::sync::lock;
use crate::stream::parse::Record;

/// The bytes of one read, or the part of them a batch's records lie in.
#[derive(Debug, Clone)]
pub struct Part {
    pub bytes: Bytes,
    /// When several connections share the budget: the read's bytes, given
    /// back when the last batch holding a part of it is dropped.
    pub charge: Option<Arc<Charge>>,
    /// Which input (sender) it came from: its index in the source's
    /// counters registry; 0 with one connection.
    pub input: u32,
}

/// One read's worth of complete records, or, after a merge, runs of records
/// from several reads in the order they are released.
#[derive(Debug)]
pub struct Batch {
    /// The reads the records lie in: one, unless the merge joined runs.
    pub parts: Vec<Part>,
    /// Offsets are relative to their part's bytes.
    pub records: Vec<Record>,
    /// The part each record lies in; empty when there is one part.
    pub part_of: Vec<u16>,
}

impl Batch {
    pub fn new(chunk: Bytes, records: Vec<Record>) -> Batch {
        Batch {
            parts: vec![Part {
                bytes: chunk,
                charge: None,
                input: 0,
            }],
            records,
            part_of: Vec::new(),
        }
    }

    /// Record `i`, its bytes and its part.
    pub fn record(&self, i: usize) -> Option<(&Record, &[u8], &Part)> {
        let r = self.records.get(i)?;
        let part = match self.part_of.get(i) {
            Some(&p) => self.parts.get(usize::from(p))?,
            None => self.parts.first()?,
        };
        Some((r, r.data(&part.bytes), part))
    }

    /// What the batch holds in memory: its bytes and its packet index.
    pub fn cost(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum::<usize>()
            + self.records.capacity() * std::mem::size_of::<Record>()
            + self.part_of.capacity() * std::mem::size_of::<u16>()
    }
}

/// What became of a pushed batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The hand-off was full; the batch's packets (this many) were dropped.
    Dropped(usize),
    /// The consumer has closed; stop producing.
    Closed,
}

/// What the consumer finds.
#[derive(Debug)]
pub enum Pop {
    Batch(Batch),
    /// Nothing yet; the wake fd is cleared and will be signalled on `push`.
    Empty,
    /// The producer has ended and everything it pushed has been taken.
    Ended,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Batch>,
    /// Bytes pushed and not yet released by the consumer.
    used: usize,
    producer_ended: bool,
    consumer_closed: bool,
    consumer_waiting: bool,
    producer_waiting: bool,
    /// The wake fd is readable.
    signalled: bool,
}

#[derive(Debug)]
pub struct HandOff {
    capacity: usize,
    /// Time `push` spent waiting for room (TCP backpressure), not yet taken.
    waited_ns: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    space: Condvar,
    wake: Wake,
}

impl HandOff {
    pub fn new(capacity: usize) -> io::Result<HandOff> {
        Ok(HandOff {
            capacity,
            waited_ns: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                used: 0,
                producer_ended: false,
                consumer_closed: false,
                consumer_waiting: true,
                producer_waiting: false,
                signalled: false,
            }),
            space: Condvar::new(),
            wake: Wake::new()?,
        })
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn wake_fd(&self) -> std::os::fd::RawFd {
        self.wake.fd()
    }

    /// Consumer: after `Pop::Empty`, blocks until the wake fd turns readable
    /// or `limit` passes.
    pub fn wait(&self, limit: std::time::Duration) -> bool {
        self.wake.wait(limit)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Producer: queues a batch. While it would exceed the capacity, waits
    /// (lossless backpressure) or, with `drop_when_full`, drops it at once. A
    /// batch larger than the whole capacity is let through when the hand-off
    /// is empty, so an undersized hand-off slows the stream but never stalls
    /// it.
    pub fn push(&self, batch: Batch, drop_when_full: bool) -> Push {
        let cost = batch.cost();
        let mut st = self.lock();
        let mut waiting_since = None;
        while !st.consumer_closed && st.used > 0 && st.used.saturating_add(cost) > self.capacity {
            if drop_when_full {
                return Push::Dropped(batch.records.len());
            }
            st.producer_waiting = true;
            waiting_since.get_or_insert_with(std::time::Instant::now);
            st = self.space.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(since) = waiting_since {
            let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.waited_ns
                .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
        }
        st.producer_waiting = false;
        if st.consumer_closed {
            return Push::Closed;
        }
        st.used = st.used.saturating_add(cost);
        st.queue.push_back(batch);
        self.wake_consumer(&mut st);
        Push::Queued
    }

    /// Producer: no more batches will come. A consumer that is not waiting
    /// finds out on its next `pop`.
    pub fn end(&self) {
        let mut st = self.lock();
        st.producer_ended = true;
        self.wake_consumer(&mut st);
    }

    /// Wakes a consumer that is waiting, without giving it a batch: it has
    /// something else to do (report a message). Its next `pop` clears the fd.
    pub fn notify(&self) {
        let mut st = self.lock();
        self.wake_consumer(&mut st);
    }

    fn wake_consumer(&self, st: &mut State) {
        if st.consumer_waiting {
            st.consumer_waiting = false;
            st.signalled = true;
            self.wake.signal();
        }
    }

    /// Consumer: releases `done` bytes (the batch it has finished with) and
    /// takes the next batch.
    pub fn pop(&self, done: usize) -> Pop {
        let mut st = self.lock();
        if done > 0 {
            // `done` is a batch's cost, added to `used` when it was pushed;
            // saturating keeps a bookkeeping slip from wrapping to "full".
            st.used = st.used.saturating_sub(done);
            if st.producer_waiting {
                self.space.notify_one();
            }
        }
        if let Some(batch) = st.queue.pop_front() {
            self.clear_wake(&mut st);
            return Pop::Batch(batch);
        }
        if st.producer_ended {
            return Pop::Ended;
        }
        st.consumer_waiting = true;
        self.clear_wake(&mut st);
        Pop::Empty
    }

    /// Clears the fd if it is readable; a syscall only then.
    fn clear_wake(&self, st: &mut State) {
        if st.signalled {
            st.signalled = false;
            self.wake.clear();
        }
    }

    /// Consumer: stops taking batches; a waiting producer returns at once.
    pub fn close(&self) {
        let queued = {
            let mut st = self.lock();
            st.consumer_closed = true;
            self.space.notify_all();
            std::mem::take(&mut st.queue)
        };
        // Dropped unlocked: dropping a batch may give its budget back.
        drop(queued);
    }

    /// Producer: the time `push` waited for room since the last call.
    pub fn take_waited(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(
            self.waited_ns.swap(0, std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Bytes currently accounted (queued or held by the consumer).
    pub fn used(&self) -> usize {
        self.lock().used
    }

    #[cfg(test)]
    pub(crate) fn wake_is_signalled(&self) -> bool {
        self.wake.is_signalled()
    }
}

#[cfg(test)]
mod tests;
