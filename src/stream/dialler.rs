//! One connect endpoint's life: connect, read the stream (see
//! [`crate::stream::reader`]), and when the connection ends or fails, reconnect
//! with exponential backoff (or, with `reconnect` off, end). Outages are
//! reported once when they start and once when they end.

use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use crate::endpoint::Endpoint;
use crate::net::backoff::{Backoff, Outage};
use crate::net::connect::{self, Failure};
use crate::shared::config::Config;
use crate::shared::control::Control;
use crate::shared::counters::Counters;
use crate::shared::error::Error;
use crate::shared::facts::Fact;
use crate::shared::setting::Setting;
use crate::stream::parse::StreamParser;
use crate::stream::reader::{read_error, End, Outlet, Reader};
use crate::tls::{self, ClientTls, HandshakeFailure, Transport};

/// Opens the outlet for each new connection, before it connects: the
/// hand-off itself when the source has one connection, else a new lane of
/// the merge. The merge waits (at most merge_window) for an endpoint being
/// dialled, so that one that connects a little later is not passed over at
/// start-up, and never for one in a pause between attempts (its lane ended
/// with its last connection).
pub(crate) type Outlets<'a> = Box<dyn FnMut() -> Outlet<'a> + 'a>;

/// Runs one connect endpoint until its stream ends for good or the source
/// is closed.
pub(crate) fn run<'a>(
    control: &'a Control,
    endpoint: &'a Endpoint,
    counters: &'a Arc<Counters>,
    outlets: Outlets<'a>,
    tls: Option<&'a ClientTls>,
) {
    Dialler {
        control,
        endpoint,
        tls,
        label: endpoint.to_string(),
        counters,
        outlets,
        link_type: None,
        outage: Outage::default(),
        unreached_said: false,
    }
    .run()
}

/// The connection's life across reconnects.
struct Dialler<'a> {
    control: &'a Control,
    endpoint: &'a Endpoint,
    /// For a `tls://` endpoint.
    tls: Option<&'a ClientTls>,
    label: String,
    counters: &'a Arc<Counters>,
    outlets: Outlets<'a>,
    /// The link type of the last stream, to report a change.
    link_type: Option<i32>,
    /// The outage in progress; reported once at each end.
    outage: Outage,
    /// That it has not been reached yet while the source runs on its
    /// other endpoints has been said (once).
    unreached_said: bool,
}

