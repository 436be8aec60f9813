//! The live relay (standard input, --exec, --upstream): the input is cut
//! into whole units (header blocks and records, see [`crate::input`]) and
//! handed to a fan-out hub (one per --shards share), which puts them
//! in one bounded queue per client; each client has its own writer thread.
//!
//! The hub never waits for a client. When a client's queue is full
//! (--client-buffer), whole packets are dropped for that client and counted
//! (--slow-client=drop), or the client is closed (--slow-client=disconnect).
//! Blocks that are no packets (the pcapng interfaces) are always queued, so
//! every client's stream stays valid.
//!
//! The bytes are shared, not copied: what one read of the input brought is
//! one buffer ([`Bytes`]) that every client's queue refers to.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::SockRef;

use crate::conn::Conn;
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
    /// Queued bytes, with those of the batch its writer is writing.
    bytes: usize,
    closing: Option<Closing>,
    /// Whether packets were dropped since the client last kept up.
    dropping: bool,
    /// Whether the current dropping episode was reported.
    reported: bool,
    /// When an episode was last reported.
    last_report: Option<Instant>,
}

impl Queue {
    fn push(&mut self, data: Bytes, packets: u64) {
        self.bytes += data.len();
        self.segments.push_back(Segment { data, packets });
    }

    /// Empties the queue (the client is closed): what it held is dropped.
    fn discard(&mut self, stats: &ClientStats) {
        let (mut packets, mut bytes) = (0, 0);
        for s in self.segments.drain(..) {
            packets += s.packets;
            bytes += s.data.len() as u64;
        }
        stats.dropped(packets, bytes);
        self.bytes = 0;
        stats.set_queued(0);
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
}

/// One client of the relay: its queue, and its socket (to close it from
/// outside its writer).
pub struct Client {
    /// For messages: "client ADDR" or, with --connect, "HOST:PORT".
    name: String,
    queue: Mutex<Queue>,
    ready: Condvar,
    stats: Arc<ClientStats>,
    tcp: TcpStream,
}

impl Client {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the client from outside: its queue is dropped and its socket
    /// shut down, which ends a write its writer is blocked in.
    fn close(&self, q: &mut Queue, why: Closing) {
        q.closing = Some(why);
        q.discard(&self.stats);
        self.ready.notify_all();
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Queues what fits of one read's units (`chunk`, cut at `units`, of
    /// which `packets` are packets). Returns false when the client was
    /// closed as too slow; adds what to report to `events`.
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
        if q.bytes + chunk.len() <= hub.limit {
            q.push(chunk.clone(), packets);
            if q.dropping {
                q.dropping = false;
                if q.reported {
                    events.push((
                        log::Level::Info,
                        format!(
                            "{}: caught up; {} packets dropped for it so far",
                            self.name,
                            self.stats
                                .dropped
                                .load(std::sync::atomic::Ordering::Relaxed)
                        ),
                    ));
                }
            }
        } else {
            let (dropped, dropped_bytes) = self.offer_some(&mut q, chunk, units, hub.limit);
            if dropped > 0 {
                self.stats.dropped(dropped, dropped_bytes);
                if hub.policy == SlowPolicy::Disconnect {
                    self.stats.finish(State::Slow);
                    self.close(&mut q, Closing::Slow);
                    events.push((
                        log::Level::Warn,
                        format!(
                            "{}: too slow: its buffer (--client-buffer {} bytes) is full; closing it (--slow-client=disconnect); {}",
                            self.name,
                            hub.limit,
                            self.stats.summary()
                        ),
                    ));
                    return false;
                }
                if !q.dropping {
                    q.dropping = true;
                    let now = Instant::now();
                    q.reported = q
                        .last_report
                        .is_none_or(|t| now.duration_since(t) >= DROP_REPORT_EVERY);
                    if q.reported {
                        q.last_report = Some(now);
                        events.push((
                            log::Level::Warn,
                            format!(
                                "{}: too slow: its buffer (--client-buffer {} bytes) is full; dropping packets for it until it catches up",
                                self.name, hub.limit
                            ),
                        ));
                    }
                }
            }
        }
        self.stats.set_queued(q.bytes);
        self.ready.notify_one();
        true
    }

