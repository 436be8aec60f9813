//! One connection's stream: reads the socket in large chunks, parses whole
//! records out of them with the connection's own parser (its own header,
//! byte order, resolution and link types), and hands each read's records
//! on as one batch: to the hand-off when the source has one connection, to its
//! lane of the merge when it has several.
//!
//! Bytes go from the socket straight into a `BytesMut`; the parsed prefix is
//! split off and frozen, so packets reach Zeek without a copy. Only a record
//! cut by the end of a buffer is copied, once, to the front of the next one.
//! A buffer is reused as soon as Zeek has released every packet in it, and
//! never zero-filled: the kernel writes it directly.
//!
//! The socket's receive timeout ([`crate::net::connect::TICK`]) is this loop's
//! clock while the peer is quiet: it notices a closing source, a missing
//! header and `idle_timeout` without a second thread. TCP keepalive notices
//! a peer that stopped answering (the read then fails with ETIMEDOUT).
//!
//! A listening sender delivers nowhere until its header is whole: its lane
//! and counters are handed over then ([`Outlet::Joined`]), when the
//! listener admits it.

use std::cell::OnceCell;
use std::io::ErrorKind;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::handoff::queue::{Batch, HandOff, Push};
use crate::merge::Lane;
use crate::net::compress::{is_zstd_frame, CompressError};
use crate::shared::control::{Control, NOTICE_AFTER};
use crate::shared::counters::Counters;
use crate::shared::error::Error;
use crate::shared::facts::Fact;
use crate::shared::read_buffers;
use crate::shared::sync::lock;
use crate::stream::parse::{Record, StreamParser};
use crate::stream::share::{Sharer, Verdict};
use crate::tls::{is_tls_hello, TlsError, Transport};

/// Reads are at most this large: a buffer's size with few connections
/// (with many, buffers are smaller: see [`read_buffers`]).
pub const READ_SIZE: usize = read_buffers::BUFFER;
/// A buffer with less room than this left is reclaimed or replaced before the
/// next read.
const MIN_READ: usize = 64 * 1024;
/// At close, a connection reads at most this much of what is left in its
/// socket ([`Reader::drain`]), for at most [`DRAIN_TIME`]: enough for any
/// receive buffer Linux gives by default (`tcp_rmem`, 6 MiB), and quick.
pub const DRAIN_MAX: usize = 64 << 20;
pub const DRAIN_TIME: Duration = Duration::from_millis(200);

/// Where one connection's batches go. A dialled endpoint opens one per
/// connection (see [`crate::stream::dialler::Outlets`]); a listening
/// sender's is [`Outlet::Joined`].
pub(crate) enum Outlet<'a> {
    /// The source's one connection: straight to the hand-off.
    HandOff(&'a HandOff),
    /// One of several: its own lane of the merge, which ends when the
    /// connection does (the lane is dropped with it).
    Lane(Lane),
    /// A listening sender: to its lane, which `on_header` sets once the
    /// sender is admitted (no record comes before the header).
    Joined(&'a OnceCell<Joined>),
}

/// A listening sender's place among the senders, from its admission on.
pub(crate) struct Joined {
    pub counters: Arc<Counters>,
    pub lane: Lane,
    pub heard: Arc<Heard>,
}

/// When a connection last sent packets (at first: when it was admitted),
/// so that a full listener can tell which sender has been silent longest.
#[derive(Debug)]
pub(crate) struct Heard(Mutex<Instant>);

impl Default for Heard {
    fn default() -> Self {
        Heard(Mutex::new(Instant::now()))
    }
}

impl Heard {
    fn packets_now(&self) {
        *lock(&self.0) = Instant::now();
    }

    pub fn silent_for(&self) -> Duration {
        lock(&self.0).elapsed()
    }
}

impl Outlet<'_> {
    fn push(&self, batch: Batch, drop_when_full: bool) -> Push {
        match self {
            Outlet::HandOff(hand_off) => hand_off.push(batch, drop_when_full),
            Outlet::Lane(lane) => lane.push(batch, drop_when_full),
            Outlet::Joined(joined) => match joined.get() {
                Some(j) => j.lane.push(batch, drop_when_full),
                // Not admitted: nothing may be delivered.
                None => Push::Closed,
            },
        }
    }

    /// Packets arrived (whichever worker's share they are).
    fn heard(&self) {
        if let Outlet::Joined(joined) = self {
            if let Some(j) = joined.get() {
                j.heard.packets_now();
            }
        }
    }

    /// How long pushes waited for room (TCP backpressure) since last asked.
    fn take_waited(&self) -> Duration {
        match self {
            Outlet::HandOff(hand_off) => hand_off.take_waited(),
            Outlet::Lane(lane) => lane.take_waited(),
            Outlet::Joined(joined) => joined
                .get()
                .map_or(Duration::ZERO, |j| j.lane.take_waited()),
        }
    }
}