impl Dialler<'_> {
    fn config(&self) -> &Config {
        &self.control.config
    }

    fn run(&mut self) {
        let mut backoff = Backoff::new(self.config().reconnect_min, self.config().reconnect_max);
        loop {
            let mut delivered = false;
            let (reason, error) = match self.session(&mut delivered) {
                // (A connect endpoint's `on_header` refuses nothing.)
                End::Stopped | End::Refused => return,
                End::PeerClosed => ("the server closed the connection".to_string(), None),
                End::Failed(e) => (e.to_string(), Some(e)),
            };
            if !self.control.startup.is_open() {
                // No stream yet: fail the start-up, or keep waiting for one
                // (a thread of the source enforces open_timeout).
                let e = error.unwrap_or(Error::NoHeader {
                    endpoint: self.label.clone(),
                });
                self.control.startup.note_waiting(e.to_string());
                if !self.config().reconnect || !e.is_transient() {
                    self.control.fail(e);
                    return;
                }
                self.control.startup.mention_wait(&e.to_string());
            } else if !self.config().reconnect {
                if let Some(e) = error {
                    crate::shared::logger::error!("{e}");
                }
                return;
            } else if self.link_type.is_none() {
                // The source opened on another endpoint; this one never
                // had a stream: nothing was lost, so no outage (and no
                // "restored" when it comes). Said once, not per attempt.
                if !std::mem::replace(&mut self.unreached_said, true) {
                    crate::shared::logger::warning!(
                        "{}: not reached yet ({reason}); the source runs on its other endpoints and keeps trying this one",
                        self.label
                    );
                }
            } else if self.outage.down("lost") {
                crate::shared::logger::warning!(
                    "{}: connection lost ({reason}); reconnecting",
                    self.label
                );
                self.counters.add_outage();
                self.control.messages.fact(Fact::FeedLost {
                    endpoint: self.label.clone(),
                    reason,
                });
            }
            if delivered {
                backoff.reset();
            }
            if !self.control.sleep(backoff.next_pause()) {
                return;
            }
        }
    }

    /// One connection, from connect to its end.
    fn session(&mut self, delivered: &mut bool) -> End {
        // Opened before connecting (see `Outlets`).
        let outlet = (self.outlets)();
        let (stream, _hold) = match connect::connect(self.control, self.endpoint) {
            Ok(s) => s,
            Err(Failure::Stopped) => return End::Stopped,
            Err(Failure::Failed(e)) => return End::Failed(e),
        };
        if self.control.stopping() {
            return End::Stopped;
        }
        let mut transport = match self.tls {
            None => Transport::plain(stream),
            Some(tls) => match tls.connect(self.endpoint.host(), stream) {
                Ok(t) => t,
                Err(what) => {
                    return End::Failed(Error::Tls {
                        endpoint: self.label.clone(),
                        what,
                    })
                }
            },
        };
        // A connection counts from its TCP connect, its handshake included.
        self.counters.connected();
        // A server that accepts and never completes the handshake is
        // redialled after connect_timeout, as one that never answers.
        let timeout = self.config().connect_timeout;
        let deadline = Instant::now() + timeout;
        let handshake = tls::handshake(&mut transport, Some(deadline), &|| self.control.stopping());
        if let Err(failure) = handshake {
            self.counters.disconnected();
            let _ = transport.tcp().shutdown(Shutdown::Both);
            return match failure {
                HandshakeFailure::Stopped => End::Stopped,
                HandshakeFailure::TimedOut => End::Failed(Error::HandshakeTimeout {
                    endpoint: self.label.clone(),
                    seconds: timeout.as_secs_f64(),
                    setting: Setting::ConnectTimeout,
                }),
                HandshakeFailure::Failed(e) => End::Failed(read_error(&self.label, e)),
            };
        }
        if self.endpoint.scheme().is_zstd() {
            transport = transport.zstd();
        }
        if let Outlet::Lane(lane) = &outlet {
            lane.watch(transport.watch());
        }
        let reader = Reader {
            control: self.control,
            label: &self.label,
            source: &self.label,
            sender: &self.label,
            counters: self.counters,
            outlet,
            opens_source: true,
            header_deadline: None,
        };
        let label = &self.label;
        let outage = &mut self.outage;
        let link_type = &mut self.link_type;
        let mut started = false;
        let (end, handed) = reader.read(&mut transport, &mut |parser, lt| {
            stream_started(reader.control, label, outage, link_type, parser, lt);
            started = true;
            Ok(())
        });
        self.counters.disconnected();
        if started && !matches!(end, End::Stopped) {
            self.control.messages.fact(Fact::SenderLeft {
                source: self.label.clone(),
                sender: self.label.clone(),
                packets: handed,
            });
        }
        let _ = transport.tcp().shutdown(Shutdown::Both);
        *delivered = handed > 0;
        crate::shared::logger::debug!("{}: connection ended", self.label);
        end
    }
}

/// A connection's stream header has arrived: report what changed, end the
/// outage, and let `open` return.
fn stream_started(
    control: &Control,
    label: &str,
    outage: &mut Outage,
    link_type: &mut Option<i32>,
    parser: &StreamParser,
    lt: i32,
) {
    crate::shared::logger::debug!(
        "{label}: {} stream, link type {lt}",
        parser.format_name().unwrap_or("?")
    );
    if let Some(old) = link_type.replace(lt).filter(|&old| old != lt) {
        crate::shared::logger::warning!(
            "{label}: the new stream's link type is {lt}, the previous one's was {old}; packets carry their own link type, and a capture filter is compiled for each"
        );
    }
    if let Some(lasted) = outage.up() {
        crate::shared::logger::warning!(
            "{label}: connection restored after {:.1} s",
            lasted.as_secs_f64()
        );
        control.messages.fact(Fact::FeedRestored {
            endpoint: label.to_string(),
            outage: lasted,
        });
    }
    control.messages.fact(Fact::SenderConnected {
        source: label.to_string(),
        sender: label.to_string(),
    });
    control.startup.opened(lt);
}
