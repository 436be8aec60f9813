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
    /// A --connect target whose connection broke: its queue is kept while
    /// it is redialled.
    Away = 5,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Ended => "ended",
            State::Lost => "lost",
            State::Slow => "slow",
            State::Stalled => "stalled",
            State::Away => "away",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Open,
            1 => State::Ended,
            2 => State::Lost,
            3 => State::Slow,
            5 => State::Away,
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
    /// Of the packets sent (a --connect target's), those its kernel had
    /// not acknowledged when a connection broke: lost in flight.
    pub in_flight: AtomicU64,
    /// Bytes in its spool file (--spool), not yet sent.
    pub spooled: AtomicU64,
    state: AtomicU8,
}

impl ClientStats {
    pub fn sent(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// Packets counted as sent that go back to the queue (a kept
    /// receiver's, written after it had closed: it never read them).
    pub fn unsent(&self, packets: u64, bytes: u64) {
        let _ = self
            .packets
            .fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(packets)));
        let _ = self
            .bytes
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(bytes)));
    }

    pub fn dropped(&self, packets: u64, bytes: u64) {
        self.dropped.fetch_add(packets, Relaxed);
        self.dropped_bytes.fetch_add(bytes, Relaxed);
    }

    pub fn set_spooled(&self, bytes: u64) {
        self.spooled.store(bytes, Relaxed);
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
        let _ = self.state.fetch_update(Relaxed, Relaxed, |s| {
            matches!(State::from_u8(s), State::Open | State::Away).then_some(state as u8)
        });
    }

    /// A kept --connect target's connection broke (true) or is back.
    pub fn set_away(&self, away: bool) {
        let (from, to) = if away {
            (State::Open, State::Away)
        } else {
            (State::Away, State::Open)
        };
        let _ = self
            .state
            .compare_exchange(from as u8, to as u8, Relaxed, Relaxed);
    }

    /// Being served, or kept while away.
    fn current(&self) -> bool {
        matches!(self.state(), State::Open | State::Away)
    }

    /// A short summary for the message about the client's departure.
    pub fn summary(&self) -> String {
        let dropped = self.dropped.load(Relaxed);
        let mut s = format!("{} packets sent", self.packets.load(Relaxed));
        if self.live || dropped > 0 {
            s.push_str(&format!(", {dropped} dropped"));
        }
        let in_flight = self.in_flight.load(Relaxed);
        if in_flight > 0 {
            s.push_str(&format!(", {in_flight} lost in flight"));
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
        if self.label.starts_with("target=") && self.live {
            s.push_str(&format!(
                " in_flight={} spooled_bytes={}",
                self.in_flight.load(Relaxed),
                self.spooled.load(Relaxed)
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
        self.open += u64::from(c.current());
        self.packets += c.packets.load(Relaxed);
        self.bytes += c.bytes.load(Relaxed);
        self.dropped += c.dropped.load(Relaxed);
        self.dropped_bytes += c.dropped_bytes.load(Relaxed);
    }
}

/// Where an --upstream server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Upstream {
    /// Not connected yet since the start: being dialled.
    Connecting = 0,
    /// Connected: its stream is read.
    Up = 1,
    /// Was connected, and is no longer: being redialled.
    Down = 2,
}

impl Upstream {
    const ALL: [Upstream; 3] = [Upstream::Connecting, Upstream::Up, Upstream::Down];

    fn name(self) -> &'static str {
        match self {
            Upstream::Connecting => "connecting",
            Upstream::Up => "up",
            Upstream::Down => "down",
        }
    }

    fn from_u8(v: u8) -> Upstream {
        match v {
            0 => Upstream::Connecting,
            1 => Upstream::Up,
            _ => Upstream::Down,
        }
    }
}

/// One --upstream server's counters: updated by the tool's own reader (one
/// server) or copied from the core's per-sender counters (several).
pub struct UpstreamStats {
    /// The server as written (`HOST:PORT`, `tls://HOST:PORT`), or a sender's
    /// address for a listening upstream endpoint.
    name: String,
    /// Packets read from it.
    pub packets: AtomicU64,
    /// Bytes read from it (its stream's header included).
    pub bytes: AtomicU64,
    /// Connections made to it.
    pub connects: AtomicU64,
    /// Connections lost after being up (each the start of an outage).
    pub outages: AtomicU64,
    state: AtomicU8,
}

impl UpstreamStats {
    pub fn state(&self) -> Upstream {
        Upstream::from_u8(self.state.load(Relaxed))
    }

    /// A connection was made.
    pub fn connected(&self) {
        self.connects.fetch_add(1, Relaxed);
        self.state.store(Upstream::Up as u8, Relaxed);
    }

    /// The connection ended; `lost`: it had been relaying a stream (an
    /// outage begins).
    pub fn disconnected(&self, lost: bool) {
        self.outages.fetch_add(u64::from(lost), Relaxed);
        self.state.store(Upstream::Down as u8, Relaxed);
    }

    pub fn read(&self, bytes: u64, packets: u64) {
        self.bytes.fetch_add(bytes, Relaxed);
        self.packets.fetch_add(packets, Relaxed);
    }

    /// Takes the core's counters of the sender (they only grow).
    pub fn copy(&self, packets: u64, bytes: u64, connects: u64, outages: u64, open: bool) {
        self.packets.store(packets, Relaxed);
        self.bytes.store(bytes, Relaxed);
        self.connects.store(connects, Relaxed);
        self.outages.store(outages, Relaxed);
        let state = match (open, connects) {
            (true, _) => Upstream::Up,
            (false, 0) => Upstream::Connecting,
            (false, _) => Upstream::Down,
        };
        self.state.store(state as u8, Relaxed);
    }

    /// Its Prometheus label, `{upstream="NAME"}` with `extra` labels after.
    fn prometheus_labels(&self, extra: &str) -> String {
        format!("{{upstream=\"{}\"{extra}}}", escape(&self.name))
    }
}

/// A Prometheus label value, escaped as the text format wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    /// The --upstream servers, in the order first seen: as many as the
    /// command line names (or, for a listening endpoint, the core's bound
    /// on senders).
    upstreams: Mutex<Vec<Arc<UpstreamStats>>>,
}