/// How one connection ended.
pub(crate) enum End {
    /// The source is closing.
    Stopped,
    /// The peer closed the connection.
    PeerClosed,
    Failed(Error),
    /// `on_header` turned the connection away (and said why).
    Refused,
}

/// One connection's settings and destinations.
pub(crate) struct Reader<'a> {
    pub control: &'a Control,
    /// Names the peer in messages: the endpoint, or the sender's address.
    pub label: &'a str,
    /// The endpoint as written (a listen endpoint for a listening sender),
    /// and the sender as `stats()$senders` names it: for facts.
    pub source: &'a str,
    pub sender: &'a str,
    /// What it counts against: for a listening sender, until it is
    /// admitted (then its [`Joined`] counters take over).
    pub counters: &'a Counters,
    pub outlet: Outlet<'a>,
    /// The source waits for this connection's header to open: say what it
    /// waits for (`open_timeout`'s error quotes it).
    pub opens_source: bool,
    /// Close a connection whose header has not arrived by then, however
    /// it trickles in (checked at every read, which waits at most a tick).
    pub header_deadline: Option<Instant>,
}

/// Called once a connection's header has arrived; `Err` ends it.
pub(crate) type OnHeader<'f> = dyn FnMut(&StreamParser, i32) -> Result<(), End> + 'f;

