//! Per-client and total counters, printed on SIGUSR1 and at exit.
//!
//! One line per client (or --connect connection), then a total:
//!
//! ```text
//! counters: client=127.0.0.1:40312 state=open since=2025-06-01T12:00:00Z packets=1000 bytes=123456 dropped=20 dropped_bytes=2400 queued_bytes=0 peak_queued_bytes=1048576
//! counters: total input_packets=1020 input_bytes=125880 clients=1 open=1 packets=1000 bytes=123456 dropped=20 dropped_bytes=2400
//! ```
//!
//! `packets` and `bytes` are what was written to the client's socket
//! (`bytes` with the stream's header); `dropped` are whole packets the relay
//! did not queue for it because its buffer was full (or, with
//! --slow-client=disconnect, those it had not sent when it was closed).
//! For a client that was there from the relay's start and whose stream
//! ended, `packets + dropped` is the input's packet count. The `queued`
//! fields and `input_*` are the relay's (standard input) only.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Departed clients kept for the per-client lines; older ones only count in
/// the total.
const KEEP_DEPARTED: usize = 1000;

/// Where a client's stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Being served.
    Open = 0,
    /// Its stream ended as it should: the whole file, or the end of the input.
    Ended = 1,
    /// The connection broke (or the client left).
    Lost = 2,
    /// Closed by --slow-client=disconnect.
    Slow = 3,
    /// Took no byte for --write-timeout, or for DRAIN_STALL after the end
    /// of the input: closed.
    Stalled = 4,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Ended => "ended",
            State::Lost => "lost",
            State::Slow => "slow",
            State::Stalled => "stalled",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Open,
            1 => State::Ended,
            2 => State::Lost,
            3 => State::Slow,
            _ => State::Stalled,
        }
    }
}

/// One client's counters, updated by its writer and by the relay.
pub struct ClientStats {
    /// `client=ADDR` or `target=HOST:PORT`.
    label: String,
    since: SystemTime,
    /// Whether it is a relay client (has a queue).
    live: bool,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped: AtomicU64,
    pub dropped_bytes: AtomicU64,
    pub queued: AtomicU64,
    pub peak_queued: AtomicU64,
    state: AtomicU8,
}

impl ClientStats {
    pub fn sent(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    pub fn dropped(&self, packets: u64, bytes: u64) {
        self.dropped.fetch_add(packets, Relaxed);
        self.dropped_bytes.fetch_add(bytes, Relaxed);
    }

    pub fn set_queued(&self, bytes: usize) {
        let bytes = bytes as u64;
        self.queued.store(bytes, Relaxed);
        self.peak_queued.fetch_max(bytes, Relaxed);
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Relaxed))
    }

    /// Sets the final state, unless one is already set (the first reason
    /// a stream ended is the one that counts).
    pub fn finish(&self, state: State) {
        let _ = self
            .state
            .compare_exchange(State::Open as u8, state as u8, Relaxed, Relaxed);
    }

    /// A short summary for the message about the client's departure.
    pub fn summary(&self) -> String {
        let dropped = self.dropped.load(Relaxed);
        let mut s = format!("{} packets sent", self.packets.load(Relaxed));
        if self.live || dropped > 0 {
            s.push_str(&format!(", {dropped} dropped"));
        }
        s
    }

    /// Its Prometheus labels: `{kind="client",peer="ADDR"}` (kind: client,
    /// target or output), values escaped as the format wants.
    fn prometheus_labels(&self) -> String {
        let (kind, peer) = self
            .label
            .split_once('=')
            .unwrap_or(("client", &self.label));
        let escape = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        format!("{{kind=\"{}\",peer=\"{}\"}}", escape(kind), escape(peer))
    }

    fn line(&self) -> String {
        let mut s = format!(
            "counters: {} state={} since={} packets={} bytes={} dropped={} dropped_bytes={}",
            self.label,
            self.state().name(),
            utc(self.since),
            self.packets.load(Relaxed),
            self.bytes.load(Relaxed),
            self.dropped.load(Relaxed),
            self.dropped_bytes.load(Relaxed),
        );
        if self.live {
            s.push_str(&format!(
                " queued_bytes={} peak_queued_bytes={}",
                self.queued.load(Relaxed),
                self.peak_queued.load(Relaxed)
            ));
        }
        s
    }
}

/// Sums over clients.
#[derive(Default, Clone, Copy)]
struct Totals {
    clients: u64,
    open: u64,
    packets: u64,
    bytes: u64,
    dropped: u64,
    dropped_bytes: u64,
}

impl Totals {
    fn add(&mut self, c: &ClientStats) {
        self.clients += 1;
        self.open += u64::from(c.state() == State::Open);
        self.packets += c.packets.load(Relaxed);
        self.bytes += c.bytes.load(Relaxed);
        self.dropped += c.dropped.load(Relaxed);
        self.dropped_bytes += c.dropped_bytes.load(Relaxed);
    }
}

/// Every client's counters, and the input's.
pub struct Registry {
    /// Whether the input is live (standard input, through the relay).
    live: bool,
    pub input_packets: AtomicU64,
    pub input_bytes: AtomicU64,
    clients: Mutex<Vec<Arc<ClientStats>>>,
    /// Departed clients no longer listed one by one.
    retired: Mutex<Totals>,
}

impl Registry {
    pub fn new(live: bool) -> Registry {
        Registry {
            live,
            input_packets: AtomicU64::new(0),
            input_bytes: AtomicU64::new(0),
            clients: Mutex::new(Vec::new()),
            retired: Mutex::new(Totals::default()),
        }
    }

