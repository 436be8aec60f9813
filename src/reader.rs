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
//!
//! The socket's receive timeout ([`connect::TICK`]) is this thread's clock while the
//! peer is quiet: it notices a closing source, a missing header and
//! `idle_timeout` without a second thread. TCP keepalive notices a peer that
//! stopped answering (the read then fails with ETIMEDOUT).

use std::io::{self, ErrorKind};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use socket2::SockRef;

use crate::config::Config;
use crate::connect::{self, Failure};
use crate::control::{Control, NOTICE_AFTER};
use crate::error::Error;
use crate::parse::{Record, StreamParser};
use crate::ring::{Batch, Push};

/// Reads are at most this large; a buffer is this large.
pub const READ_SIZE: usize = 1 << 20;
/// A buffer with less room than this left is reclaimed or replaced before the
/// next read.
const MIN_READ: usize = 64 * 1024;

/// Runs the reader until the stream ends for good or the source is closed.
pub(crate) fn run(control: Arc<Control>) {
    crate::logger::route_to(control.messages.clone());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Supervisor::new(&control).run()
    }));
    if let Err(panic) = result {
        let e = Error::Internal {
            endpoint: control.endpoint.to_string(),
            message: panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into()),
        };
        log::error!("{e}");
        control.fail(e);
    }
    control.ring.finish();
}

/// How one connection ended.
enum End {
    /// The source is closing.
    Stopped,
    /// The server closed the connection.
    Closed,
    Failed(Error),
}

/// The connection's life across reconnects.
struct Supervisor<'a> {
    control: &'a Control,
    endpoint: String,
    /// The link type of the last stream, to report a change.
    link_type: Option<i32>,
    /// When the outage in progress began; reported once at each end.
    outage: Option<Instant>,
}

impl<'a> Supervisor<'a> {
    fn new(control: &'a Control) -> Self {
        Supervisor {
            control,
            endpoint: control.endpoint.to_string(),
            link_type: None,
            outage: None,
        }
    }

    fn config(&self) -> &Config {
        &self.control.config
    }

    fn run(&mut self) {
        let mut backoff = self.config().reconnect_min;
        loop {
            let mut delivered = false;
            let (reason, error) = match self.session(&mut delivered) {
                End::Stopped => return,
                End::Closed => ("the server closed the connection".to_string(), None),
                End::Failed(e) => (e.to_string(), Some(e)),
            };
            if !self.control.is_open() {
                // No stream yet: fail the start-up, or keep waiting for one
                // (the consumer enforces open_timeout).
                let e = error.unwrap_or(Error::NoHeader {
                    endpoint: self.endpoint.clone(),
                });
                self.control.note_waiting(e.to_string());
                if !self.config().reconnect || !e.is_transient() {
                    self.control.fail(e);
                    return;
                }
                self.control.mention_wait(&e.to_string());
            } else if !self.config().reconnect {
                if let Some(e) = error {
                    log::error!("{e}");
                }
                return;
            } else if self.outage.is_none() {
                log::warn!(
                    "{}: connection lost ({reason}); reconnecting",
                    self.endpoint
                );
                self.outage = Some(Instant::now());
            }
            if delivered {
                backoff = self.config().reconnect_min;
            }
            if !self.control.sleep(backoff) {
                return;
            }
            backoff = backoff.saturating_mul(2).min(self.config().reconnect_max);
        }
    }

    /// One connection, from connect to its end.
    fn session(&mut self, delivered: &mut bool) -> End {
        let mut stream = match connect::connect(self.control) {
            Ok(s) => s,
            Err(Failure::Stopped) => return End::Stopped,
            Err(Failure::Failed(e)) => return End::Failed(e),
        };
        if self.control.stopping() {
            return End::Stopped;
        }
        self.control.counters.connected();
        let end = self.read_stream(&mut stream, delivered);
        self.control.counters.disconnected();
        let _ = stream.shutdown(Shutdown::Both);
        if let End::Failed(Error::Stream { .. }) = &end {
            self.control.counters.add_corrupt();
        }
        log::debug!("{}: connection ended", self.endpoint);
        end
    }