impl Reader<'_> {
    /// Reads the stream until it ends; calls `on_header` once its header has
    /// arrived. Returns how it ended and how many records it handed on.
    pub fn read(&self, transport: &mut Transport, on_header: &mut OnHeader) -> (End, u64) {
        let mut handed = 0;
        let mut upstream = Upstream::default();
        let buffers = &self.control.read_buffers;
        let mut buf = buffers.first();
        let end = self.read_loop(transport, on_header, &mut buf, &mut handed, &mut upstream);
        // For the source's next reads.
        buffers.last(buf);
        if let End::Failed(Error::Stream { .. }) = &end {
            self.counters().add_corrupt();
        }
        upstream.flush(self);
        (end, handed)
    }

    /// The counters this connection counts against now.
    fn counters(&self) -> &Counters {
        match &self.outlet {
            Outlet::Joined(joined) => joined.get().map_or(self.counters, |j| &j.counters),
            _ => self.counters,
        }
    }

    fn read_loop(
        &self,
        transport: &mut Transport,
        on_header: &mut OnHeader,
        // Holds the unparsed tail between reads: at most one partial
        // record, bounded by the parser's limits.
        buf: &mut BytesMut,
        handed: &mut u64,
        upstream: &mut Upstream,
    ) -> End {
        let control = self.control;
        let endpoint = || self.label.to_string();
        let mut parser = StreamParser::new(control.config.limits);
        let mut header_seen = false;
        let connected = Instant::now();
        let mut last_data = connected;
        if self.opens_source && !control.startup.is_open() {
            control.startup.note_waiting(format!(
                "{} accepted the connection but sent no pcap header",
                self.label
            ));
        }
        let mut share = control.config.share.map(|s| Share {
            index: s.index,
            sharer: Sharer::new(control.config.share_by, s.count),
            warned: Vec::new(),
        });
        let mut records: Vec<Record> = Vec::new();
        // The source is closing: what is left in the socket is counted
        // on the way out (see `drain`).
        macro_rules! stopped {
            () => {{
                self.drain(transport, &mut parser, buf, &mut share, upstream);
                return End::Stopped;
            }};
        }
        loop {
            if control.stopping() {
                stopped!();
            }
            // At every turn, not only when the peer is quiet: a header sent
            // a byte at a time must not evade the deadline.
            if !header_seen && self.header_deadline.is_some_and(|d| Instant::now() >= d) {
                return End::Failed(Error::HeaderTimeout {
                    endpoint: endpoint(),
                    seconds: control
                        .config
                        .header_timeout
                        .unwrap_or_default()
                        .as_secs_f64(),
                    bytes: buf.len(),
                });
            }
            control.read_buffers.make_room(buf, MIN_READ);
            let n = match transport.read_into(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) if control.stopping() => stopped!(),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The receive timeout: nothing arrived for one tick.
                    control.read_buffers.quiet();
                    if !header_seen && self.opens_source && connected.elapsed() >= NOTICE_AFTER {
                        control.startup.mention_wait(&format!(
                            "{}: connected, but no pcap header has arrived after {} s ({} bytes so far)",
                            self.label,
                            NOTICE_AFTER.as_secs(),
                            buf.len(),
                        ));
                    }
                    if let Some(limit) = control.config.idle_timeout {
                        if last_data.elapsed() >= limit {
                            self.end_mid_record(&parser, buf.len());
                            return End::Failed(Error::Idle {
                                endpoint: endpoint(),
                                seconds: limit.as_secs_f64(),
                            });
                        }
                    }
                    continue;
                }
                Err(source) if source.kind() == ErrorKind::TimedOut => {
                    self.end_mid_record(&parser, buf.len());
                    return End::Failed(Error::DeadPeer {
                        endpoint: endpoint(),
                        seconds: control
                            .config
                            .keepalive
                            .map_or(0.0, |k| k.bound().as_secs_f64()),
                    });
                }
                Err(source) => {
                    self.end_mid_record(&parser, buf.len());
                    return End::Failed(read_error(self.label, source));
                }
            };
            if n == 0 {
                if control.stopping() {
                    stopped!();
                }
                if !header_seen {
                    let endpoint = endpoint();
                    return End::Failed(if self.opens_source {
                        Error::NoHeader { endpoint }
                    } else {
                        Error::SenderNoHeader { endpoint }
                    });
                }
                self.end_mid_record(&parser, buf.len());
                return End::PeerClosed;
            }
            last_data = Instant::now();
            self.counters().add_bytes(n);
            let parsed = parser.parse(buf, &mut records);
            upstream.add(self, &mut parser);
            if !records.is_empty() {
                self.outlet.heard();
            }
            if let Some(share) = &mut share {
                share.keep_ours(buf, &mut records, self);
            }
            // The header may arrive in the same read as a corruption: note it
            // first, so that the corruption counts as one after `open`.
            if !header_seen {
                if let Some(lt) = parser.link_type() {
                    header_seen = true;
                    if let Err(end) = on_header(&parser, lt) {
                        return end;
                    }
                } else if self.opens_source && !control.startup.is_open() {
                    control.startup.note_waiting(format!(
                        "{} sent {} bytes, not yet a whole pcap header",
                        self.label,
                        buf.len()
                    ));
                }
            }
            let consumed = match parsed {
                Ok(c) => c,
                Err(source) => {
                    // The packets parsed before the corrupt unit are delivered;
                    // their chunk carries the rest of the read along, unused.
                    if !records.is_empty() {
                        let batch = Batch::new(buf.split().freeze(), std::mem::take(&mut records));
                        *handed += batch.records.len() as u64;
                        self.hand_over(batch);
                    }
                    if !header_seen && is_tls_hello(buf) {
                        return End::Failed(Error::TlsOnPlain {
                            endpoint: endpoint(),
                        });
                    }
                    if !header_seen && is_zstd_frame(buf) {
                        return End::Failed(Error::ZstdOnPlain {
                            endpoint: endpoint(),
                        });
                    }
                    return End::Failed(Error::Stream {
                        endpoint: endpoint(),
                        source,
                    });
                }
            };
            if consumed == 0 {
                continue;
            }
            let chunk = buf.split_to(consumed).freeze();
            if records.is_empty() {
                continue;
            }
            *handed += records.len() as u64;
            // The next read likely carries as many records: size for it once.
            let next = Vec::with_capacity(records.len());
            let batch = Batch::new(chunk, std::mem::replace(&mut records, next));
            if !self.hand_over(batch) {
                stopped!();
            }
        }
    }

    /// Counts a batch's records and hands it on (which may drop it when
    /// full, with `drop_when_full`); false once the source is closing.
    fn hand_over(&self, batch: Batch) -> bool {
        let counters = self.counters();
        counters.add_records(batch.records.len());
        // A push that waits for room shows in `backpressure` while it waits.
        counters.push_started();
        let pushed = self.outlet.push(batch, self.control.config.drop_when_full);
        counters.push_ended(self.outlet.take_waited());
        match pushed {
            Push::Queued => true,
            Push::Dropped(n) => {
                counters.add_dropped(n);
                true
            }
            Push::Closed => false,
        }
    }

    /// The source is closing: reads what is left in the socket, without
    /// waiting, and counts its whole records (with the unfinished one in
    /// `buf`) as received and never analysed ([`Counters::add_unread`]).
    /// A record cut off at the end is no packet received: the sender
    /// counts it as in flight. Bounded by [`DRAIN_MAX`] bytes and
    /// [`DRAIN_TIME`]; the socket is dropped as soon as this returns.
    ///
    /// Closing shut the socket for reading before the reader got here; on
    /// Linux, data that arrives after that resets the connection instead of
    /// being acknowledged, so what this reads is all the kernel acknowledged
    /// (within the bounds).
    fn drain(
        &self,
        transport: &mut Transport,
        parser: &mut StreamParser,
        buf: &mut BytesMut,
        share: &mut Option<Share>,
        upstream: &mut Upstream,
    ) {
        // Dropped with a reset, not a FIN: Linux sends no window update
        // once a socket is shut for reading, so a sender that had filled
        // the window would wait for one until the orphaned socket's FIN
        // timeout (60 s); the reset tells it now (as closing with bytes
        // unread did before this read them).
        let _ = socket2::SockRef::from(transport.tcp()).set_linger(Some(Duration::ZERO));
        if transport.tcp().set_nonblocking(true).is_err() {
            return;
        }
        let started = Instant::now();
        let mut read = 0;
        let mut whole = 0;
        let mut records = Vec::new();
        while read < DRAIN_MAX && started.elapsed() < DRAIN_TIME {
            if buf.capacity() - buf.len() < MIN_READ {
                buf.reserve(READ_SIZE);
            }
            let n = match transport.read_into(buf) {
                // A TLS record not yet whole: read on.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The end of what the kernel holds (`WouldBlock`, or 0
                // once the socket is shut), or of the connection.
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            read += n;
            self.counters().add_bytes(n);
            let parsed = parser.parse(buf, &mut records);
            upstream.add(self, parser);
            if let Some(share) = share {
                share.keep_ours(buf, &mut records, self);
            }
            whole += records.len() as u64;
            records.clear();
            match parsed {
                Ok(consumed) => {
                    let _ = buf.split_to(consumed);
                }
                // What parsed before the corruption is counted.
                Err(_) => break,
            }
        }
        if whole > 0 {
            self.counters().add_unread(whole);
        }
    }

    /// Accounts for a record cut off by the end of the connection.
    fn end_mid_record(&self, parser: &StreamParser, leftover: usize) {
        if leftover > 0 && parser.link_type().is_some() {
            self.counters().add_truncated();
            crate::shared::logger::warning!(
                "{}: the connection ended in the middle of a record; its {leftover} bytes were discarded",
                self.label
            );
        }
    }
}