    /// The queue cannot take the whole read: whole packets, in order, as
    /// long as they fit; the rest of the packets are not queued. Units that
    /// are no packets are always queued. Returns the packets (and their
    /// bytes) not queued.
    fn offer_some(
        &self,
        q: &mut Queue,
        chunk: &Bytes,
        units: &[(Range<usize>, bool)],
        limit: usize,
    ) -> (u64, u64) {
        // A piece that is a small part of the read is copied, so that it
        // does not keep the whole read's buffer alive.
        let push = |q: &mut Queue, run: Range<usize>, packets: u64| {
            let data = if run.len() * 2 < chunk.len() {
                Bytes::copy_from_slice(&chunk[run])
            } else {
                chunk.slice(run)
            };
            q.push(data, packets);
        };
        let mut run: Option<Range<usize>> = None;
        let mut run_packets = 0;
        let mut full = false;
        let (mut dropped, mut dropped_bytes) = (0u64, 0u64);
        for (range, is_packet) in units {
            let pending = run.as_ref().map_or(0, |r| r.len());
            let keep = !is_packet || (!full && q.bytes + pending + range.len() <= limit);
            if keep {
                run = Some(run.map_or(range.clone(), |r| r.start..range.end));
                run_packets += u64::from(*is_packet);
            } else {
                full = true;
                dropped += 1;
                dropped_bytes += range.len() as u64;
                if let Some(r) = run.take() {
                    push(q, r, run_packets);
                    run_packets = 0;
                }
            }
        }
        if let Some(r) = run {
            push(q, r, run_packets);
        }
        (dropped, dropped_bytes)
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
        let sock = SockRef::from(&self.tcp);
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
    /// queue is dropped (the hub queues no more for it).
    fn lost(&self, e: io::Error) -> Ended {
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
    pub fn run(&self, conn: &mut Conn) -> Ended {
        let mut batch = Vec::new();
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
                        if let Some(e) = self.departed() {
                            return self.lost(e);
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
                    batch.push(s.data);
                }
            }
            let written = conn.write_segments(&batch);
            batch.clear();
            if let Err(e) = written {
                // What the failed write held is lost, and so is the rest of
                // the queue.
                self.stats.dropped(packets, bytes as u64);
                return self.lost(e);
            }
            let mut q = self.lock();
            q.bytes = q.bytes.saturating_sub(bytes);
            self.stats.set_queued(q.bytes);
            drop(q);
            self.stats.sent(packets, bytes as u64);
        }
    }
}

/// The header blocks a client that joins later gets first: the pcap file
/// header, or pcapng's section header and interfaces.
#[derive(Default)]
struct Header {
    units: Vec<Bytes>,
    /// A packet came: later blocks are no longer header, but for pcapng's
    /// interface descriptions (packets may refer to them) and a new
    /// section (which starts a new header).
    done: bool,
    pcapng: bool,
    big_endian: bool,
}

impl Header {
    fn observe(&mut self, unit: &[u8], is_packet: bool) {
        if is_packet {
            self.done = true;
            return;
        }
        if unit.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            self.pcapng = true;
            self.big_endian = unit.get(8..12) == Some(&[0x1a, 0x2b, 0x3c, 0x4d][..]);
            if self.done {
                self.units.clear();
                self.done = false;
            }
        }
        let is_interface = || {
            let t = [unit[0], unit[1], unit[2], unit[3]];
            let t = if self.big_endian {
                u32::from_be_bytes(t)
            } else {
                u32::from_le_bytes(t)
            };
            t == 1
        };
        if !self.done || (self.pcapng && unit.len() >= 4 && is_interface()) {
            self.units.push(Bytes::copy_from_slice(unit));
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
}

impl Hub {
    pub fn new(limit: usize, policy: SlowPolicy, registry: Arc<Registry>) -> Hub {
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
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a client (`tcp`: a handle on its socket), its queue holding the
    /// stream's header so far; None once the input has ended.
    pub fn join(
        &self,
        name: String,
        tcp: TcpStream,
        stats: Arc<ClientStats>,
    ) -> Option<Arc<Client>> {
        let mut s = self.lock();
        if s.ended {
            return None;
        }
        let mut queue = Queue {
            segments: VecDeque::new(),
            bytes: 0,
            closing: None,
            dropping: false,
            reported: false,
            last_report: None,
        };
        for unit in &s.header.units {
            queue.push(unit.clone(), 0);
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
            tcp,
        });
        s.clients.push(client.clone());
        self.changed.notify_all();
        Some(client)
    }

