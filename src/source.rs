//! The consumer side, driven by Zeek's main loop through the shim: start the
//! source, wait (in short steps, so that the shim can report progress) for
//! the stream's header, take packets one at a time, count them, close.
//! Nothing here blocks once the source is open, and closing returns within
//! a second whatever the reader is doing.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::Level;

use crate::endpoint::{Endpoint, Spec};
use crate::handoff::queue::{Batch, HandOff, Pop};
use crate::merge::{Merge, Timing};
use crate::shared::config::{Config, MAX_INTERVAL};
use crate::shared::control::Control;
pub use crate::shared::control::Opening;
use crate::shared::counters::Snapshot;
use crate::shared::error::Error;
use crate::shared::messages::Messages;
use crate::shared::setting::Names;
use crate::stream::reader::Outlet;
use crate::stream::{dialler, listener};
use crate::tls::{ClientTls, ServerTls};

/// The link type a listening source opens with, before any sender has
/// connected: Ethernet, the common case. It only decides which link type
/// Zeek checks the capture filter against at start-up; every packet carries
/// its own link type, and the filter is compiled for each one seen.
pub const NOMINAL_LINK_TYPE: i32 = 1;

/// How long `close` waits for the reader thread before leaving it to end on
/// its own (it holds nothing the consumer needs).
const CLOSE_WAIT: Duration = Duration::from_millis(900);

/// One packet, valid until the next call to `Source::next_packet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub data: &'a [u8],
    pub wirelen: u32,
    pub ts_sec: i64,
    /// Nanoseconds (as fine as the stream's resolution).
    pub ts_nsec: u32,
    pub dlt: i32,
    /// The sender it came from: its index in `senders()`.
    pub input: u32,
    /// The interface it was captured on, numbered within its sender's
    /// stream (pcapng's interface id; 0 in a pcap stream).
    pub interface: u32,
}

impl Packet<'_> {
    /// Microseconds, truncated as libpcap does: what Zeek is given.
    pub fn ts_usec(&self) -> u32 {
        self.ts_nsec / 1000
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Packet(Packet<'a>),
    /// Nothing waiting; the selectable fd turns readable when that changes.
    Empty,
    /// The stream is over and every packet was delivered.
    Ended,
}

/// Statistics in Zeek's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handed to Zeek and accepted by its filter.
    pub received: u64,
    /// Packets lost by the source: dropped while the buffer was full
    /// (`drop_when_full`) or cut off by the end of a connection; and those
    /// the capture hosts say they dropped (`upstream_dropped`; with
    /// `?share=I/N`, on share 0 only).
    pub dropped: u64,
    /// Records read from the stream.
    pub link: u64,
    /// Wire bytes of the received packets.
    pub bytes_received: u64,
    /// Packets rejected by the BPF filter.
    pub filtered: u64,
}

pub struct Source {
    control: Arc<Control>,
    /// The addresses listened on.
    listening: Vec<SocketAddr>,
    /// With several connections: the merge, whose budget is the buffer.
    merge: Option<Arc<Merge>>,
    link_type: Option<i32>,
    current: Option<Batch>,
    next_record: usize,
    last_wirelen: u32,
    stats: Stats,
    /// Packets taken by the consumer, by sender index (their `input`):
    /// what closing subtracts to find each sender's unanalysed records.
    taken: Vec<u64>,
    /// Closing has counted the unanalysed records (once).
    settled: bool,
}

impl Source {
    /// Checks the interface name, binds its listen endpoints and starts its
    /// threads; returns at once. Then call `wait_open` until the source
    /// opens or fails.
    pub fn start(path: &str, config: Config) -> Result<Source, Error> {
        Source::start_with_names(path, config, crate::shared::setting::zeek)
    }