/// The drops the stream's capture host reports (pcapng drop counts),
/// counted for the sender at once and told to the scripts at most once
/// per [`UPSTREAM_FACT_EVERY`] per connection (and at its end), so that a
/// stream of packet blocks that each carry a drop count does not become
/// an event per read.
#[derive(Default)]
struct Upstream {
    /// Drops not yet told.
    untold: u64,
    /// When they were last told.
    told: Option<Instant>,
}

/// How often a connection tells the scripts about new upstream drops.
pub const UPSTREAM_FACT_EVERY: Duration = Duration::from_secs(1);

impl Upstream {
    fn add(&mut self, c: &Reader, parser: &mut StreamParser) {
        let new = parser.take_new_drops();
        if new == 0 {
            return;
        }
        c.counters().add_upstream_dropped(new);
        if self.untold == 0 {
            crate::shared::logger::debug!(
                "{}: the capture host reports drops, by interface (epb, isb): {:?}",
                c.label,
                parser.drops_by_interface()
            );
        }
        self.untold = self.untold.saturating_add(new);
        if self.told.is_none_or(|t| t.elapsed() >= UPSTREAM_FACT_EVERY) {
            self.flush(c);
        }
    }

    fn flush(&mut self, c: &Reader) {
        if self.untold == 0 {
            return;
        }
        c.control.messages.fact(Fact::UpstreamDrops {
            source: c.source.to_string(),
            sender: c.sender.to_string(),
            dropped: std::mem::take(&mut self.untold),
            total: c.counters().snapshot().upstream_dropped,
        });
        self.told = Some(Instant::now());
    }
}

