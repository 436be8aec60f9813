//! --upstream with a single server: its stream relayed as it is.
//!
//! Merging several servers needs the plugin's core, which re-frames the
//! packets (pcapng, one interface per input interface; see
//! [`crate::merged`]). One server needs no merge, so the tool
//! dials it itself and relays its bytes as it relays standard input: the
//! clients get the server's own header (pcap with its timestamp resolution
//! and byte order, or pcapng with each of its interfaces) and records.
//!
//! The server is redialled (100 ms doubling to 5 s) when its stream ends or
//! fails; a stream with the same header as before goes on in every client's
//! stream ([`Fanout::relay`]). An outage is one line when it starts and one
//! when it ends; the attempts in between are at debug level.

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pcapovertcp::endpoint::{Endpoint, Scheme, Spec};
use pcapovertcp::setting;
use pcapovertcp::tls::{ClientTls, TlsOptions, Transport};
use pcapovertcp::Config;
use socket2::{SockRef, TcpKeepalive};

use crate::conn::{connect_addrs, Backoff, HANDSHAKE_TIMEOUT, RETRY_MAX, RETRY_MIN};
use crate::input::Fanout;
use crate::words;

/// The backoff, for messages.
const BACKOFF: &str = "100 ms doubling to 5 s";

/// The one server of --upstream, dialled by the tool itself.
pub struct Direct {
    target: Endpoint,
    /// For tls://: the --upstream-tls-* options, loaded.
    tls: Option<ClientTls>,
    /// "--upstream HOST:PORT", for messages.
    what: String,
}

/// The server of `spec` when it is exactly one connect endpoint (tcp:// or
/// tls://, no list, no ?share), with its TLS set up from `tls`; None when
/// the core has to read it. An unusable TLS file is one line.
pub fn direct(spec: &str, tls: &TlsOptions) -> Result<Option<Direct>, String> {
    let Ok(Spec {
        endpoints,
        share: None,
    }) = Spec::parse(spec)
    else {
        return Ok(None);
    };
    let [target] = endpoints.as_slice() else {
        return Ok(None);
    };
    let tls = match target.scheme() {
        Scheme::Tcp => None,
        Scheme::Tls => Some(ClientTls::new(tls).map_err(|e| e.render(words::upstream))?),
        Scheme::TcpListen | Scheme::TlsListen => return Ok(None),
    };
    Ok(Some(Direct {
        what: format!("--upstream {target}"),
        target: target.clone(),
        tls,
    }))
}

/// How one connection to the server went.
enum Attempt {
    /// No connection (or no TLS session): nothing relayed.
    Unreachable(String),
    /// Connected, but what came is no pcap stream (or nothing at all).
    Unusable(String),
    /// Its stream was relayed until it ended (None) or failed.
    Relayed(Option<String>),
}

/// What has been said about the server, so that an outage is one line
/// when it starts and one when it ends, not one per attempt.
#[derive(Default)]
struct Health {
    /// A stream was relayed before.
    was_up: bool,
    /// Since when it is down (None: up, or never up yet).
    down_since: Option<Instant>,
    /// Reported in this outage: no connection; no pcap stream.
    said_unreachable: bool,
    said_unusable: bool,
}

impl Health {
    /// A stream started.
    fn up(&mut self, what: &str) {
        match self.down_since.take() {
            Some(since) if self.was_up => log::info!(
                "{what}: back after {:.1} s; relaying its stream again",
                since.elapsed().as_secs_f64()
            ),
            _ => log::info!("{what}: connected; relaying its stream"),
        }
        self.was_up = true;
        self.said_unreachable = false;
        self.said_unusable = false;
    }

    /// An attempt is over: the server is (still) down.
    fn down(&mut self, what: &str, attempt: &Attempt, retry: Duration) {
        self.down_since.get_or_insert_with(Instant::now);
        let (message, said) = match attempt {
            Attempt::Relayed(why) => {
                let why = why.as_deref().unwrap_or("its stream ended");
                log::warn!(
                    "{what}: lost ({why}); reconnecting ({BACKOFF}; attempts are logged at debug level)"
                );
                // A refused reconnect is part of the outage just reported.
                self.said_unreachable = true;
                return;
            }
            Attempt::Unreachable(e) => (e, &mut self.said_unreachable),
            Attempt::Unusable(e) => (e, &mut self.said_unusable),
        };
        if *said {
            log::debug!(
                "{what}: {message} (again); retrying in {} ms",
                retry.as_millis()
            );
        } else {
            *said = true;
            log::warn!(
                "{what}: {message}; retrying until it is up ({BACKOFF}; the same again is logged at debug level)"
            );
        }
    }
}

impl Direct {
    /// One attempt to connect: each address in turn, keepalive, then the
    /// TLS handshake for tls://.
    fn open(&self) -> Result<Transport, String> {
        // The core's messages in the tool's words.
        setting::with_names(words::upstream, || self.open_tls())
    }