    /// As [`Source::start`], for a front end other than the Zeek plugin:
    /// its messages (and errors, rendered with [`Error::render`]) name
    /// settings with `names`.
    pub fn start_with_names(path: &str, config: Config, names: Names) -> Result<Source, Error> {
        let spec = Spec::parse(path)?;
        let label = spec.to_string();
        let config = Config {
            share: spec.share.filter(|s| s.count > 1),
            ..config
        }
        .normalized();
        let setup = |source| Error::Setup {
            endpoint: label.clone(),
            source,
        };
        // One connect endpoint goes straight to the hand-off, which then holds
        // the whole budget; several go through the merge, whose budget
        // bounds them all, so the hand-off needs no bound of its own.
        let direct = match spec.endpoints.as_slice() {
            [one] => !one.scheme().is_listen(),
            _ => false,
        };
        // The certificate files are read now, once: a mistake in them is
        // an error at start-up, not one per connection.
        let dials_tls = |e: &&Endpoint| e.scheme().is_tls() && !e.scheme().is_listen();
        let client_tls = match spec.endpoints.iter().any(|e| dials_tls(&e)) {
            true => Some(ClientTls::new(&config.tls)?),
            false => None,
        };
        if let Some(tls) = &client_tls {
            for e in spec.endpoints.iter().filter(dials_tls) {
                tls.server_name(e.host())
                    .map_err(|what| Error::TlsSetup(crate::tls::SetupError::BadServerName(what)))?;
            }
        }
        let server_tls = match spec
            .endpoints
            .iter()
            .any(|e| e.scheme().is_tls() && e.scheme().is_listen())
        {
            true => Some(ServerTls::new(&config.tls)?),
            false => None,
        };
        let tls_for = |e: &Endpoint| match dials_tls(&e) {
            true => client_tls.clone(),
            false => None,
        };
        let capacity = if direct {
            config.buffer_size
        } else {
            usize::MAX
        };
        let hand_off = HandOff::new(capacity).map_err(setup)?;
        let messages = Arc::new(Messages::with_names(names));
        // Before any thread runs, so that no fact is missed.
        if config.events {
            messages.enable_facts();
        }
        let control = Arc::new(Control::new(label.clone(), config, hand_off, messages));
        {
            // A message wakes an idle consumer, so that it is reported now.
            let weak = Arc::downgrade(&control);
            control.messages.on_message(move || {
                if let Some(c) = weak.upgrade() {
                    c.hand_off.notify();
                }
            });
        }
        let mut source = Source {
            control: control.clone(),
            listening: Vec::new(),
            merge: None,
            link_type: None,
            current: None,
            next_record: 0,
            last_wirelen: 0,
            stats: Stats::default(),
            taken: Vec::new(),
            settled: false,
        };
        // A source that listens is open from the start; one that only
        // connects has `open_timeout` to get its first stream.
        let listens = spec.endpoints.iter().any(|e| e.scheme().is_listen());
        if let (false, Some(limit)) = (listens, control.config.open_timeout) {
            let now = Instant::now();
            let deadline = now.checked_add(limit).unwrap_or(now + MAX_INTERVAL);
            control
                .spawn("pcapovertcp open_timeout".into(), move |c| {
                    c.watch_open(deadline)
                })
                .map_err(setup)?;
        }
        if direct {
            let endpoint = spec.endpoints[0].clone();
            let counters = control.counters.sender(&endpoint.to_string());
            let tls = tls_for(&endpoint);
            control
                .spawn(format!("pcapovertcp {endpoint}"), move |c| {
                    let _end = EndHandOff(&c.hand_off);
                    let outlets = Box::new(|| Outlet::HandOff(&c.hand_off));
                    dialler::run(c, &endpoint, &counters, outlets, tls.as_ref());
                })
                .map_err(setup)?;
            return Ok(source);
        }
        // Bound before anything starts, so that a port in use is the error.
        let mut bound = Vec::new();
        for endpoint in spec.endpoints.iter().filter(|e| e.scheme().is_listen()) {
            let b = listener::bind(endpoint)?;
            source.listening.extend(b.local_addrs());
            bound.push((endpoint.clone(), b));
        }
        let config = &control.config;
        let timing = Timing::new(
            config.merge_window,
            config.merge_max_hold,
            config.merge_max_skew,
        );
        let merge = Merge::new(timing, config.buffer_size);
        source.merge = Some(merge.clone());
        {
            let merge = merge.clone();
            control.on_stop(move || merge.stop());
        }
        for endpoint in spec.endpoints.iter().filter(|e| !e.scheme().is_listen()) {
            let endpoint = endpoint.clone();
            let (input, counters) = control.counters.sender_indexed(&endpoint.to_string());
            let producer = merge.producer();
            // Every endpoint's lane exists before any thread runs: a dialler
            // scheduled late must not find another's stream released
            // already.
            let mut first = Some(merge.lane(counters.clone(), input, &endpoint.to_string()));
            let merge = merge.clone();
            let tls = tls_for(&endpoint);
            control
                .spawn(format!("pcapovertcp {endpoint}"), move |c| {
                    let _producer = producer;
                    let (lane_counters, label) = (counters.clone(), endpoint.to_string());
                    let outlets =
                        Box::new(move || {
                            Outlet::Lane(first.take().unwrap_or_else(|| {
                                merge.lane(lane_counters.clone(), input, &label)
                            }))
                        });
                    dialler::run(c, &endpoint, &counters, outlets, tls.as_ref());
                })
                .map_err(setup)?;
        }
        // One `max_senders` for every listen endpoint of the source.
        let admission = listener::Admission::new(&control.config);
        for (endpoint, b) in bound {
            let addrs = b.local_addrs();
            let producer = merge.producer();
            let merge = merge.clone();
            let admission = admission.clone();
            let tls = match endpoint.scheme().is_tls() {
                true => server_tls.clone(),
                false => None,
            };
            control
                .spawn(format!("pcapovertcp {endpoint}"), move |c| {
                    let _producer = producer;
                    listener::run(c, &merge, b, tls, admission);
                })
                .map_err(setup)?;
            let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            crate::shared::logger::routed(&control.messages, || {
                crate::shared::logger::info!(
                    "{endpoint}: listening on {}; senders may connect now",
                    addrs.join(" and ")
                )
            });
        }
        control
            .spawn("pcapovertcp merge".into(), move |c| merge.run(&c.hand_off))
            .map_err(setup)?;
        if listens {
            // Listening is open: senders come and go from now on.
            control.startup.opened(NOMINAL_LINK_TYPE);
        }
        Ok(source)
    }