    /// Removes a client whose writer has ended.
    pub fn leave(&self, client: &Arc<Client>) {
        let mut s = self.lock();
        s.clients.retain(|c| !Arc::ptr_eq(c, client));
        self.changed.notify_all();
    }

    /// Waits until `n` clients are connected at once.
    pub fn wait_for_clients(&self, n: usize) {
        let mut s = self.lock();
        while s.clients.len() < n {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Each client's queue bound (--client-buffer).
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn ended(&self) -> bool {
        self.lock().ended
    }

    /// Hands one read's units to every client: `units` must cover `chunk`
    /// whole (a client's queue takes the chunk at once when it fits).
    pub fn broadcast(&self, chunk: &Bytes, units: &[(Range<usize>, bool)]) {
        use std::sync::atomic::Ordering::Relaxed;
        let packets = units.iter().filter(|u| u.1).count() as u64;
        self.registry.input_packets.fetch_add(packets, Relaxed);
        self.registry
            .input_bytes
            .fetch_add(chunk.len() as u64, Relaxed);
        let mut events = Vec::new();
        {
            let mut s = self.lock();
            for (range, is_packet) in units {
                s.header.observe(&chunk[range.clone()], *is_packet);
            }
            s.clients
                .retain(|c| c.offer(chunk, units, packets, self, &mut events));
        }
        // Reported outside the lock: a slow stderr holds up no client.
        for (level, message) in events {
            log::log!(level, "{message}");
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
                let _ = c.tcp.set_write_timeout(Some(DRAIN_STALL));
                log::warn!(
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
        use std::sync::atomic::Ordering::Relaxed;
        // Each client's bytes sent when last seen to move, and when.
        let mut seen: Vec<(Arc<Client>, u64, Instant)> = Vec::new();
        let mut s = self.lock();
        while !s.clients.is_empty() {
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
                            log::warn!(
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
        (hub.join("client test".into(), near, stats).unwrap(), far)
    }

    #[test]
    fn a_full_queue_drops_whole_packets_and_counts_them() {
        let registry = Arc::new(Registry::new(true));
        // Room for the header and three 116-byte records.
        let hub = Hub::new(24 + 3 * 116, SlowPolicy::Drop, registry);
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
        let hub = Hub::new(100, SlowPolicy::Disconnect, registry);
        let (c, _far) = client(&hub);
        let data = pcap(2, 100);
        hub.broadcast(&Bytes::from(data.clone()), &units(&data));
        assert!(hub.lock().clients.is_empty());
        assert_eq!(c.lock().closing, Some(Closing::Slow));
        assert_eq!(c.stats.state(), State::Slow);
    }

    #[test]
    fn a_late_client_gets_the_header_and_later_interfaces() {
        // pcapng (little-endian): SHB, IDB, EPB-like packet unit, IDB.
        let mut h = Header::default();
        let shb = [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
        let idb = [1, 0, 0, 0, 20, 0, 0, 0];
        let nrb = [4, 0, 0, 0, 12, 0, 0, 0];
        h.observe(&shb, false);
        h.observe(&idb, false);
        h.observe(&[6, 0, 0, 0], true);
        h.observe(&nrb, false);
        h.observe(&idb, false);
        assert_eq!(h.units.len(), 3);
        // A new section starts a new header.
        h.observe(&shb, false);
        assert_eq!(h.units.len(), 1);
    }
}
