//! The reader thread: connects, reads the socket in large chunks, parses whole
//! records out of them and hands each read's records to the ring as one batch;
//! when a connection ends or fails, reconnects with exponential backoff (or,
//! with `reconnect` off, lets the source end).
//!
//! Bytes go from the socket straight into a `BytesMut`; the parsed prefix is
//! split off and frozen, so packets reach Zeek without a copy. Only a record
//! cut by the end of a buffer is copied, once, to the front of the next one.
//! A buffer is reused as soon as Zeek has released every packet in it, and
//! never zero-filled: the kernel writes it directly.

use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use socket2::SockRef;

use crate::error::Error;
use crate::parse::{Record, StreamParser};
use crate::ring::{Batch, Push};
use crate::source::Shared;

/// Reads are at most this large; a buffer is this large.
pub const READ_SIZE: usize = 1 << 20;
/// A buffer with less room than this left is reclaimed or replaced before the
/// next read.
const MIN_READ: usize = 64 * 1024;

/// Runs the reader until the stream ends for good or the source is closed.
pub(crate) fn run(shared: Arc<Shared>) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| supervise(&shared)));
    if let Err(panic) = result {
        let e = Error::Internal {
            endpoint: shared.endpoint.to_string(),
            message: panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into()),
        };
        log::error!("{e}");
        shared.fail(e);
    }
    shared.ring.finish();
}

/// How one connection ended.
enum End {
    /// The source is closing.
    Stopped,
    /// The server closed the connection.
    Closed,
    Failed(Error),
}

/// The outage in progress, reported once when it starts and once when it ends.
struct Outage {
    since: Instant,
}

fn supervise(shared: &Shared) {
    let config = &shared.config;
    let endpoint = shared.endpoint.to_string();
    let started = Instant::now();
    let mut backoff = config.reconnect_min;
    let mut outage: Option<Outage> = None;
    let mut link_type: Option<i32> = None;
    let mut waiting_reported = false;
    loop {
        let mut delivered = false;
        let end = session(shared, &mut link_type, &mut outage, &mut delivered);
        let (reason, error) = match end {
            End::Stopped => return,
            End::Closed => ("the server closed the connection".to_string(), None),
            End::Failed(e) => (e.to_string(), Some(e)),
        };
        if !shared.is_open() {
            // Still in open(): fail it, or keep waiting for a first stream.
            let e = error.unwrap_or(Error::NoHeader {
                endpoint: endpoint.clone(),
            });
            let waited_out = config
                .open_timeout
                .is_some_and(|limit| started.elapsed() >= limit);
            if !config.reconnect || waited_out || !e.is_transient() {
                shared.fail(e);
                return;
            }
            if !waiting_reported {
                log::warn!("{e}; waiting for the server (PcapOverTcp::open_timeout)");
                waiting_reported = true;
            }
        } else if !config.reconnect {
            if let Some(e) = error {
                log::error!("{e}");
            }
            return;
        } else if outage.is_none() {
            log::warn!("{endpoint}: connection lost ({reason}); reconnecting");
            outage = Some(Outage {
                since: Instant::now(),
            });
        }
        if delivered {
            backoff = config.reconnect_min;
        }
        let mut wait = backoff;
        if let Some(limit) = config.open_timeout.filter(|_| !shared.is_open()) {
            wait = wait.min(limit.saturating_sub(started.elapsed()));
        }
        if !shared.sleep(wait) {
            return;
        }
        backoff = (backoff * 2).min(config.reconnect_max);
    }
}

/// One connection, from connect to its end.
fn session(
    shared: &Shared,
    link_type: &mut Option<i32>,
    outage: &mut Option<Outage>,
    delivered: &mut bool,
) -> End {
    let endpoint = shared.endpoint.to_string();
    let mut stream = match connect(shared) {
        Ok(s) => s,
        Err(e) => return End::Failed(e),
    };
    if shared.stopping() {
        return End::Stopped;
    }
    shared.counters.connected();
    let end = read_stream(shared, &mut stream, link_type, outage, delivered);
    shared.counters.disconnected();
    let _ = stream.shutdown(Shutdown::Both);
    if let End::Failed(Error::Stream { .. }) = &end {
        shared.counters.add_corrupt();
    }
    log::debug!("{endpoint}: connection ended");
    end
}

