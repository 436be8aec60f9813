//! The live relay (standard input, --exec, --upstream): the input is cut
//! into whole units (header blocks and records, see [`crate::input`]) and
//! handed to a fan-out hub (one per --shards share), which puts them
//! in one bounded queue per client; each client has its own writer thread.
//!
//! The hub never waits for a client. When a client's queue is full
//! (--client-buffer), whole packets are dropped for that client and counted
//! (--slow-client=drop), or the client is closed (--slow-client=disconnect).
//! All queues together are bounded too ([`Budget`], --max-buffer, shared by
//! the hubs of all shards): when they are full, the client with the largest
//! queue gives way (its oldest queued packets are dropped, or it is
//! closed). Blocks that are no packets (pcapng interfaces, statistics,
//! custom blocks) count against both bounds as packets do, but are never
//! dropped alone, so that every client's stream stays valid: when one fits
//! nowhere even after the client's own queued packets are dropped, the
//! client is closed.
//!
//! The bytes are shared, not copied: what one read of the input brought is
//! one buffer ([`Bytes`]) that every client's queue refers to.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::SockRef;

use crate::client_log;
use crate::conn::Cut;
use crate::header::{Header, Overflow, MAX_HEADER, MAX_OTHER};
use crate::inflight::{Flight, Framing};
use crate::output::Output;
use crate::spool::{Spool, SpoolDir};
use crate::stats::{ClientStats, Registry, State};

/// A writer takes at most this much of its queue at once (then releases it
/// from the queue's budget once written).
const BATCH: usize = 256 * 1024;
/// After the end of the input, a client that takes nothing for this long
/// is closed (the tool waits for the others to get their queues).
pub const DRAIN_STALL: Duration = Duration::from_secs(30);
/// A client that keeps starting to drop is reported at most this often.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// While a client's queue is empty, its socket is looked at this often: a
/// writer with nothing to write would otherwise notice a client whose
/// connection was reset only at the next write, however long the input
/// stays idle.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// What an idle check reads (and drops) at most of what a client sent.
const IDLE_DISCARD: usize = 64 * 1024;

/// What to do with a client whose queue is full (--slow-client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPolicy {
    Drop,
    Disconnect,
}

/// One queued piece of the stream: whole units, `packets` of them packets.
struct Segment {
    data: Bytes,
    packets: u64,
    /// Every unit is a packet: the segment may be dropped whole.
    only_packets: bool,
}

/// The bound on all client queues together (--max-buffer), shared by the
/// hubs of every shard, and every client, to find the largest queue.
pub struct Budget {
    max: usize,
    total: AtomicUsize,
    members: Mutex<Vec<Weak<Client>>>,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max,
            total: AtomicUsize::new(0),
            members: Mutex::new(Vec::new()),
        })
    }

    fn room(&self) -> usize {
        self.max.saturating_sub(self.total.load(Relaxed))
    }

    fn members(&self) -> MutexGuard<'_, Vec<Weak<Client>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for `need` more bytes for `me` (whose queue the caller
    /// holds locked): the other clients, largest queue first, give way
    /// (their oldest queued packets are dropped, or with disconnect they
    /// are closed) until there is room or `me` has the largest queue left.
    /// Only the relay's thread calls it: it is the one thread that locks
    /// two queues at once.
    fn make_room(
        &self,
        need: usize,
        me: &Client,
        policy: SlowPolicy,
        events: &mut Vec<(log::Level, String)>,
    ) {
        let mut others: Vec<(u64, Arc<Client>)> = {
            let mut members = self.members();
            members.retain(|w| w.strong_count() > 0);
            members
                .iter()
                .filter_map(Weak::upgrade)
                .map(|c| (c.stats.queued.load(Relaxed), c))
                .collect()
        };
        others.sort_by_key(|o| std::cmp::Reverse(o.0));
        let mine = me.stats.queued.load(Relaxed);
        for (queued, victim) in others {
            if self.room() >= need || queued <= mine {
                return;
            }
            if std::ptr::eq(Arc::as_ptr(&victim), me) {
                continue;
            }
            let mut q = victim.lock();
            if q.closing.is_some_and(|c| c != Closing::NewStream) {
                continue;
            }
            let why = format!(
                "all clients' queues together (--max-buffer {} bytes) are full and its queue is the largest",
                self.max
            );
            if policy == SlowPolicy::Disconnect {
                victim.stats.finish(State::Slow);
                victim.close(&mut q, Closing::Slow);
                events.push((
                    log::Level::Warn,
                    format!(
                        "{}: too slow: {why}; closing it (--slow-client=disconnect); {}",
                        victim.name,
                        victim.stats.summary()
                    ),
                ));
                continue;
            }
            let short = need.saturating_sub(self.room());
            // Reported once per episode (and at most every 10 s).
            let new_episode = !q.dropping;
            if q.shed(short, &victim.stats) > 0 && new_episode && q.report_due() {
                events.push((
                    log::Level::Warn,
                    format!(
                        "{}: too slow: {why}; dropping its oldest queued packets",
                        victim.name
                    ),
                ));
            }
        }
    }
}

/// Why a client's queue is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The input ended: send what is queued, then end the stream.
    End,
    /// --slow-client=disconnect: its queue overflowed.
    Slow,
    /// It took nothing for DRAIN_STALL after the end of the input.
    Stalled,
    /// Its connection broke: its writer has ended.
    Gone,
    /// The input restarted with a different header: send what is queued,
    /// then end the stream (the client reconnects for the new header).
    NewStream,
}

struct Queue {
    segments: VecDeque<Segment>,
    /// Queued bytes, with those of the batch its writer is writing; counted
    /// in the budget's total too.
    bytes: usize,
    budget: Arc<Budget>,
    closing: Option<Closing>,
    /// Whether packets were dropped since the client last kept up.
    dropping: bool,
    /// Whether the current dropping episode was reported.
    reported: bool,
    /// When an episode was last reported.
    last_report: Option<Instant>,
    /// A kept client's overflow on disk (--spool): while it exists,
    /// everything for the client goes through it, in order.
    spool: Option<Spool>,
}