impl Registry {
    pub fn new(live: bool) -> Registry {
        Registry {
            live,
            input_packets: AtomicU64::new(0),
            input_bytes: AtomicU64::new(0),
            clients: Mutex::new(Vec::new()),
            retired: Mutex::new(Totals::default()),
            upstreams: Mutex::new(Vec::new()),
        }
    }

    /// The counters of the --upstream server `name`, made on first use.
    pub fn upstream(&self, name: &str) -> Arc<UpstreamStats> {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = upstreams.iter().find(|u| u.name == name) {
            return u.clone();
        }
        let u = Arc::new(UpstreamStats {
            name: name.to_string(),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            state: AtomicU8::new(Upstream::Connecting as u8),
        });
        upstreams.push(u.clone());
        u
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
            in_flight: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            state: AtomicU8::new(State::Open as u8),
        });
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.push(c.clone());
        // Many clients came and went: fold the oldest departed ones into the
        // total.
        let departed = clients.iter().filter(|c| !c.current()).count();
        if departed > KEEP_DEPARTED {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            let mut excess = departed - KEEP_DEPARTED;
            clients.retain(|c| {
                if excess > 0 && !c.current() {
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
        let open: Vec<&Arc<ClientStats>> = clients.iter().filter(|c| c.current()).collect();
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
        if self.live {
            metric(
                "client_in_flight_lost_packets_total",
                "counter",
                "Packets sent to the --connect target that its kernel had not acknowledged when a connection broke (lost in flight).",
                per(&|c| c.in_flight.load(Relaxed)),
            );
            metric(
                "client_spooled_bytes",
                "gauge",
                "Bytes in the --connect target's spool file (--spool), not yet sent.",
                per(&|c| c.spooled.load(Relaxed)),
            );
            metric(
                "client_away",
                "gauge",
                "Whether the --connect target's connection is down (1) while its queue is kept for it.",
                per(&|c| u64::from(c.state() == State::Away)),
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
        drop(open);
        drop(clients);
        let upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if upstreams.is_empty() {
            return out;
        }
        let per = |f: &dyn Fn(&UpstreamStats) -> u64| -> Vec<(String, u64)> {
            upstreams
                .iter()
                .map(|u| (u.prometheus_labels(""), f(u)))
                .collect()
        };
        metric(
            "upstream_packets_total",
            "counter",
            "Packets read from the --upstream server.",
            per(&|u| u.packets.load(Relaxed)),
        );
        metric(
            "upstream_bytes_total",
            "counter",
            "Bytes read from the --upstream server, stream headers included.",
            per(&|u| u.bytes.load(Relaxed)),
        );
        metric(
            "upstream_connected",
            "gauge",
            "Whether the --upstream server is connected (1) or not (0).",
            per(&|u| u64::from(u.state() == Upstream::Up)),
        );
        metric(
            "upstream_connects_total",
            "counter",
            "Connections made to the --upstream server.",
            per(&|u| u.connects.load(Relaxed)),
        );
        metric(
            "upstream_outages_total",
            "counter",
            "Connections to the --upstream server lost after its stream began (each the start of an outage).",
            per(&|u| u.outages.load(Relaxed)),
        );
        // A state set: one series per state, 1 for the one it is in.
        let states = upstreams
            .iter()
            .flat_map(|u| {
                Upstream::ALL.into_iter().map(move |s| {
                    let label = format!(",state=\"{}\"", s.name());
                    (u.prometheus_labels(&label), u64::from(u.state() == s))
                })
            })
            .collect();
        metric(
            "upstream_state",
            "gauge",
            "The --upstream server's state: connecting (not connected yet), up (connected), or down (lost, being redialled).",
            states,
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
    fn upstream_series_name_each_server_once_with_one_state() {
        let r = Registry::new(true);
        assert!(!r.prometheus().contains("upstream"));
        let a = r.upstream("tls://a\"b:1");
        assert!(Arc::ptr_eq(&a, &r.upstream("tls://a\"b:1")));
        r.upstream("c:2").copy(5, 50, 2, 1, false);
        a.connected();
        a.read(30, 3);
        let body = r.prometheus();
        let lines: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("pcapovertcp_serve_upstream_"))
            .collect();
        let a = "upstream=\"tls://a\\\"b:1\"";
        assert_eq!(
            lines,
            [
                format!("pcapovertcp_serve_upstream_packets_total{{{a}}} 3"),
                "pcapovertcp_serve_upstream_packets_total{upstream=\"c:2\"} 5".into(),
                format!("pcapovertcp_serve_upstream_bytes_total{{{a}}} 30"),
                "pcapovertcp_serve_upstream_bytes_total{upstream=\"c:2\"} 50".into(),
                format!("pcapovertcp_serve_upstream_connected{{{a}}} 1"),
                "pcapovertcp_serve_upstream_connected{upstream=\"c:2\"} 0".into(),
                format!("pcapovertcp_serve_upstream_connects_total{{{a}}} 1"),
                "pcapovertcp_serve_upstream_connects_total{upstream=\"c:2\"} 2".into(),
                format!("pcapovertcp_serve_upstream_outages_total{{{a}}} 0"),
                "pcapovertcp_serve_upstream_outages_total{upstream=\"c:2\"} 1".into(),
                format!("pcapovertcp_serve_upstream_state{{{a},state=\"connecting\"}} 0"),
                format!("pcapovertcp_serve_upstream_state{{{a},state=\"up\"}} 1"),
                format!("pcapovertcp_serve_upstream_state{{{a},state=\"down\"}} 0"),
                "pcapovertcp_serve_upstream_state{upstream=\"c:2\",state=\"connecting\"} 0".into(),
                "pcapovertcp_serve_upstream_state{upstream=\"c:2\",state=\"up\"} 0".into(),
                "pcapovertcp_serve_upstream_state{upstream=\"c:2\",state=\"down\"} 1".into(),
            ]
        );
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