    /// The addresses the source listens on (its listen endpoints, bound).
    pub fn listening(&self) -> &[SocketAddr] {
        &self.listening
    }

    /// Waits at most `limit` for the stream's header (or a failure: the
    /// start-up's own, or `open_timeout`, which a thread of the source
    /// enforces whatever the peer does); a failure closes the source (its
    /// messages stay readable).
    ///
    /// Zeek's shim does not wait: it opens the source at once (packets
    /// carry their own link type) and learns of a start-up failure from
    /// [`Source::take_failure`].
    pub fn wait_open(&mut self, limit: Duration) -> Opening {
        if let Some(lt) = self.link_type {
            return Opening::Open(lt);
        }
        // Checked: `limit` comes from the caller; an overflowing deadline is
        // one that never comes.
        let now = Instant::now();
        let until = now.checked_add(limit).unwrap_or_else(|| now + MAX_INTERVAL);
        let outcome = self.control.startup.wait_open(until);
        match &outcome {
            Opening::Open(lt) => self.link_type = Some(*lt),
            Opening::Failed(_) => self.close(),
            Opening::Waiting => {}
        }
        outcome
    }

    /// Why the source failed before any stream arrived (no whole header
    /// within `open_timeout`, a refused connect with `reconnect` off, a peer
    /// that speaks no pcap, ...), once; the source is then closed. For a
    /// consumer that does not wait in [`Source::wait_open`]: ask whenever
    /// `next_packet` has nothing (the selectable fd turns readable for it).
    pub fn take_failure(&mut self) -> Option<Error> {
        let e = self.control.startup.take_failure()?;
        self.close();
        Some(e)
    }