    fn read_stream(&mut self, stream: &mut TcpStream, delivered: &mut bool) -> End {
        let control = self.control;
        let endpoint = self.endpoint.clone();
        let mut parser = StreamParser::new(control.config.limits);
        let mut header_seen = false;
        let connected = Instant::now();
        let mut last_data = connected;
        if !control.is_open() {
            control.note_waiting(format!(
                "{endpoint} accepted the connection but sent no pcap header"
            ));
        }
        // Holds the unparsed tail: at most one partial record, bounded by the
        // parser's limits.
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut records: Vec<Record> = Vec::new();
        loop {
            if control.stopping() {
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
                Err(_) if control.stopping() => return End::Stopped,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The receive timeout: nothing arrived for one tick.
                    if !header_seen && connected.elapsed() >= NOTICE_AFTER {
                        control.mention_wait(&format!(
                            "{endpoint}: connected, but no pcap header has arrived after {} s ({} bytes so far)",
                            NOTICE_AFTER.as_secs(),
                            buf.len(),
                        ));
                    }
                    if let Some(limit) = control.config.idle_timeout {
                        if last_data.elapsed() >= limit {
                            end_mid_record(control, &parser, buf.len());
                            return End::Failed(Error::Idle {
                                endpoint,
                                seconds: limit.as_secs_f64(),
                            });
                        }
                    }
                    continue;
                }
                Err(source) if source.kind() == ErrorKind::TimedOut => {
                    end_mid_record(control, &parser, buf.len());
                    return End::Failed(Error::DeadPeer {
                        endpoint,
                        seconds: control
                            .config
                            .keepalive
                            .map_or(0.0, |k| k.bound().as_secs_f64()),
                    });
                }
                Err(source) => {
                    end_mid_record(control, &parser, buf.len());
                    return End::Failed(Error::Read { endpoint, source });
                }
            };
            if n == 0 {
                if control.stopping() {
                    return End::Stopped;
                }
                if !header_seen {
                    return End::Failed(Error::NoHeader { endpoint });
                }
                end_mid_record(control, &parser, buf.len());
                return End::Closed;
            }
            last_data = Instant::now();
            control.counters.add_bytes(n);
            let parsed = parser.parse(&buf, &mut records);
            // The header may arrive in the same read as a corruption: note it
            // first, so that the corruption counts as one after `open`.
            if !header_seen {
                if let Some(lt) = parser.link_type() {
                    header_seen = true;
                    self.stream_started(&parser, lt);
                } else if !control.is_open() {
                    control.note_waiting(format!(
                        "{endpoint} sent {} bytes, not yet a whole pcap header",
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
                        hand_over(
                            control,
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
            if !hand_over(control, batch) {
                return End::Stopped;
            }
        }
    }

    /// A connection's stream header has arrived: report what changed, end the
    /// outage, and let `open` return.
    fn stream_started(&mut self, parser: &StreamParser, lt: i32) {
        let endpoint = &self.endpoint;
        log::debug!(
            "{endpoint}: {} stream, link type {lt}",
            parser.format_name().unwrap_or("?")
        );
        if let Some(old) = self.link_type.replace(lt).filter(|&old| old != lt) {
            log::warn!(
                "{endpoint}: the new stream's link type is {lt}, the previous one's was {old}; packets carry their own link type, and a capture filter is compiled for each"
            );
        }
        if let Some(since) = self.outage.take() {
            log::warn!(
                "{endpoint}: connection restored after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
        self.control.opened(lt);
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
fn hand_over(control: &Control, batch: Batch) -> bool {
    control.counters.add_records(batch.records.len());
    match control.ring.push(batch, control.config.drop_when_full) {
        Push::Queued => true,
        Push::Dropped(n) => {
            control.counters.add_dropped(n);
            true
        }
        Push::Closed => false,
    }
}

/// Accounts for a record cut off by the end of the connection.
fn end_mid_record(control: &Control, parser: &StreamParser, leftover: usize) {
    if leftover > 0 && parser.link_type().is_some() {
        control.counters.add_truncated();
        log::warn!(
            "{}: the connection ended in the middle of a record; its {leftover} bytes were discarded",
            control.endpoint
        );
    }
}