impl Queue {
    /// Puts back, at the front, segments taken for a write that never
    /// reached the kernel (still counted in `bytes`).
    fn put_back(&mut self, segments: Vec<Segment>) {
        for s in segments.into_iter().rev() {
            self.segments.push_front(s);
        }
    }

    fn push(&mut self, data: Bytes, packets: u64, only_packets: bool) {
        self.grow(data.len());
        self.segments.push_back(Segment {
            data,
            packets,
            only_packets,
        });
    }

    fn grow(&mut self, n: usize) {
        self.bytes += n;
        self.budget.total.fetch_add(n, Relaxed);
    }

    fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.budget.total.fetch_sub(n, Relaxed);
    }

    /// Empties the queue (the client is closed): what it held is dropped.
    fn discard(&mut self, stats: &ClientStats) {
        let (mut packets, mut bytes) = (0, 0);
        for s in self.segments.drain(..) {
            packets += s.packets;
            bytes += s.data.len() as u64;
        }
        if let Some(spool) = self.spool.take() {
            packets += spool.packets;
            bytes += spool.bytes;
            stats.set_spooled(0);
        }
        stats.dropped(packets, bytes);
        self.shrink(self.bytes);
        stats.set_queued(0);
    }

    /// Drops queued segments that are packets only, oldest first, until
    /// `want` bytes are freed (or none is left); counted as dropped.
    /// Returns the bytes freed.
    fn shed(&mut self, want: usize, stats: &ClientStats) -> usize {
        let (mut freed, mut packets, mut i) = (0, 0, 0);
        while freed < want && i < self.segments.len() {
            if self.segments[i].only_packets {
                let s = self.segments.remove(i).expect("an index within the queue");
                freed += s.data.len();
                packets += s.packets;
            } else {
                i += 1;
            }
        }
        if freed > 0 {
            stats.dropped(packets, freed as u64);
            self.shrink(freed);
            stats.set_queued(self.bytes);
            if !self.dropping {
                // A new episode, not reported until report_due says so.
                self.dropping = true;
                self.reported = false;
            }
        }
        freed
    }

    /// Whether a dropping episode is to be reported now (at most every
    /// DROP_REPORT_EVERY per client).
    fn report_due(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= DROP_REPORT_EVERY);
        if due {
            self.last_report = Some(now);
            self.reported = true;
        }
        due
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.budget.total.fetch_sub(self.bytes, Relaxed);
    }
}

/// Over TLS, where the connection's byte count stands (a segment's own
/// bytes are not the wire's): u64::MAX when the kernel does not say, so
/// that what was written counts as unacknowledged. None over plain TCP.
fn wire_end(conn: &impl Output) -> Option<u64> {
    if conn.stream_is_wire() {
        return None;
    }
    Some(conn.wire_position().unwrap_or(u64::MAX))
}

/// Splits a batch whose write failed after the kernel took `taken` bytes
/// of it: (the segments to put back, those taken). A packet the kernel
/// took only part of was taken (its start is on the wire: it is in
/// flight); the packets after it go back. A block that is no packet is
/// never put back once begun: the header a kept client gets when it is
/// back carries the blocks it needs.
fn split_taken(
    batch: Vec<Segment>,
    taken: usize,
    framing: Option<Framing>,
) -> (Vec<Segment>, Vec<Segment>) {
    let (mut back, mut sent) = (Vec::new(), Vec::new());
    let mut at = 0;
    for s in batch {
        let len = s.data.len();
        if at >= taken {
            back.push(s);
        } else if at + len <= taken || !s.only_packets {
            sent.push(s);
        } else {
            let cut = framing.and_then(|f| f.unit_end_after(&s.data, taken - at).map(|c| (f, c)));
            match cut {
                Some((f, cut)) if cut < len => {
                    let (whole, _) = f.whole_before(&s.data, cut);
                    sent.push(Segment {
                        data: s.data.slice(..cut),
                        packets: whole,
                        only_packets: true,
                    });
                    back.push(Segment {
                        data: s.data.slice(cut..),
                        packets: s.packets.saturating_sub(whole),
                        only_packets: true,
                    });
                }
                _ => sent.push(s),
            }
        }
        at += len;
    }
    (back, sent)
}

/// Queues `units` of `chunk` as runs of packets and runs of other blocks.
/// A run under half the chunk is copied: a small block kept after the
/// packets beside it were dropped must not keep the whole read alive (so a
/// segment pins at most twice what it counts).
fn push_by_kind(q: &mut Queue, chunk: &Bytes, units: &[(Range<usize>, bool)]) {
    let mut i = 0;
    while i < units.len() {
        let kind = units[i].1;
        let start = units[i].0.start;
        let mut j = i;
        while j < units.len() && units[j].1 == kind {
            j += 1;
        }
        let end = units[j - 1].0.end;
        let packets = if kind { (j - i) as u64 } else { 0 };
        let data = if (end - start) * 2 < chunk.len() {
            Bytes::copy_from_slice(&chunk[start..end])
        } else {
            chunk.slice(start..end)
        };
        q.push(data, packets, kind);
        i = j;
    }
}

/// How a client's stream ended.
pub enum Ended {
    /// The input ended and the client got all that was queued for it.
    Drained,
    /// Closed by --slow-client=disconnect.
    Slow,
    /// Closed after taking nothing for DRAIN_STALL at the end.
    Stalled,
    /// The connection broke (or the client went away).
    Lost(io::Error),
    /// The input restarted with a different header; the client got what
    /// was queued for it and its stream ended.
    NewStream,
    /// A kept client's connection broke: its queue is kept (what the
    /// kernel had not taken was put back), and `in_flight` packets it had
    /// taken were not acknowledged by the peer. The caller keeps it
    /// ([`Hub::keep_away`]) or gives it up ([`Client::give_up`]).
    Away { error: io::Error, in_flight: u64 },
}