    /// `start`, then waits for the stream's header (or a failure).
    pub fn open(path: &str, config: Config) -> Result<Source, Error> {
        let mut source = Source::start(path, config)?;
        loop {
            match source.wait_open(Duration::from_secs(1)) {
                Opening::Open(_) => return Ok(source),
                Opening::Waiting => {}
                Opening::Failed(e) => return Err(e),
            }
        }
    }

    /// The DLT_ value of the stream (its first interface's for pcapng), for
    /// compiling BPF filters; `None` until open.
    pub fn link_type(&self) -> Option<i32> {
        self.link_type
    }

    /// The fd Zeek polls after `Next::Empty`; it turns readable when packets,
    /// messages or the end arrive. After a packet, ask again without waiting
    /// for it.
    pub fn selectable_fd(&self) -> RawFd {
        self.control.hand_off.wake_fd()
    }

    /// For consumers outside Zeek: after `Next::Empty`, waits on the
    /// selectable fd as Zeek's loop does, at most `limit`; whether it turned
    /// readable.
    pub fn wait(&self, limit: Duration) -> bool {
        self.control.hand_off.wait(limit)
    }

    /// Whether messages for the operator are waiting; cheap.
    pub fn has_messages(&self) -> bool {
        self.control.messages.pending()
    }

    /// This source's messages for the operator, oldest first.
    pub fn take_messages(&self) -> Vec<(Level, String)> {
        self.control.messages.take()
    }

    /// The facts for the front end's scripts (with `Config::events`),
    /// oldest first; take them before the messages, which say how many
    /// were dropped.
    pub fn take_facts(&self) -> Vec<crate::shared::facts::Fact> {
        self.control.messages.take_facts()
    }

