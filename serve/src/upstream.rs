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

use std::sync::Arc;
use std::time::{Duration, Instant};

use pcapovertcp::endpoint::{Endpoint, Scheme, Spec};
use pcapovertcp::net::backoff::Outage;
use pcapovertcp::net::connect::connect_addrs;
use pcapovertcp::setting;
use pcapovertcp::tls::{self, ClientTls, HandshakeFailure, TlsOptions, Transport};
use pcapovertcp::Config;

use crate::conn::{self, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT};
use crate::input::Fanout;
use crate::stats::{Registry, UpstreamStats};
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
    /// The server as written, for its counters.
    name: String,
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
        Scheme::Tcp | Scheme::TcpZstd => None,
        Scheme::Tls | Scheme::TlsZstd => {
            Some(ClientTls::new(tls).map_err(|e| e.render(words::upstream))?)
        }
        Scheme::TcpListen | Scheme::TlsListen | Scheme::TcpZstdListen | Scheme::TlsZstdListen => {
            return Ok(None)
        }
    };
    Ok(Some(Direct {
        what: format!("--upstream {target}"),
        name: target.to_string(),
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
    outage: Outage,
}

impl Health {
    /// A stream started.
    fn up(&mut self, what: &str) {
        match self.outage.up() {
            Some(lasted) if self.was_up => log::info!(
                "{what}: back after {:.1} s; relaying its stream again",
                lasted.as_secs_f64()
            ),
            _ => log::info!("{what}: connected; relaying its stream"),
        }
        self.was_up = true;
    }

    /// An attempt is over: the server is (still) down.
    fn down(&mut self, what: &str, attempt: &Attempt, retry: Duration) {
        let (message, kind) = match attempt {
            Attempt::Relayed(why) => {
                let why = why.as_deref().unwrap_or("its stream ended");
                log::warn!(
                    "{what}: lost ({why}); reconnecting ({BACKOFF}; attempts are logged at debug level)"
                );
                // A refused reconnect is part of the outage just reported.
                self.outage.down("unreachable");
                return;
            }
            Attempt::Unreachable(e) => (e, "unreachable"),
            Attempt::Unusable(e) => (e, "unusable"),
        };
        if self.outage.down(kind) {
            log::warn!(
                "{what}: {message}; retrying until it is up ({BACKOFF}; the same again is logged at debug level)"
            );
        } else {
            log::debug!(
                "{what}: {message} (again); retrying in {} ms",
                retry.as_millis()
            );
        }
    }
}

impl Direct {
    /// One attempt to connect: each address in turn, keepalive, then the
    /// TLS handshake for tls://, and decompression for +zstd.
    fn open(&self) -> Result<Transport, String> {
        let transport = self.open_tls()?;
        Ok(if self.target.scheme().is_zstd() {
            transport.zstd()
        } else {
            transport
        })
    }

    fn open_tls(&self) -> Result<Transport, String> {
        let addrs = self
            .target
            .resolve()
            .map_err(|e| format!("cannot resolve {}: {e}", self.target.host()))?;
        // Keepalive as the core's default: a server that vanishes without
        // a FIN (a crash, a cut path) fails the read within its bound.
        let keepalive = Config::default().keepalive;
        let tcp =
            connect_addrs(addrs, CONNECT_TIMEOUT, keepalive.as_ref()).map_err(|e| e.to_string())?;
        let Some(tls) = &self.tls else {
            return Ok(Transport::plain(tcp));
        };
        let mut transport = tls.connect(self.target.host(), tcp)?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        match tls::handshake(&mut transport, Some(deadline), &|| false) {
            Ok(()) => Ok(transport),
            Err(HandshakeFailure::Failed(e)) => Err(format!("TLS: {e}")),
            Err(HandshakeFailure::Stopped | HandshakeFailure::TimedOut) => Err(format!(
                "no TLS handshake from the server within {} s (is it a TLS server?)",
                HANDSHAKE_TIMEOUT.as_secs()
            )),
        }
    }

    /// One connection, from dialling to the end of its stream.
    fn attempt(&self, fanout: &mut Fanout, health: &mut Health, stats: &UpstreamStats) -> Attempt {
        let transport = match self.open() {
            Ok(t) => t,
            Err(e) => return Attempt::Unreachable(e),
        };
        stats.connected();
        let mut started = false;
        let result = fanout.relay_with(
            transport,
            &self.what,
            || {
                started = true;
                health.up(&self.what);
            },
            |bytes, packets| stats.read(bytes, packets),
        );
        // A stream that was relayed is an outage when it ends (as the
        // core counts a connect endpoint's).
        stats.disconnected(started);
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
    pub fn run(&self, fanout: &mut Fanout, once: bool, registry: &Registry) -> bool {
        // The core's messages on this thread (its TLS) name --upstream-tls-*.
        setting::use_names(words::upstream);
        let stats: Arc<UpstreamStats> = registry.upstream(&self.name);
        let mut backoff = conn::backoff();
        let mut health = Health::default();
        loop {
            let since = Instant::now();
            let attempt = self.attempt(fanout, &mut health, &stats);
            if once {
                return self.once(attempt);
            }
            if matches!(attempt, Attempt::Relayed(_)) {
                backoff.reset_after(since.elapsed());
            }
            health.down(&self.what, &attempt, backoff.peek());
            backoff.wait();
        }
    }
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