/// One client of the relay: its queue, and its socket (to close it from
/// outside its writer).
pub struct Client {
    /// For messages: "client ADDR" or, with --connect, "HOST:PORT".
    name: String,
    queue: Mutex<Queue>,
    ready: Condvar,
    stats: Arc<ClientStats>,
    /// Its socket; None for standard output (--stdout), which has no peer
    /// to watch and is closed by ending the tool, and while a kept client
    /// is away.
    tcp: Mutex<Option<TcpStream>>,
    /// A --connect target: its queue outlives a broken connection.
    keep: bool,
}

impl Client {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn socket(&self) -> MutexGuard<'_, Option<TcpStream>> {
        self.tcp.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// Bytes and packets queued for it (its spool's included).
    pub fn queued(&self) -> (u64, u64) {
        let q = self.lock();
        let (sb, sp) = q.spool.as_ref().map_or((0, 0), |s| (s.bytes, s.packets));
        (
            q.bytes as u64 + sb,
            q.segments.iter().map(|s| s.packets).sum::<u64>() + sp,
        )
    }

    /// Closes the client from outside: its queue is dropped and its socket
    /// shut down, which ends a write its writer is blocked in.
    fn close(&self, q: &mut Queue, why: Closing) {
        q.closing = Some(why);
        q.discard(&self.stats);
        self.ready.notify_all();
        if let Some(tcp) = &*self.socket() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
    }

    /// A kept client that cannot be kept (the input began a new stream
    /// meanwhile): its queue is dropped, as a client's that left.
    pub fn give_up(&self) {
        let mut q = self.lock();
        if q.closing.is_none() {
            q.closing = Some(Closing::Gone);
        }
        q.discard(&self.stats);
    }

    /// Queues what fits of one read's units (`chunk`, cut at `units`, of
    /// which `packets` are packets). Returns false when the client was
    /// closed (too slow, or a block that is no packet fits nowhere); adds
    /// what to report to `events`.
    fn offer(
        &self,
        chunk: &Bytes,
        units: &[(Range<usize>, bool)],
        packets: u64,
        hub: &Hub,
        events: &mut Vec<(log::Level, String)>,
    ) -> bool {
        let mut q = self.lock();
        if q.closing.is_some() {
            return false;
        }
        let budget = &q.budget.clone();
        let own_full = q.bytes + chunk.len() > hub.limit;
        if let (true, Some(dir)) = (self.keep, &hub.spool) {
            if q.spool.is_some() || own_full || budget.room() < chunk.len() {
                return self.spool(&mut q, dir, chunk, units, packets, events);
            }
        }
        if !own_full && budget.room() < chunk.len() {
            budget.make_room(chunk.len(), self, hub.policy, events);
        }
        if !own_full && budget.room() >= chunk.len() {
            if packets == units.len() as u64 {
                q.push(chunk.clone(), packets, true);
            } else {
                // Packets apart from the other blocks, so that they can be
                // dropped later without the blocks (slices: no copy).
                push_by_kind(&mut q, chunk, units);
            }
            if q.dropping {
                q.dropping = false;
                if q.reported {
                    events.push((
                        log::Level::Info,
                        format!(
                            "{}: caught up; {} packets dropped for it so far",
                            self.name,
                            self.stats.dropped.load(Relaxed)
                        ),
                    ));
                }
            }
        } else {
            let bound = if own_full {
                format!("its buffer (--client-buffer {} bytes) is full", hub.limit)
            } else {
                format!(
                    "all clients' queues together (--max-buffer {} bytes) are full and its queue is the largest",
                    budget.max
                )
            };
            let Some((dropped, dropped_bytes)) = self.offer_some(&mut q, chunk, units, hub) else {
                self.stats.finish(State::Slow);
                self.close(&mut q, Closing::Slow);
                events.push((
                    log::Level::Warn,
                    format!(
                        "{}: too slow: {bound}, and a block of the stream that is no packet (it cannot be dropped) does not fit even without its queued packets; closing it; {}",
                        self.name,
                        self.stats.summary()
                    ),
                ));
                return false;
            };
            if dropped > 0 {
                self.stats.dropped(dropped, dropped_bytes);
                if hub.policy == SlowPolicy::Disconnect {
                    self.stats.finish(State::Slow);
                    self.close(&mut q, Closing::Slow);
                    events.push((
                        log::Level::Warn,
                        format!(
                            "{}: too slow: {bound}; closing it (--slow-client=disconnect); {}",
                            self.name,
                            self.stats.summary()
                        ),
                    ));
                    return false;
                }
                self.start_dropping(&mut q, &bound, events);
            }
        }
        self.stats.set_queued(q.bytes);
        self.ready.notify_one();
        true
    }

    /// Refills an empty queue from the client's spool (about a batch);
    /// the spool ends (its file removed) once read to its end. A spool
    /// that cannot be read is given up, its packets counted as dropped.
    fn unspool(&self, q: &mut Queue) {
        let Some(spool) = &mut q.spool else { return };
        match spool.read(BATCH) {
            Ok(pieces) => {
                for (data, packets, only_packets) in pieces {
                    q.push(data, packets, only_packets);
                }
            }
            Err(e) => {
                client_log!(
                    log::Level::Warn,
                    "{}: reading its spool failed: {e}; its {} spooled packets are dropped",
                    self.name,
                    spool.packets
                );
                self.stats.dropped(spool.packets, spool.bytes);
                q.spool = None;
                self.stats.set_spooled(0);
                return;
            }
        }
        let (bytes, empty) = q
            .spool
            .as_ref()
            .map_or((0, true), |s| (s.bytes, s.is_empty()));
        self.stats.set_spooled(bytes);
        if empty {
            q.spool = None;
        }
        self.stats.set_queued(q.bytes);
    }