    /// Counters for a new client; `label` is `client=ADDR` or
    /// `target=HOST:PORT`.
    pub fn add(&self, label: String) -> Arc<ClientStats> {
        let c = Arc::new(ClientStats {
            label,
            since: SystemTime::now(),
            live: self.live,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            peak_queued: AtomicU64::new(0),
            state: AtomicU8::new(State::Open as u8),
        });
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.push(c.clone());
        // Many clients came and went: fold the oldest departed ones into the
        // total.
        let departed = clients.iter().filter(|c| c.state() != State::Open).count();
        if departed > KEEP_DEPARTED {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            let mut excess = departed - KEEP_DEPARTED;
            clients.retain(|c| {
                if excess > 0 && c.state() != State::Open {
                    retired.add(c);
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        c
    }

    /// The counter lines: one per client, then the total.
    pub fn lines(&self) -> Vec<String> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<String> = clients
            .iter()
            .map(|c| {
                total.add(c);
                c.line()
            })
            .collect();
        let mut t = String::from("counters: total");
        if self.live {
            t.push_str(&format!(
                " input_packets={} input_bytes={}",
                self.input_packets.load(Relaxed),
                self.input_bytes.load(Relaxed)
            ));
        }
        t.push_str(&format!(
            " clients={} open={} packets={} bytes={} dropped={} dropped_bytes={}",
            total.clients,
            total.open,
            total.packets,
            total.bytes,
            total.dropped,
            total.dropped_bytes
        ));
        lines.push(t);
        lines
    }

    /// The counters in Prometheus' text format: the input's and the totals
    /// (every client since the start), and per open client (at most
    /// --max-clients of them, or the --connect targets: a departed client's
    /// counters live on in the totals only, so that no series is repeated).
    pub fn prometheus(&self) -> String {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        clients.iter().for_each(|c| total.add(c));
        let open: Vec<&Arc<ClientStats>> = clients
            .iter()
            .filter(|c| c.state() == State::Open)
            .collect();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, values: Vec<(String, u64)>| {
            out.push_str(&format!(
                "# HELP pcapovertcp_serve_{name} {help}\n# TYPE pcapovertcp_serve_{name} {kind}\n"
            ));
            for (labels, v) in values {
                out.push_str(&format!("pcapovertcp_serve_{name}{labels} {v}\n"));
            }
        };
        if self.live {
            metric(
                "input_packets_total",
                "counter",
                "Packets read from the live input.",
                vec![(String::new(), self.input_packets.load(Relaxed))],
            );
            metric(
                "input_bytes_total",
                "counter",
                "Bytes read from the live input.",
                vec![(String::new(), self.input_bytes.load(Relaxed))],
            );
        }
        let one = |v: u64| vec![(String::new(), v)];
        metric(
            "clients_total",
            "counter",
            "Clients (and --connect connections) since the start.",
            one(total.clients),
        );
        metric(
            "clients_open",
            "gauge",
            "Clients being served now.",
            one(total.open),
        );
        metric(
            "packets_total",
            "counter",
            "Packets written to all clients.",
            one(total.packets),
        );
        metric(
            "bytes_total",
            "counter",
            "Bytes written to all clients, headers included.",
            one(total.bytes),
        );
        metric(
            "dropped_packets_total",
            "counter",
            "Packets dropped for slow clients.",
            one(total.dropped),
        );
        metric(
            "dropped_bytes_total",
            "counter",
            "Bytes dropped for slow clients.",
            one(total.dropped_bytes),
        );
        let per = |f: &dyn Fn(&ClientStats) -> u64| -> Vec<(String, u64)> {
            open.iter().map(|c| (c.prometheus_labels(), f(c))).collect()
        };
        metric(
            "client_packets_total",
            "counter",
            "Packets written to the client.",
            per(&|c| c.packets.load(Relaxed)),
        );
        metric(
            "client_bytes_total",
            "counter",
            "Bytes written to the client.",
            per(&|c| c.bytes.load(Relaxed)),
        );
        metric(
            "client_dropped_packets_total",
            "counter",
            "Packets dropped for the client.",
            per(&|c| c.dropped.load(Relaxed)),
        );
        metric(
            "client_dropped_bytes_total",
            "counter",
            "Bytes dropped for the client.",
            per(&|c| c.dropped_bytes.load(Relaxed)),
        );
        if self.live {
            metric(
                "client_queued_bytes",
                "gauge",
                "Bytes queued for the client.",
                per(&|c| c.queued.load(Relaxed)),
            );
        }
        metric(
            "client_connected_since_seconds",
            "gauge",
            "When the client connected (Unix time).",
            per(&|c| {
                c.since
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
        );
        out
    }

    /// Logs the counter lines (target "counters": shown whatever the level).
    pub fn print(&self) {
        for line in self.lines() {
            log::info!(target: "counters", "{line}");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) of `t`.
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, mo, d, h, mi, s) = pcapovertcp::utc::civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_formats_known_instants() {
        let at = |s| utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn total_sums_clients_and_keeps_departed_within_bounds() {
        let r = Registry::new(true);
        for i in 0..(KEEP_DEPARTED + 10) {
            let c = r.add(format!("client=127.0.0.1:{i}"));
            c.sent(2, 20);
            c.finish(State::Ended);
        }
        let open = r.add("client=127.0.0.1:1".into());
        open.dropped(1, 10);
        let lines = r.lines();
        assert_eq!(lines.len(), KEEP_DEPARTED + 2);
        let total = lines.last().unwrap();
        let n = KEEP_DEPARTED as u64 + 11;
        assert!(
            total.contains(&format!(" clients={n} open=1 packets={} ", 2 * (n - 1))),
            "{total}"
        );
        assert!(total.ends_with("dropped=1 dropped_bytes=10"), "{total}");
    }
}