    fn open_tls(&self) -> Result<Transport, String> {
        let addrs = self
            .target
            .resolve()
            .map_err(|e| format!("cannot resolve {}: {e}", self.target.host()))?;
        let tcp = connect_addrs(addrs).map_err(|e| e.to_string())?;
        keep_alive(&tcp).map_err(|e| format!("cannot set up TCP keepalive: {e}"))?;
        let Some(tls) = &self.tls else {
            return Ok(Transport::Plain(tcp));
        };
        let transport = tls.connect(self.target.host(), tcp)?;
        handshake(transport)
    }

    /// One connection, from dialling to the end of its stream.
    fn attempt(&self, fanout: &mut Fanout, health: &mut Health) -> Attempt {
        let transport = match self.open() {
            Ok(t) => t,
            Err(e) => return Attempt::Unreachable(e),
        };
        let mut started = false;
        let result = fanout.relay_with(transport, &self.what, || {
            started = true;
            health.up(&self.what);
        });
        match (started, result) {
            (true, Ok(_)) => Attempt::Relayed(None),
            (true, Err(e)) => Attempt::Relayed(Some(e.to_string())),
            (false, Ok(_)) => Attempt::Unusable(
                "the server closed the connection before its stream's header".into(),
            ),
            (false, Err(e)) => Attempt::Unusable(e.to_string()),
        }
    }

    /// --once: the one attempt's outcome, as the tool's exit status.
    fn once(&self, attempt: Attempt) -> bool {
        let what = &self.what;
        match attempt {
            Attempt::Relayed(None) => {
                log::info!("{what}: the stream ended; ending (--once)");
                true
            }
            Attempt::Relayed(Some(e)) => {
                log::warn!("{what}: {e}; ending (--once)");
                false
            }
            Attempt::Unreachable(e) | Attempt::Unusable(e) => {
                log::error!("{what}: {e}");
                false
            }
        }
    }

    /// Relays the server's stream, redialling it (100 ms doubling to 5 s,
    /// back to 100 ms after a stream of 5 s or more, so that a server that
    /// keeps closing at once is not redialled ten times a second) whenever
    /// it ends or fails; with `once`, relays one stream: whether it was
    /// relayed to its end.
    pub fn run(&self, fanout: &mut Fanout, once: bool) -> bool {
        let mut backoff = Backoff(RETRY_MIN);
        let mut health = Health::default();
        loop {
            let since = Instant::now();
            let attempt = self.attempt(fanout, &mut health);
            if once {
                return self.once(attempt);
            }
            if matches!(attempt, Attempt::Relayed(_)) && since.elapsed() >= RETRY_MAX {
                backoff = Backoff(RETRY_MIN);
            }
            health.down(&self.what, &attempt, backoff.0);
            backoff.wait();
        }
    }
}

/// Dead-peer protection as the core's (its default keepalive): a server
/// that vanishes without a FIN (a crash, a cut path) fails the read within
/// the bound, instead of leaving the relay waiting for ever.
fn keep_alive(tcp: &TcpStream) -> io::Result<()> {
    let Some(k) = Config::default().keepalive else {
        return Ok(());
    };
    let sock = SockRef::from(tcp);
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(k.idle)
            .with_interval(k.interval)
            .with_retries(k.probes),
    )?;
    // Without it, unacknowledged data is retransmitted for far longer
    // than the probes' bound (see the core's connect.rs).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(k.bound()))?;
    Ok(())
}

/// Completes a TLS handshake within HANDSHAKE_TIMEOUT; the failure as one
/// line in the tool's terms.
fn handshake(mut transport: Transport) -> Result<Transport, String> {
    timeouts(transport.tcp(), Some(HANDSHAKE_TIMEOUT))?;
    if let Transport::Tls(tls) = &mut transport {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        while !tls.handshake_done() {
            let late = Instant::now() >= deadline;
            match tls.handshake_step() {
                Ok(()) if !late => {}
                Err(e)
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!("TLS: {e}"));
                }
                _ => {
                    return Err(format!(
                        "no TLS handshake from the server within {} s (is it a TLS server?)",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ))
                }
            }
        }
    }
    // The stream may stay quiet for as long as the capture does.
    timeouts(transport.tcp(), None)?;
    Ok(transport)
}

fn timeouts(tcp: &TcpStream, t: Option<Duration>) -> Result<(), String> {
    tcp.set_read_timeout(t)
        .and_then(|()| tcp.set_write_timeout(t))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_connect_endpoint_is_dialled_directly() {
        let none = TlsOptions::default();
        let one = |spec| direct(spec, &none).unwrap().map(|d| d.what);
        assert_eq!(
            one("127.0.0.1:57012").as_deref(),
            Some("--upstream 127.0.0.1:57012")
        );
        assert_eq!(
            one("tcp://[::1]:57012").as_deref(),
            Some("--upstream [::1]:57012")
        );
        for core in [
            "a:1,b:1",
            "a:1?share=0/2",
            "tcp-listen://:57012",
            "tls-listen://:57012",
        ] {
            assert!(one(core).is_none(), "{core}");
        }
    }
}