    /// Packets are being dropped for the client because of `bound`: a new
    /// episode is reported (at most every DROP_REPORT_EVERY).
    fn start_dropping(&self, q: &mut Queue, bound: &str, events: &mut Vec<(log::Level, String)>) {
        if q.dropping {
            return;
        }
        q.dropping = true;
        q.reported = false;
        if q.report_due() {
            events.push((
                log::Level::Warn,
                format!(
                    "{}: too slow: {bound}; dropping packets for it until it catches up",
                    self.name
                ),
            ));
        }
    }

    /// Appends one read to the client's spool (made on first use). Beyond
    /// --spool-max its packets are dropped and counted; a block that is no
    /// packet and fits nowhere closes the client (its stream would be
    /// invalid without it). Returns false when the client was closed.
    fn spool(
        &self,
        q: &mut Queue,
        dir: &Arc<SpoolDir>,
        chunk: &Bytes,
        units: &[(Range<usize>, bool)],
        packets: u64,
        events: &mut Vec<(log::Level, String)>,
    ) -> bool {
        if q.spool.is_none() {
            match Spool::create(dir) {
                Ok(spool) => {
                    events.push((
                        log::Level::Info,
                        format!(
                            "{}: its queue is full; spooling to {} (--spool-max {} bytes for all)",
                            self.name,
                            spool.path().display(),
                            dir.max()
                        ),
                    ));
                    q.spool = Some(spool);
                }
                Err(e) => {
                    events.push((
                        log::Level::Warn,
                        format!(
                            "{}: cannot spool to {}: {e}; dropping its packets that do not fit in memory instead; check the directory's permissions and space",
                            self.name,
                            dir.dir().display()
                        ),
                    ));
                }
            }
        }
        let only_packets = packets == units.len() as u64;
        let appended = match q
            .spool
            .as_mut()
            .map(|s| s.append(chunk, packets, only_packets))
        {
            Some(Ok(true)) => true,
            Some(Ok(false)) | None => false,
            Some(Err(e)) => {
                events.push((
                    log::Level::Warn,
                    format!(
                        "{}: spooling failed: {e}; dropping its packets that do not fit in memory",
                        self.name
                    ),
                ));
                false
            }
        };
        if appended {
            if let Some(spool) = &q.spool {
                self.stats.set_spooled(spool.bytes);
            }
            return true;
        }
        if !only_packets {
            self.stats.finish(State::Slow);
            self.close(q, Closing::Slow);
            events.push((
                log::Level::Warn,
                format!(
                    "{}: too slow: its spool is full (--spool-max) and a block of the stream that is no packet cannot be dropped; closing it; {}",
                    self.name,
                    self.stats.summary()
                ),
            ));
            return false;
        }
        self.stats.dropped(packets, chunk.len() as u64);
        let bound = format!(
            "its spool is full (--spool-max {} bytes for all)",
            dir.max()
        );
        self.start_dropping(q, &bound, events);
        true
    }

    /// The queue cannot take the whole read: whole packets, in order, as
    /// long as they fit; the rest of the packets are not queued. Units that
    /// are no packets are queued, if need be after dropping the client's
    /// own queued packets; None when one fits even so in neither its own
    /// bound nor the budget (the client must be closed). Returns the
    /// packets (and their bytes) not queued.
    fn offer_some(
        &self,
        q: &mut Queue,
        chunk: &Bytes,
        units: &[(Range<usize>, bool)],
        hub: &Hub,
    ) -> Option<(u64, u64)> {
        // A piece that is a small part of the read is copied, so that it
        // does not keep the whole read's buffer alive.
        let push = |q: &mut Queue, run: Range<usize>, packets: u64, only_packets: bool| {
            let data = if run.len() * 2 < chunk.len() {
                Bytes::copy_from_slice(&chunk[run])
            } else {
                chunk.slice(run)
            };
            q.push(data, packets, only_packets);
        };
        // Whether `extra` more bytes fit, beside the run not yet queued.
        let fits = |q: &Queue, pending: usize, extra: usize| {
            q.bytes + pending + extra <= hub.limit && q.budget.room() >= pending + extra
        };
        // The units to queue next: all packets, or all other blocks (kept
        // apart, so that packets can be dropped later without the blocks).
        let mut run: Option<Range<usize>> = None;
        let (mut run_packets, mut run_kind) = (0, true);
        let mut full = false;
        let (mut dropped, mut dropped_bytes) = (0u64, 0u64);
        for (range, is_packet) in units {
            let pending = run.as_ref().map_or(0, |r| r.len());
            let keep = if *is_packet {
                !full && fits(q, pending, range.len())
            } else {
                if !fits(q, pending, range.len()) {
                    let short = (q.bytes + pending + range.len())
                        .saturating_sub(hub.limit)
                        .max((pending + range.len()).saturating_sub(q.budget.room()));
                    q.shed(short, &self.stats);
                    if !fits(q, pending, range.len()) {
                        return None;
                    }
                }
                true
            };
            if keep {
                if run_kind != *is_packet {
                    if let Some(r) = run.take() {
                        push(q, r, run_packets, run_kind);
                        run_packets = 0;
                    }
                }
                run_kind = *is_packet;
                run = Some(run.map_or(range.clone(), |r| r.start..range.end));
                run_packets += u64::from(*is_packet);
            } else {
                full = true;
                dropped += 1;
                dropped_bytes += range.len() as u64;
                if let Some(r) = run.take() {
                    push(q, r, run_packets, run_kind);
                    run_packets = 0;
                }
            }
        }
        if let Some(r) = run {
            push(q, r, run_packets, run_kind);
        }
        Some((dropped, dropped_bytes))
    }