fn read_stream(
    shared: &Shared,
    stream: &mut TcpStream,
    link_type: &mut Option<i32>,
    outage: &mut Option<Outage>,
    delivered: &mut bool,
) -> End {
    let endpoint = shared.endpoint.to_string();
    let mut parser = StreamParser::new(shared.config.limits);
    let mut header_seen = false;
    // Holds the unparsed tail: at most one partial record, bounded by the
    // parser's limits.
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut records: Vec<Record> = Vec::new();
    loop {
        if shared.stopping() {
            return End::Stopped;
        }
        if buf.capacity() - buf.len() < MIN_READ {
            // Takes the whole allocation back, the tail moved to its front,
            // once every chunk split off it has been dropped; otherwise
            // allocates a fresh buffer and copies the tail there.
            buf.reserve(READ_SIZE.max(buf.len() + MIN_READ) - buf.len());
        }
        let n = match recv_into(stream, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) if shared.stopping() => return End::Stopped,
            Err(source) => {
                end_mid_record(shared, &parser, buf.len());
                return End::Failed(Error::Read { endpoint, source });
            }
        };
        if n == 0 {
            if shared.stopping() {
                return End::Stopped;
            }
            if !header_seen {
                return End::Failed(Error::NoHeader { endpoint });
            }
            end_mid_record(shared, &parser, buf.len());
            return End::Closed;
        }
        shared.counters.add_bytes(n);
        let parsed = parser.parse(&buf, &mut records);
        // The header may arrive in the same read as a corruption: note it
        // first, so that the corruption counts as one after `open`.
        if !header_seen {
            if let Some(lt) = parser.link_type() {
                header_seen = true;
                stream_started(shared, &parser, lt, link_type, outage);
            }
        }
        let consumed = match parsed {
            Ok(c) => c,
            Err(source) => {
                // The packets parsed before the corrupt unit are delivered;
                // their chunk carries the rest of the read along, unused.
                if !records.is_empty() {
                    hand_over(
                        shared,
                        Batch {
                            chunk: buf.split().freeze(),
                            records: std::mem::take(&mut records),
                        },
                    );
                }
                return End::Failed(Error::Stream { endpoint, source });
            }
        };
        if consumed == 0 {
            continue;
        }
        let chunk = buf.split_to(consumed).freeze();
        if records.is_empty() {
            continue;
        }
        *delivered = true;
        // The next read likely carries as many records: size for it once.
        let next = Vec::with_capacity(records.len());
        let batch = Batch {
            chunk,
            records: std::mem::replace(&mut records, next),
        };
        if !hand_over(shared, batch) {
            return End::Stopped;
        }
    }
}

/// Appends what one recv() returns to `buf`, without initialising the
/// buffer first (the zero-fill cost as much as a quarter of this thread's
/// time at 1500-byte packets).
fn recv_into(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let room = spare.len();
    let n = SockRef::from(stream).recv(spare)?.min(room);
    // SAFETY: recv() initialised the first `n` bytes of the spare capacity
    // (and never reports more than it was given, which `min` also ensures).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Counts a batch's records and gives it to the ring (which may drop it when
/// full, with `drop_when_full`); false once the consumer has closed.
fn hand_over(shared: &Shared, batch: Batch) -> bool {
    shared.counters.add_records(batch.records.len());
    match shared.ring.push(batch, shared.config.drop_when_full) {
        Push::Queued => true,
        Push::Dropped(n) => {
            shared.counters.add_dropped(n);
            true
        }
        Push::Closed => false,
    }
}

/// A connection's stream header has arrived: report what changed, end the
/// outage, and let `open` return.
fn stream_started(
    shared: &Shared,
    parser: &StreamParser,
    lt: i32,
    link_type: &mut Option<i32>,
    outage: &mut Option<Outage>,
) {
    let endpoint = &shared.endpoint;
    log::debug!(
        "{endpoint}: {} stream, link type {lt}",
        parser.format_name().unwrap_or("?")
    );
    if let Some(old) = link_type.replace(lt).filter(|&old| old != lt) {
        log::warn!(
            "{endpoint}: the new stream's link type is {lt}, the previous one's was {old}; packets carry their own link type, but a capture filter stays compiled for {old}"
        );
    }
    if let Some(o) = outage.take() {
        log::warn!(
            "{endpoint}: connection restored after {:.1} s",
            o.since.elapsed().as_secs_f64()
        );
    }
    shared.opened(lt);
}

/// Accounts for a record cut off by the end of the connection.
fn end_mid_record(shared: &Shared, parser: &StreamParser, leftover: usize) {
    if leftover > 0 && parser.link_type().is_some() {
        shared.counters.add_truncated();
        log::warn!(
            "{}: the connection ended in the middle of a record; its {leftover} bytes were discarded",
            shared.endpoint
        );
    }
}

/// Tries every resolved address in order; the first that accepts wins.
fn connect(shared: &Shared) -> Result<TcpStream, Error> {
    let endpoint = shared.endpoint.to_string();
    let addrs = shared.endpoint.resolve().map_err(|source| Error::Resolve {
        endpoint: endpoint.clone(),
        source,
    })?;
    let mut last: Option<(SocketAddr, std::io::Error)> = None;
    for addr in &addrs {
        if shared.stopping() {
            break;
        }
        match TcpStream::connect_timeout(addr, shared.config.connect_timeout) {
            Ok(stream) => {
                // Kept so that closing the source can interrupt a blocking read.
                if let Ok(clone) = stream.try_clone() {
                    shared.set_socket(clone);
                }
                log::debug!("{endpoint}: connected to {addr}");
                return Ok(stream);
            }
            Err(e) => {
                log::debug!("{endpoint}: connecting to {addr} failed: {e}");
                last = Some((*addr, e));
            }
        }
    }
    match last {
        None => Err(Error::NoAddress { endpoint }),
        Some((addr, source)) => Err(Error::Connect {
            tried: match addrs.len() {
                1 if addr.to_string() == endpoint => String::new(),
                1 => format!(" ({addr})"),
                n => format!(" ({n} addresses, last {addr})"),
            },
            endpoint,
            source,
        }),
    }
}