    /// The next packet, if one is waiting. Never blocks. The previous packet's
    /// bytes are released here, which is what makes them valid until Zeek's
    /// `DoneWithPacket()`.
    pub fn next_packet(&mut self) -> Next<'_> {
        while self
            .current
            .as_ref()
            .is_none_or(|b| self.next_record >= b.records.len())
        {
            let done = self.current.take().map_or(0, |b| b.cost());
            self.next_record = 0;
            match self.control.hand_off.pop(done) {
                Pop::Batch(b) => self.current = Some(b),
                Pop::Empty => return Next::Empty,
                Pop::Ended => return Next::Ended,
            }
        }
        let Some((r, data, part)) = self
            .current
            .as_ref()
            .and_then(|b| b.record(self.next_record))
        else {
            return Next::Empty; // unreachable: the loop above ensured a record
        };
        self.next_record += 1;
        // Indices are bounded by the senders listed (MAX_SENDERS_LISTED).
        let input = part.input as usize;
        match self.taken.get_mut(input) {
            Some(n) => *n += 1,
            None => {
                self.taken.resize(input + 1, 0);
                self.taken[input] = 1;
            }
        }
        self.stats.received += 1;
        self.stats.bytes_received += u64::from(r.wirelen);
        self.last_wirelen = r.wirelen;
        Next::Packet(Packet {
            data,
            wirelen: r.wirelen,
            ts_sec: r.ts_sec,
            ts_nsec: r.ts_nsec,
            dlt: r.dlt,
            input: part.input,
            interface: r.interface,
        })
    }

    /// The packet last returned did not reach Zeek's analysis: it was
    /// rejected by the BPF filter (`filtered`) or dropped as empty.
    pub fn not_delivered(&mut self, filtered: bool) {
        self.stats.received = self.stats.received.saturating_sub(1);
        self.stats.bytes_received = self
            .stats
            .bytes_received
            .saturating_sub(u64::from(self.last_wirelen));
        if filtered {
            self.stats.filtered += 1;
        }
    }

    pub fn stats(&self) -> Stats {
        let (link, lost, upstream) = self.control.counters.records_and_lost();
        // Upstream drops count as Zeek's pcapng reader counts them, in
        // `dropped`. Every worker sharing a stream reads its drop counts:
        // only share 0 adds them, so that a cluster's sum counts them once.
        let upstream = match self.control.config.share {
            Some(share) if share.index != 0 => 0,
            _ => upstream,
        };
        Stats {
            link,
            dropped: lost.saturating_add(upstream),
            ..self.stats
        }
    }

    /// The counters (connections, bytes, drops, ...) summed over senders.
    pub fn counters(&self) -> Snapshot {
        self.control.counters.total()
    }

    /// How many senders `senders()` lists.
    pub fn sender_count(&self) -> usize {
        self.control.counters.count()
    }

    /// The `index`th sender's counters; cheap enough for a metrics scrape.
    pub fn sender_at(&self, index: usize) -> Option<Snapshot> {
        self.control.counters.sender_at(index)
    }

    /// The address of the sender whose index a packet carries
    /// ([`Packet::input`]): stable for the life of the source.
    pub fn sender_address(&self, input: u32) -> Option<String> {
        self.control.counters.address_at(input as usize)
    }

    /// Bytes of the buffer in use (queued or held by Zeek), and its size.
    pub fn buffer(&self) -> (usize, usize) {
        let used = match &self.merge {
            Some(merge) => merge.used(),
            None => self.control.hand_off.used(),
        };
        (used, self.control.config.buffer_size)
    }

    /// Each sender's counters: a connect endpoint's, or a listening
    /// source's sender address's, in order of first appearance.
    pub fn senders(&self) -> Vec<(String, Snapshot)> {
        self.control.counters.senders()
    }

    /// Stops the reader thread and releases the buffer. Idempotent; returns
    /// within a second in every reader state (each of them gives way to
    /// the stop signal within a tick, and a reader that does not is left to
    /// end on its own).
    ///
    /// The packets received and never analysed (still in the buffer, or
    /// unread in a socket, which each reader reads on its way out) are
    /// counted as `unanalysed` and said in one line, if there are any.
    pub fn close(&mut self) {
        self.control.stop();
        self.current = None;
        if !self.control.join_threads(Instant::now() + CLOSE_WAIT) {
            crate::shared::logger::routed(&self.control.messages, || {
                crate::shared::logger::warning!(
                    "{}: a thread of the source did not stop within {} ms; left to end on its own",
                    self.control.label,
                    CLOSE_WAIT.as_millis()
                )
            });
        }
        if !std::mem::replace(&mut self.settled, true) {
            self.settle_unanalysed();
        }
    }

    /// Counts and says what was received and never analysed.
    fn settle_unanalysed(&self) {
        let counters = &self.control.counters;
        let (total, unread) = counters.settle_unanalysed(&self.taken);
        if total == 0 {
            return;
        }
        let packets = if total == 1 { "packet" } else { "packets" };
        let sockets = if counters.count() > 1 {
            "sockets"
        } else {
            "socket"
        };
        crate::shared::logger::routed(&self.control.messages, || {
            crate::shared::logger::warning!(
                "{}: closing with {total} {packets} received but not analysed ({} in the source's buffer, {unread} unread in its {sockets}); what was sent after them was not acknowledged: the sender counts it as in flight",
                self.control.label,
                total - unread,
            )
        });
    }
}

/// Ends the hand-off when dropped: the one connection's thread has ended,
/// normally or not.
struct EndHandOff<'a>(&'a HandOff);

impl Drop for EndHandOff<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connect_endpoint_has_its_lane_when_start_returns() {
        // Ports nobody listens on: the diallers keep trying. Their lanes
        // must exist before their threads run, or a dialler scheduled late
        // finds the others' packets released past it.
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap()
        };
        let spec = format!("127.0.0.1:{},127.0.0.1:{}", free(), free());
        let mut source = Source::start(&spec, Config::default()).unwrap();
        let lanes = source.merge.as_ref().map(|m| m.lanes());
        source.close();
        assert_eq!(lanes, Some(2));
    }
}