    /// Whether the client has left: its connection was reset. Clients
    /// send nothing in PCAP-over-IP, so what one sent anyway is read and
    /// dropped (a bounded amount per call). The end of its bytes (a FIN)
    /// is not a departure: a reader that only closed its sending side
    /// (`ncat` with stdin at its end, `nc -N`) cannot be told from one that
    /// closed altogether until a write fails, and must keep its stream.
    /// Never blocks.
    fn departed(&self) -> Option<io::Error> {
        let mut sink = [MaybeUninit::<u8>::uninit(); 4096];
        let tcp = self.socket();
        let sock = SockRef::from(tcp.as_ref()?);
        let mut read = 0;
        while read < IDLE_DISCARD {
            match sock.recv_with_flags(&mut sink, libc::MSG_DONTWAIT) {
                Ok(0) => return None,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// The connection broke (`e`), unless we closed it ourselves: the
    /// queue is dropped (the hub queues no more for it). A kept client's
    /// queue is kept instead: the segments of `batch` the kernel did not
    /// take (`taken` bytes of it did) go back to its front, and what was in
    /// flight is counted.
    fn lost(
        &self,
        e: io::Error,
        flight: Option<(&mut Flight, Option<&TcpStream>, Option<u64>)>,
        batch: Vec<Segment>,
        taken: usize,
    ) -> Ended {
        if let Some((flight, tcp, wire)) = flight {
            let mut q = self.lock();
            if q.closing.is_none() || q.closing == Some(Closing::End) {
                let (back, sent) = split_taken(batch, taken, flight.framing);
                let (mut packets, mut bytes) = (0, 0);
                for s in &sent {
                    flight.wrote(&s.data, s.packets, s.data.len(), wire);
                    packets += s.packets;
                    bytes += s.data.len();
                }
                q.put_back(back);
                q.shrink(bytes);
                self.stats.sent(packets, bytes as u64);
                // Written after the receiver had closed, and not taken by
                // its kernel: never read; sent again.
                let again: Vec<Segment> = flight
                    .take_unread_after_close(tcp)
                    .into_iter()
                    .map(|(data, packets)| Segment {
                        only_packets: packets > 0,
                        data,
                        packets,
                    })
                    .collect();
                let (packets, bytes) = again
                    .iter()
                    .fold((0, 0), |(p, b), s| (p + s.packets, b + s.data.len()));
                q.grow(bytes);
                q.put_back(again);
                self.stats.unsent(packets, bytes as u64);
                self.stats.set_queued(q.bytes);
                let in_flight = flight.lost(tcp);
                self.stats.in_flight.fetch_add(in_flight, Relaxed);
                return Ended::Away {
                    error: e,
                    in_flight,
                };
            }
        }
        // What the failed write held is lost, and so is the rest of the
        // queue.
        let (packets, bytes) = batch
            .iter()
            .fold((0, 0), |(p, b), s| (p + s.packets, b + s.data.len() as u64));
        self.stats.dropped(packets, bytes);
        let mut q = self.lock();
        match q.closing {
            // Our own shutdown ended the write.
            Some(Closing::Slow) => Ended::Slow,
            Some(Closing::Stalled) => Ended::Stalled,
            _ => {
                q.closing = Some(Closing::Gone);
                q.discard(&self.stats);
                Ended::Lost(e)
            }
        }
    }

    /// The client's writer: sends what is queued until the queue is closed.
    /// At the end of the input, sends the rest and ends the stream. While
    /// there is nothing to send, notices a reset connection (IDLE_CHECK).
    pub fn run(&self, conn: &mut impl Output) -> Ended {
        let mut batch: Vec<Segment> = Vec::new();
        let mut data: Vec<Bytes> = Vec::new();
        // A kept client's record of what may still be unacknowledged.
        let mut flight = match (self.keep, conn.tcp()) {
            (true, Some(tcp)) => Some(Flight::new(tcp)),
            _ => None,
        };
        let mut next_check = Instant::now() + IDLE_CHECK;
        loop {
            let (mut bytes, mut packets) = (0, 0);
            {
                let mut q = self.lock();
                loop {
                    match q.closing {
                        Some(Closing::Slow) => return Ended::Slow,
                        Some(Closing::Stalled) => return Ended::Stalled,
                        _ => {}
                    }
                    if q.segments.is_empty() {
                        self.unspool(&mut q);
                    }
                    if !q.segments.is_empty() {
                        break;
                    }
                    if let Some(how @ (Closing::End | Closing::NewStream)) = q.closing {
                        drop(q);
                        return match conn.end() {
                            Ok(()) if how == Closing::End => Ended::Drained,
                            Ok(()) => Ended::NewStream,
                            Err(e) => Ended::Lost(e),
                        };
                    }
                    let now = Instant::now();
                    if now >= next_check {
                        next_check = now + IDLE_CHECK;
                        drop(q);
                        if let Some(f) = &mut flight {
                            f.note_peer_closed(conn.tcp());
                        }
                        if let Some(e) = self.departed() {
                            let wire = wire_end(conn);
                            let tcp = conn.tcp();
                            let flight = flight.as_mut().map(|f| (f, tcp, wire));
                            return self.lost(e, flight, Vec::new(), 0);
                        }
                        q = self.lock();
                        continue;
                    }
                    q = self
                        .ready
                        .wait_timeout(q, next_check - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                while let Some(s) = q.segments.front() {
                    if !batch.is_empty() && bytes + s.data.len() > BATCH {
                        break;
                    }
                    let s = q.segments.pop_front().expect("a front segment");
                    bytes += s.data.len();
                    packets += s.packets;
                    data.push(s.data.clone());
                    batch.push(s);
                }
            }
            if let Some(f) = &mut flight {
                f.note_peer_closed(conn.tcp());
            }
            let written = conn.write_segments(&data);
            data.clear();
            if let Err(Cut { error, taken }) = written {
                let wire = wire_end(conn);
                let tcp = conn.tcp();
                let batch = std::mem::take(&mut batch);
                return self.lost(error, flight.as_mut().map(|f| (f, tcp, wire)), batch, taken);
            }
            if let Some(f) = &mut flight {
                let wire = wire_end(conn);
                for s in &batch {
                    f.wrote(&s.data, s.packets, s.data.len(), wire);
                }
            }
            batch.clear();
            let mut q = self.lock();
            q.shrink(bytes);
            self.stats.set_queued(q.bytes);
            drop(q);
            self.stats.sent(packets, bytes as u64);
        }
    }
}

struct HubState {
    header: Header,
    clients: Vec<Arc<Client>>,
    /// The input ended: no client joins any more.
    ended: bool,
}

/// The fan-out hub: every client's queue, and the stream's header.
pub struct Hub {
    state: Mutex<HubState>,
    /// A client joined or left.
    changed: Condvar,
    /// Each client's queue bound, in bytes (--client-buffer).
    limit: usize,
    policy: SlowPolicy,
    registry: Arc<Registry>,
    /// All clients' queues together, over every hub (--max-buffer).
    budget: Arc<Budget>,
    /// A --shards port's consumer whose connection broke: kept, with its
    /// queue, for the next client of the port.
    kept: Mutex<Option<Arc<Client>>>,
    /// --spool: where kept clients' queues overflow to.
    spool: Option<Arc<SpoolDir>>,
}

/// Why a client cannot join.
#[derive(Debug)]
pub enum Refusal {
    /// The input has ended.
    Ended,
    /// The input's header blocks exceed MAX_HEADER with an interface
    /// among those not kept: the client cannot be given a valid stream.
    Incomplete,
}

impl Hub {
    pub fn new(
        limit: usize,
        policy: SlowPolicy,
        registry: Arc<Registry>,
        budget: Arc<Budget>,
    ) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                header: Header::default(),
                clients: Vec::new(),
                ended: false,
            }),
            changed: Condvar::new(),
            limit,
            policy,
            registry,
            budget,
            kept: Mutex::new(None),
            spool: None,
        }
    }

    /// Kept clients overflow to `dir` (--spool) instead of dropping.
    pub fn spooling(mut self, dir: Option<Arc<SpoolDir>>) -> Hub {
        self.spool = dir;
        self
    }

    /// The shard's consumer kept while away, if any, for a client that
    /// connects to the shard's port (it resumes the kept queue).
    pub fn take_kept(&self) -> Option<Arc<Client>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        // Closed meanwhile (the input ended and it did not come back).
        if kept.lock().closing.is_some_and(|c| c != Closing::End) {
            self.leave(&kept);
            return None;
        }
        Some(kept)
    }

