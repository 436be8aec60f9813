//! The operator's lines about single connections of one listen endpoint,
//! rate limited: a port scan or a connection storm must not flood the log.
//!
//! Lines fall in two kinds, limited apart so that a storm of connections
//! that are never admitted cannot hide what admitted senders do: about
//! admitted senders (arrival, departure, failure, closed for a newcomer),
//! and about connections never admitted (refusals, no header, failed TLS).
//! Of each kind at most [`LINES_PER_WINDOW`] lines are written every
//! [`WINDOW`]; the rest are counted, and once the window is over one
//! summary line says how many were left out. A refused address is,
//! besides, reported at most once per [`WINDOW`] (its later refusals
//! counted in its next line). So an endpoint writes at most
//! `2 × (LINES_PER_WINDOW + 1)` such lines per window, however many
//! connect.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::Level;

use crate::shared::facts::{Fact, Refusal};
use crate::shared::sync::lock;

/// The length of one window of the rate limit; a refused address is
/// reported at most once per window too.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines about single senders written per window, per listen endpoint.
pub const LINES_PER_WINDOW: u64 = 20;
/// Addresses remembered for rate-limiting refusals; beyond, forgotten.
const REFUSALS_KEPT: usize = 4096;

/// One listen endpoint's lines about its connections; shared by its
/// threads.
pub(crate) struct Lines {
    endpoint: String,
    admitted: Mutex<Window>,
    others: Mutex<Window>,
    /// Per refused address: when it was last reported, refusals since.
    refused: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

/// Which connections a line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An admitted sender.
    Admitted,
    /// A connection never admitted.
    Other,
}

#[derive(Default)]
struct Window {
    /// When the current window began (`None` before the first line).
    since: Option<Instant>,
    shown: u64,
    /// Lines left out in the current window.
    hidden: u64,
}

impl Lines {
    pub fn new(endpoint: &str) -> Lines {
        Lines {
            endpoint: endpoint.to_string(),
            admitted: Mutex::default(),
            others: Mutex::default(),
            refused: Mutex::default(),
        }
    }

    fn window(&self, kind: Kind) -> &Mutex<Window> {
        match kind {
            Kind::Admitted => &self.admitted,
            Kind::Other => &self.others,
        }
    }

    /// Writes `line` at `level`, unless this window's lines of its kind
    /// are spent.
    pub fn say(&self, kind: Kind, level: Level, line: &str) {
        let mut w = lock(self.window(kind));
        let now = Instant::now();
        self.roll(kind, &mut w, now);
        if w.shown >= LINES_PER_WINDOW {
            w.hidden += 1;
            return;
        }
        w.since.get_or_insert(now);
        w.shown += 1;
        crate::shared::logger::say(level, module_path!(), format_args!("{line}"));
    }

    /// Reports a refused sender: once per address per window, then
    /// counted in that address's next line; and, as often, tells the
    /// scripts (`PcapOverTcp::sender_refused`).
    pub fn refused(&self, peer: SocketAddr, refusal: Refusal, why: &str) {
        let Some(since) = self.first_refusal(peer) else {
            return;
        };
        self.refusal_fact(peer, refusal, why);
        let since = match since {
            0 => String::new(),
            n => format!(" (refused {n} more times from this address since the last report)"),
        };
        self.say(
            Kind::Other,
            Level::Warn,
            &format!("{}: refused sender {peer}: {why}{since}", self.endpoint),
        );
    }

    /// Tells the scripts of a sender refused for `why` whose line is
    /// written elsewhere (a failed TLS handshake), as often as
    /// [`Lines::refused`] would.
    pub fn refused_quietly(&self, peer: SocketAddr, refusal: Refusal, why: &str) {
        if self.first_refusal(peer).is_some() {
            self.refusal_fact(peer, refusal, why);
        }
    }

    fn refusal_fact(&self, peer: SocketAddr, refusal: Refusal, why: &str) {
        crate::shared::logger::fact(Fact::SenderRefused {
            source: self.endpoint.clone(),
            sender: peer.ip().to_canonical().to_string(),
            refusal,
            reason: why.to_string(),
        });
    }

    /// Whether a refusal of `peer` is the first of its address in this
    /// window: `Some(refusals left unreported since the last report)`, or
    /// `None` (counted for the next report).
    fn first_refusal(&self, peer: SocketAddr) -> Option<u64> {
        let now = Instant::now();
        let mut refused = lock(&self.refused);
        if refused.len() >= REFUSALS_KEPT {
            refused.clear();
        }
        match refused.get_mut(&peer.ip()) {
            Some((last, n)) if now.duration_since(*last) < WINDOW => {
                *n += 1;
                None
            }
            Some((last, n)) => {
                let since = std::mem::take(n);
                *last = now;
                Some(since)
            }
            None => {
                refused.insert(peer.ip(), (now, 0));
                Some(0)
            }
        }
    }

    /// Writes the summary of a window that is over, if it left lines out;
    /// called on the acceptor's tick, so that it comes without a next line.
    pub fn flush(&self) {
        let now = Instant::now();
        for kind in [Kind::Admitted, Kind::Other] {
            self.roll(kind, &mut lock(self.window(kind)), now);
        }
    }

    /// Ends the window if it is over, with its summary line.
    fn roll(&self, kind: Kind, w: &mut Window, now: Instant) {
        let Some(since) = w.since else { return };
        let elapsed = now.duration_since(since);
        if elapsed < WINDOW {
            return;
        }
        if w.hidden > 0 {
            let about = match kind {
                Kind::Admitted => "senders",
                Kind::Other => "connections that were not admitted",
            };
            crate::shared::logger::warning!(
                "{}: {} more lines about {about} were left out in the last {:.0} s (at most {LINES_PER_WINDOW} every {} s); PcapOverTcp::stats()$senders counts every admitted sender",
                self.endpoint,
                w.hidden,
                elapsed.as_secs_f64(),
                WINDOW.as_secs()
            );
        }
        *w = Window::default();
    }
}
