//! The operator's lines about single senders of one listen endpoint, rate
//! limited: a port scan or a connection storm must not flood the log.
//!
//! At most [`LINES_PER_WINDOW`] such lines are written every [`WINDOW`];
//! the rest are counted, and once the window is over one summary line says
//! how many were left out. A refused address is, besides, reported at most
//! once per [`WINDOW`] (its later refusals counted in its next line). So an
//! endpoint writes at most `LINES_PER_WINDOW + 1` lines about senders per
//! window, however many connect.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::Level;

use crate::sync::lock;

/// The length of one window of the rate limit; a refused address is
/// reported at most once per window too.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines about single senders written per window, per listen endpoint.
pub const LINES_PER_WINDOW: u64 = 20;
/// Addresses remembered for rate-limiting refusals; beyond, forgotten.
const REFUSALS_KEPT: usize = 4096;

/// One listen endpoint's lines about its senders; shared by its threads.
pub(crate) struct Lines {
    endpoint: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the current window began (`None` before the first line).
    since: Option<Instant>,
    shown: u64,
    /// Lines left out in the current window.
    hidden: u64,
    /// Per refused address: when it was last reported, refusals since.
    refused: HashMap<IpAddr, (Instant, u64)>,
}

impl Lines {
    pub fn new(endpoint: &str) -> Lines {
        Lines {
            endpoint: endpoint.to_string(),
            state: Mutex::new(State::default()),
        }
    }

    /// Writes `line` at `level`, unless this window's lines are spent.
    pub fn say(&self, level: Level, line: &str) {
        let mut st = lock(&self.state);
        let now = Instant::now();
        self.roll(&mut st, now);
        if st.shown >= LINES_PER_WINDOW {
            st.hidden += 1;
            return;
        }
        st.since.get_or_insert(now);
        st.shown += 1;
        log::log!(level, "{line}");
    }

    /// Reports a refused sender: once per address per window, then
    /// counted in that address's next line.
    pub fn refused(&self, peer: SocketAddr, why: &str) {
        let now = Instant::now();
        let since = {
            let mut st = lock(&self.state);
            if st.refused.len() >= REFUSALS_KEPT {
                st.refused.clear();
            }
            match st.refused.get_mut(&peer.ip()) {
                Some((last, n)) if now.duration_since(*last) < WINDOW => {
                    *n += 1;
                    return;
                }
                Some((last, n)) => {
                    let since = std::mem::take(n);
                    *last = now;
                    since
                }
                None => {
                    st.refused.insert(peer.ip(), (now, 0));
                    0
                }
            }
        };
        let since = match since {
            0 => String::new(),
            n => format!(" (refused {n} more times from this address since the last report)"),
        };
        self.say(
            Level::Warn,
            &format!("{}: refused sender {peer}: {why}{since}", self.endpoint),
        );
    }

    /// Writes the summary of a window that is over, if it left lines out;
    /// called on the acceptor's tick, so that it comes without a next line.
    pub fn flush(&self) {
        let mut st = lock(&self.state);
        self.roll(&mut st, Instant::now());
    }

    /// Ends the window if it is over, with its summary line.
    fn roll(&self, st: &mut State, now: Instant) {
        let Some(since) = st.since else { return };
        let elapsed = now.duration_since(since);
        if elapsed < WINDOW {
            return;
        }
        if st.hidden > 0 {
            log::warn!(
                "{}: {} more lines about single senders were left out in the last {:.0} s (at most {LINES_PER_WINDOW} every {} s); PcapOverTcp::stats()$senders counts every admitted sender",
                self.endpoint,
                st.hidden,
                elapsed.as_secs_f64(),
                WINDOW.as_secs()
            );
        }
        st.since = None;
        st.shown = 0;
        st.hidden = 0;
    }
}