    /// Keeps `client` (a shard's consumer, away: [`Hub::keep_away`] said
    /// yes) for the next client of the shard's port; one is kept at most
    /// (an earlier one is given up).
    pub fn set_kept(&self, client: Arc<Client>) {
        let earlier = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(client);
        if let Some(earlier) = earlier {
            earlier.give_up();
            self.leave(&earlier);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a client (`tcp`: a handle on its socket), its queue holding the
    /// stream's header so far (the header's bytes are shared, and at most
    /// MAX_HEADER: they are queued without asking the budget).
    pub fn join(
        &self,
        name: String,
        tcp: Option<TcpStream>,
        stats: Arc<ClientStats>,
    ) -> Result<Arc<Client>, Refusal> {
        self.join_as(name, tcp, stats, false)
    }

    /// Like `join`, for a --connect target: its queue is kept while its
    /// connection is down ([`Hub::keep_away`]).
    pub fn join_kept(
        &self,
        name: String,
        tcp: TcpStream,
        stats: Arc<ClientStats>,
    ) -> Result<Arc<Client>, Refusal> {
        self.join_as(name, Some(tcp), stats, true)
    }

    fn join_as(
        &self,
        name: String,
        tcp: Option<TcpStream>,
        stats: Arc<ClientStats>,
        keep: bool,
    ) -> Result<Arc<Client>, Refusal> {
        let mut s = self.lock();
        if s.ended {
            return Err(Refusal::Ended);
        }
        if s.header.incomplete {
            return Err(Refusal::Incomplete);
        }
        let mut queue = Queue {
            segments: VecDeque::new(),
            bytes: 0,
            budget: self.budget.clone(),
            closing: None,
            dropping: false,
            reported: false,
            last_report: None,
            spool: None,
        };
        for unit in &s.header.units {
            queue.push(unit.clone(), 0, false);
        }
        stats.set_queued(queue.bytes);
        log::debug!(
            "{name}: joined the relay ({} bytes of header queued)",
            queue.bytes
        );
        let client = Arc::new(Client {
            name,
            queue: Mutex::new(queue),
            ready: Condvar::new(),
            stats,
            tcp: Mutex::new(tcp),
            keep,
        });
        s.clients.push(client.clone());
        self.budget.members().push(Arc::downgrade(&client));
        self.changed.notify_all();
        Ok(client)
    }

    /// A kept client's connection broke (its writer returned
    /// [`Ended::Away`]): it stays in the relay, its queue bounded as before
    /// (--client-buffer, --max-buffer: whole packets are dropped beyond; with
    /// --spool, what does not fit goes to its spool file first), until
    /// [`Hub::resume`]. False when it cannot be kept: the input began a new
    /// stream since, or the client was closed (then the caller gives it up).
    pub fn keep_away(&self, client: &Arc<Client>) -> bool {
        let s = self.lock();
        if !s.clients.iter().any(|c| Arc::ptr_eq(c, client)) {
            return false;
        }
        let q = client.lock();
        if q.closing.is_some_and(|c| c != Closing::End) {
            return false;
        }
        *client.socket() = None;
        client.stats.set_away(true);
        true
    }

    /// A kept client that was away is back on a new connection (`tcp`: a
    /// handle on its socket). Its queue starts with the stream's header,
    /// so that the connection gets a valid stream: the header, then the
    /// packets it missed, in order. Queued blocks that are no packets are
    /// dropped: the header carries them (pcapng interfaces; other blocks
    /// within its bound). False when it cannot be given a valid stream (a
    /// new stream began, or the header was too large to keep whole): the
    /// caller gives it up and joins anew.
    pub fn resume(&self, client: &Arc<Client>, tcp: TcpStream) -> bool {
        let s = self.lock();
        if s.header.incomplete || !s.clients.iter().any(|c| Arc::ptr_eq(c, client)) {
            return false;
        }
        let mut q = client.lock();
        if q.closing.is_some_and(|c| c != Closing::End) {
            return false;
        }
        let mut freed = 0;
        q.segments.retain(|seg| {
            if !seg.only_packets && seg.packets == 0 {
                freed += seg.data.len();
                return false;
            }
            true
        });
        q.shrink(freed);
        if let Some(spool) = &mut q.spool {
            spool.skip_blocks_before_now();
        }
        for unit in s.header.units.iter().rev() {
            q.grow(unit.len());
            q.segments.push_front(Segment {
                data: unit.clone(),
                packets: 0,
                only_packets: false,
            });
        }
        client.stats.set_queued(q.bytes);
        *client.socket() = Some(tcp);
        client.stats.set_away(false);
        true
    }

    /// Removes a client whose writer has ended.
    pub fn leave(&self, client: &Arc<Client>) {
        let mut s = self.lock();
        s.clients.retain(|c| !Arc::ptr_eq(c, client));
        let me = Arc::downgrade(client);
        self.budget
            .members()
            .retain(|w| w.strong_count() > 0 && !w.ptr_eq(&me));
        self.changed.notify_all();
    }

    /// Waits until `n` clients are connected at once.
    pub fn wait_for_clients(&self, n: usize) {
        let mut s = self.lock();
        while s.clients.len() < n {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// What one client's queue can hold at most: --client-buffer, or
    /// --max-buffer when that is less.
    pub fn limit(&self) -> usize {
        self.limit.min(self.budget.max)
    }

    pub fn ended(&self) -> bool {
        self.lock().ended
    }

    /// Hands one read's units to every client: `units` must cover `chunk`
    /// whole (a client's queue takes the chunk at once when it fits).
    pub fn broadcast(&self, chunk: &Bytes, units: &[(Range<usize>, bool)]) {
        let packets = units.iter().filter(|u| u.1).count() as u64;
        self.registry.input_packets.fetch_add(packets, Relaxed);
        self.registry
            .input_bytes
            .fetch_add(chunk.len() as u64, Relaxed);
        let mut events = Vec::new();
        {
            let mut s = self.lock();
            for (range, is_packet) in units {
                match s.header.observe(&chunk[range.clone()], *is_packet) {
                    None => {}
                    Some(Overflow::Dropped) => events.push((
                        log::Level::Warn,
                        format!("the input's header blocks exceed {} KiB: blocks other than the section header and interfaces past that are not kept for the clients that join later", MAX_OTHER >> 10),
                    )),
                    Some(Overflow::Incomplete) => events.push((
                        log::Level::Warn,
                        format!("the input's header blocks exceed {} KiB with an interface block among those past it: clients that join from now on are refused until the input restarts (the connected ones keep their streams)", MAX_HEADER >> 10),
                    )),
                }
            }
            s.clients
                .retain(|c| c.offer(chunk, units, packets, self, &mut events));
        }
        // Reported outside the lock: a slow stderr holds up no client.
        for (level, message) in events {
            client_log!(level, "{message}");
        }
    }

    /// The stream's header as a client joining now gets it.
    pub fn header_units(&self) -> Vec<Bytes> {
        self.lock().header.units.clone()
    }

    /// The input restarted with a header unlike the clients' (`why`): each
    /// client gets what is queued for it, then the end of its stream (a
    /// client that takes nothing more for DRAIN_STALL is closed); the
    /// header starts anew, for the clients that join from now on.
    pub fn new_stream(&self, why: &str) {
        let closed: Vec<Arc<Client>> = {
            let mut s = self.lock();
            s.header = Header::default();
            std::mem::take(&mut s.clients)
        };
        for c in &closed {
            let mut q = c.lock();
            if q.closing.is_none() {
                q.closing = Some(Closing::NewStream);
                // Bounds a writer blocked on a client that reads no more.
                if let Some(tcp) = &*c.socket() {
                    let _ = tcp.set_write_timeout(Some(DRAIN_STALL));
                }
                client_log!(
                    log::Level::Warn,
                    "{}: ending its stream: {why}; it gets the new stream when it reconnects",
                    c.name
                );
            }
            c.ready.notify_all();
        }
        self.changed.notify_all();
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    /// The input ended: each client gets what is queued for it, then the
    /// end of its stream; no client joins any more.
    pub fn end(&self) {
        let mut s = self.lock();
        s.ended = true;
        for c in &s.clients {
            let mut q = c.lock();
            if q.closing.is_none() {
                q.closing = Some(Closing::End);
            }
            c.ready.notify_all();
        }
    }

    /// After `end`: waits until every client has its stream; a client that
    /// takes nothing for DRAIN_STALL is closed.
    pub fn drain(&self) {
        // Each client's bytes sent when last seen to move, and when.
        let mut seen: Vec<(Arc<Client>, u64, Instant)> = Vec::new();
        let mut s = self.lock();
        while !s.clients.is_empty() {
            let mut away: Vec<Arc<Client>> = Vec::new();
            let now = Instant::now();
            seen.retain(|(c, ..)| s.clients.iter().any(|d| Arc::ptr_eq(c, d)));
            for c in &s.clients {
                let sent = c.stats.bytes.load(Relaxed);
                match seen.iter_mut().find(|(d, ..)| Arc::ptr_eq(c, d)) {
                    None => seen.push((c.clone(), sent, now)),
                    Some(e) if e.1 != sent => (e.1, e.2) = (sent, now),
                    Some(e) if now.duration_since(e.2) >= DRAIN_STALL => {
                        let mut q = c.lock();
                        if q.closing == Some(Closing::End) {
                            let queued = q.bytes;
                            c.stats.finish(State::Stalled);
                            c.close(&mut q, Closing::Stalled);
                            // A kept client that is away has no writer to
                            // leave the hub: it leaves here.
                            if c.socket().is_none() && c.keep {
                                away.push(c.clone());
                            }
                            client_log!(
                                log::Level::Warn,
                                "{}: took nothing for {} s after the end of the input; closing it with {queued} bytes unsent; {}",
                                c.name,
                                DRAIN_STALL.as_secs(),
                                c.stats.summary()
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
            s.clients
                .retain(|c| !away.iter().any(|a| Arc::ptr_eq(a, c)));
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap header and `n` records of `len` bytes of data each.
    fn pcap(n: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        for i in 0..n {
            v.extend_from_slice(&(i as u32).to_le_bytes());
            v.extend_from_slice(&[0; 4]);
            v.extend_from_slice(&(len as u32).to_le_bytes());
            v.extend_from_slice(&(len as u32).to_le_bytes());
            v.extend(std::iter::repeat_n(i as u8, len));
        }
        v
    }

    use pcapovertcp::parse::{Limits, StreamParser};

    fn units(data: &[u8]) -> Vec<(Range<usize>, bool)> {
        let mut units = Vec::new();
        StreamParser::new(Limits::default())
            .parse_units(data, |r, rec| units.push((r, rec.is_some())))
            .unwrap();
        units
    }

    /// A client whose socket is the near end of a loopback connection.
    fn client(hub: &Hub) -> (Arc<Client>, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let far = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let near = l.accept().unwrap().0;
        let stats = hub.registry.add("client=test".into());
        (
            hub.join("client test".into(), Some(near), stats).unwrap(),
            far,
        )
    }

    #[test]
    fn a_full_queue_drops_whole_packets_and_counts_them() {
        let registry = Arc::new(Registry::new(true));
        // Room for the header and three 116-byte records.
        let hub = Hub::new(
            24 + 3 * 116,
            SlowPolicy::Drop,
            registry,
            Budget::new(1 << 20),
        );
        let (c, _far) = client(&hub);
        let data = pcap(5, 100);
        let chunk = Bytes::from(data.clone());
        hub.broadcast(&chunk, &units(&data));
        let q = c.lock();
        let queued: Vec<u8> = q.segments.iter().flat_map(|s| s.data.to_vec()).collect();
        assert_eq!(queued, data[..24 + 3 * 116]);
        assert_eq!(q.segments.iter().map(|s| s.packets).sum::<u64>(), 3);
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(c.stats.dropped.load(Relaxed), 2);
        assert_eq!(c.stats.dropped_bytes.load(Relaxed), 2 * 116);
    }

    #[test]
    fn disconnect_closes_the_client_and_empties_its_queue() {
        let registry = Arc::new(Registry::new(true));
        let hub = Hub::new(100, SlowPolicy::Disconnect, registry, Budget::new(1 << 20));
        let (c, _far) = client(&hub);
        let data = pcap(2, 100);
        hub.broadcast(&Bytes::from(data.clone()), &units(&data));
        assert!(hub.lock().clients.is_empty());
        assert_eq!(c.lock().closing, Some(Closing::Slow));
        assert_eq!(c.stats.state(), State::Slow);
    }

    #[test]
    fn full_queues_together_make_the_largest_drop_its_oldest_packets() {
        let registry = Arc::new(Registry::new(true));
        let data = pcap(10, 100);
        let chunk = Bytes::from(data.clone());
        // Room for one whole read and a half, over both clients.
        let budget = Budget::new(data.len() * 3 / 2);
        let hub = Hub::new(1 << 20, SlowPolicy::Drop, registry, budget.clone());
        let (stuck, _far) = client(&hub);
        hub.broadcast(&chunk, &units(&data));
        let (fresh, _far2) = client(&hub);
        let more = pcap(10, 100)[24..].to_vec();
        let more_units: Vec<_> = units(&pcap(10, 100))[1..]
            .iter()
            .map(|(r, p)| (r.start - 24..r.end - 24, *p))
            .collect();
        hub.broadcast(&Bytes::from(more.clone()), &more_units);
        // The newcomer got the whole read; the stuck one gave way.
        assert_eq!(fresh.lock().bytes, 24 + more.len());
        assert_eq!(fresh.stats.dropped.load(Relaxed), 0);
        assert!(stuck.stats.dropped.load(Relaxed) > 0);
        assert!(budget.total.load(Relaxed) <= budget.max);
        // Its header (no packet) is never dropped.
        let q = stuck.lock();
        assert!(q.segments.front().is_some_and(|s| s.data[..4] == data[..4]));
    }

    #[test]
    fn a_block_that_fits_nowhere_closes_the_client() {
        let registry = Arc::new(Registry::new(true));
        let hub = Hub::new(300, SlowPolicy::Drop, registry, Budget::new(1 << 20));
        let (c, _far) = client(&hub);
        // A "unit" of 400 bytes that is no packet.
        let chunk = Bytes::from(vec![0u8; 400]);
        hub.broadcast(&chunk, &[(0..400, false)]);
        assert_eq!(c.lock().closing, Some(Closing::Slow));
        assert_eq!(c.lock().bytes, 0);
    }
}