/// `?share=I/N`: which records are this worker's.
struct Share {
    index: u32,
    sharer: Sharer,
    /// Link types already reported as not hashable.
    warned: Vec<i32>,
}

impl Share {
    /// Drops the records of other shares, here in the reader thread, so
    /// that they cost Zeek nothing; they are counted, not as drops.
    fn keep_ours(&mut self, buf: &[u8], records: &mut Vec<Record>, c: &Reader) {
        let before = records.len();
        records.retain(|r| {
            let share = match self.sharer.share_of(r.data(buf), r.dlt, r.ts_sec) {
                Verdict::Share(s) => s,
                Verdict::NotIp {
                    unhashable_link_type,
                } => {
                    if let Some(lt) = unhashable_link_type.filter(|lt| !self.warned.contains(lt)) {
                        self.warned.push(lt);
                        crate::shared::logger::warning!(
                            "{}: packets of link type {lt} cannot be assigned to a share by their flow; all of them go to share 0",
                            c.label
                        );
                    }
                    0
                }
            };
            share == self.index
        });
        c.counters().add_other_share(before - records.len());
    }
}

/// A failed read as the operator's error: a TLS or decompression failure
/// in its own words.
pub(crate) fn read_error(label: &str, source: std::io::Error) -> Error {
    let inner = source.get_ref();
    if let Some(tls) = inner.and_then(|e| e.downcast_ref::<TlsError>()) {
        return Error::Tls {
            endpoint: label.to_string(),
            what: tls.0.clone(),
        };
    }
    if let Some(zstd) = inner.and_then(|e| e.downcast_ref::<CompressError>()) {
        return Error::Compressed {
            endpoint: label.to_string(),
            what: zstd.0.clone(),
        };
    }
    Error::Read {
        endpoint: label.to_string(),
        source,
    }
}
