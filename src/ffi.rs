//! The one bridge between Zeek's C++ `PktSrc` shim and the Rust core.
//! Every function here translates and delegates; none may panic.
//!
//! cxx aborts the process when a panic reaches the edge of an `extern
//! "Rust"` function, and with it Zeek. So every one of them runs its body
//! under [`caught`]: a panic (a bug) becomes an error line for the operator
//! and a neutral answer (no packet, zero counters, a failed open), and costs
//! at most this source, never the sensor. That needs `panic = "unwind"`,
//! which Cargo.toml sets for release builds.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use crate::shared::config::{interval, optional_interval, Config, Keepalive};
use crate::shared::counters::{Field, Snapshot};
use crate::source::{Next, Source, NOMINAL_LINK_TYPE};
use crate::stream::parse::Limits;
use crate::stream::share::ShareBy;
use crate::tls::TlsOptions;

#[cxx::bridge(namespace = "pcapovertcp::rs")]
pub mod bridge {
    /// The `PcapOverTcp::` script constants.
    struct Options {
        buffer_size: u64,
        max_caplen: u64,
        reconnect: bool,
        /// Intervals in seconds.
        reconnect_min: f64,
        reconnect_max: f64,
        /// 0: wait for ever.
        open_timeout: f64,
        drop_when_full: bool,
        /// 0: the system's keepalive settings.
        keepalive_idle: f64,
        keepalive_interval: f64,
        keepalive_probes: u64,
        /// 0: no limit.
        idle_timeout: f64,
        /// 0: release what has arrived at once.
        merge_window: f64,
        merge_max_hold: f64,
        /// 0: no limit.
        merge_max_skew: f64,
        max_senders: u64,
        /// Subnets as text (`10.0.0.0/8`, `2001:db8::/32`); empty: any.
        allowed_senders: Vec<String>,
        /// 0: no limit.
        header_timeout: f64,
        /// `PcapOverTcp::ShareBy`: 0 ADDRESS_PAIR, 1 FIVE_TUPLE.
        share_by: u8,
        /// Paths and names; empty: unset.
        tls_ca_file: String,
        tls_server_name: String,
        tls_cert_file: String,
        tls_key_file: String,
        tls_require_client_cert: bool,
        tls_allowed_names: Vec<String>,
    }

    enum Status {
        /// `PacketInfo` describes a packet.
        Packet,
        /// Nothing waiting right now.
        Empty,
        /// The stream ended and every packet has been delivered.
        Ended,
        /// The source failed before any stream arrived (`open_timeout`,
        /// or a failure for good); `failure` says why.
        Failed,
    }

    struct PacketInfo {
        /// Valid until the next call to `next_packet` (Zeek's DoneWithPacket).
        data: *const u8,
        caplen: u32,
        wirelen: u32,
        ts_sec: i64,
        ts_usec: u32,
        link_type: i32,
        /// The sender it came from, for `sender_address` (its index in
        /// `senders()`).
        input: u32,
    }

    struct SourceStats {
        received: u64,
        dropped: u64,
        link: u64,
        bytes_received: u64,
        filtered: u64,
    }

    /// One of the reader's counters, for `PcapOverTcp::stats()`: the
    /// `PcapOverTcp::Stats` field it fills, by name.
    struct Counter {
        field: String,
        /// For a `count` field.
        count: u64,
        /// Seconds, for an `interval` field.
        seconds: f64,
        is_interval: bool,
        /// A level that goes up and down (a gauge), not a running total.
        is_level: bool,
    }

    /// The buffer's bytes in use and its capacity (`buffer_size`).
    struct BufferUse {
        used: u64,
        capacity: u64,
    }

    /// One sender's counters, for `PcapOverTcp::stats()$senders`.
    struct SenderCounters {
        address: String,
        counters: Vec<Counter>,
    }

    enum LogLevel {
        Debug,
        Info,
        Warning,
        Error,
    }

    struct LogLine {
        level: LogLevel,
        message: String,
    }

    /// Which `PcapOverTcp::` event a [`ScriptEvent`] raises.
    enum EventKind {
        /// feed_lost(source, reason)
        FeedLost,
        /// feed_restored(source, seconds)
        FeedRestored,
        /// sender_connected(source, sender)
        SenderConnected,
        /// sender_left(source, sender, count)
        SenderLeft,
        /// sender_refused(source, sender, kind, reason)
        SenderRefused,
        /// capture_loss_upstream(source, sender, count, total)
        UpstreamDrops,
    }

    /// One fact for script land (src/shared/facts.rs), with the fields its
    /// event takes; the others are empty or zero.
    struct ScriptEvent {
        kind: EventKind,
        /// The endpoint as written.
        source: String,
        /// The sender as `stats()$senders` names it.
        sender: String,
        /// Why (feed_lost, sender_refused).
        reason: String,
        /// The refusal's kind: "acl", "limit" or "tls".
        refusal: String,
        /// The outage's length (feed_restored).
        seconds: f64,
        /// Packets (sender_left) or new upstream drops.
        count: u64,
        /// The sender's upstream drops in all.
        total: u64,
    }

    extern "Rust" {
        type PcapOverTcp;

        /// Checks `path` (the interface name after the prefix, as bytes:
        /// it may not be UTF-8), binds its listen endpoints and starts
        /// connecting; returns at once. The source is open for Zeek from
        /// then on, before any stream has arrived: packets carry their own
        /// link type, and the wait is reported, not waited for.
        fn start(path: &[u8], options: &Options) -> Result<Box<PcapOverTcp>>;
        /// Why the source failed (after `Status::Failed`).
        fn failure(self: &PcapOverTcp) -> String;
        /// The DLT_ value Zeek's source opens with (Ethernet), before any
        /// stream is known: every packet carries its own.
        fn link_type(self: &PcapOverTcp) -> i32;
        fn selectable_fd(self: &PcapOverTcp) -> i32;
        fn next_packet(self: &mut PcapOverTcp, info: &mut PacketInfo) -> Status;
        /// The packet last returned was not passed to Zeek: rejected by the
        /// BPF filter (`filtered`), or dropped as empty.
        fn packet_not_delivered(self: &mut PcapOverTcp, filtered: bool);
        fn stats(self: &PcapOverTcp) -> SourceStats;
        fn counters(self: &PcapOverTcp) -> Vec<Counter>;
        fn senders(self: &PcapOverTcp) -> Vec<SenderCounters>;
        /// The address of the sender a packet's `input` names: a connect
        /// endpoint as written, or a listening sender's IP address; empty
        /// if there is none. The same for the life of the source.
        fn sender_address(self: &PcapOverTcp, input: u32) -> String;
        /// How many senders `senders()` lists; cheap.
        fn sender_count(self: &PcapOverTcp) -> usize;
        /// The `field`th counter (in `counters()`'s order) of the `sender`th
        /// sender, as a number (seconds for intervals); 0 if there is none.
        /// Cheap: for metrics callbacks.
        fn sender_value(self: &PcapOverTcp, sender: usize, field: usize) -> f64;
        fn buffer(self: &PcapOverTcp) -> BufferUse;
        /// The counters of a source that never opened: every one zero.
        fn zero_counters() -> Vec<Counter>;
        /// Whether `take_messages` has anything; cheap.
        fn has_messages(self: &PcapOverTcp) -> bool;
        fn take_messages(self: &PcapOverTcp) -> Vec<LogLine>;
        /// The facts for script land queued since the last call, oldest
        /// first; take them before the messages.
        fn take_events(self: &PcapOverTcp) -> Vec<ScriptEvent>;
        fn close(self: &mut PcapOverTcp);
    }
}

use crate::shared::facts::Fact;
use bridge::{
    BufferUse, Counter, EventKind, LogLevel, LogLine, Options, PacketInfo, ScriptEvent,
    SenderCounters, SourceStats, Status,
};

/// The opaque handle the shim owns.
pub struct PcapOverTcp {
    source: Source,
    /// The interface name, for messages about the bridge itself.
    label: String,
    /// Why the source failed before any stream, once `next_packet` said so.
    failure: String,
    /// Panics caught in the bridge, as error lines not yet taken.
    panics: Mutex<Vec<String>>,
}

/// The shim drops the handle through cxx's glue, another edge a panic must
/// not cross: the closing (threads stopped and joined) happens here, under
/// [`caught`], and the `Source`'s own drop then finds it done.
impl Drop for PcapOverTcp {
    fn drop(&mut self) {
        let _ = caught(|| self.source.close());
    }
}

/// Runs a bridge function's body; a panic becomes `Err` with its message
/// (see the module's comment for why). `AssertUnwindSafe`: after a panic
/// the handle is only asked neutral questions and closed, and the core's
/// locks survive poisoning (`crate::shared::sync`).
fn caught<T>(body: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|payload| panic_message(&*payload))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

fn clamp(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn path(text: &str) -> Option<std::path::PathBuf> {
    (!text.is_empty()).then(|| text.into())
}

fn config(options: &Options) -> Result<Config, crate::Error> {
    let allowed_senders = options
        .allowed_senders
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .map_err(|_| crate::Error::BadSubnet(text.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config {
        buffer_size: clamp(options.buffer_size),
        limits: Limits {
            max_caplen: u32::try_from(options.max_caplen).unwrap_or(u32::MAX),
        },
        reconnect: options.reconnect,
        // Every interval through `interval`: NaN and negative are 0 (or
        // "off"), longer than a year is a year (config::MAX_INTERVAL).
        reconnect_min: interval(options.reconnect_min),
        reconnect_max: interval(options.reconnect_max),
        open_timeout: optional_interval(options.open_timeout),
        drop_when_full: options.drop_when_full,
        keepalive: optional_interval(options.keepalive_idle).map(|idle| Keepalive {
            idle,
            interval: interval(options.keepalive_interval),
            probes: u32::try_from(options.keepalive_probes).unwrap_or(u32::MAX),
        }),
        idle_timeout: optional_interval(options.idle_timeout),
        merge_window: interval(options.merge_window),
        merge_max_hold: interval(options.merge_max_hold),
        merge_max_skew: interval(options.merge_max_skew),
        max_senders: clamp(options.max_senders),
        allowed_senders,
        header_timeout: optional_interval(options.header_timeout),
        share_by: match options.share_by {
            1 => ShareBy::FiveTuple,
            _ => ShareBy::AddressPair,
        },
        tls: TlsOptions {
            ca_file: path(&options.tls_ca_file),
            server_name: (!options.tls_server_name.is_empty())
                .then(|| options.tls_server_name.clone()),
            cert_file: path(&options.tls_cert_file),
            key_file: path(&options.tls_key_file),
            require_client_cert: options.tls_require_client_cert,
            allowed_names: options.tls_allowed_names.clone(),
        },
        // Zeek raises them as events.
        events: true,
        ..Config::default()
    })
}

fn to_bridge(snapshot: &Snapshot) -> Vec<Counter> {
    snapshot
        .fields()
        .iter()
        .map(|f| match *f {
            Field::Count(field, count) | Field::Level(field, count) => Counter {
                field: field.into(),
                count,
                seconds: 0.0,
                is_interval: false,
                is_level: matches!(f, Field::Level(..)),
            },
            Field::Interval(field, d) | Field::IntervalLevel(field, d) => Counter {
                field: field.into(),
                count: 0,
                seconds: d.as_secs_f64(),
                is_interval: true,
                is_level: matches!(f, Field::IntervalLevel(..)),
            },
        })
        .collect()
}

/// A fact as the shim's event: the fields its event takes filled.
fn script_event(fact: Fact) -> ScriptEvent {
    let mut e = ScriptEvent {
        kind: EventKind::FeedLost,
        source: String::new(),
        sender: String::new(),
        reason: String::new(),
        refusal: String::new(),
        seconds: 0.0,
        count: 0,
        total: 0,
    };
    match fact {
        Fact::FeedLost { endpoint, reason } => {
            e.source = endpoint;
            e.reason = reason;
        }
        Fact::FeedRestored { endpoint, outage } => {
            e.kind = EventKind::FeedRestored;
            e.source = endpoint;
            e.seconds = outage.as_secs_f64();
        }
        Fact::SenderConnected { source, sender } => {
            e.kind = EventKind::SenderConnected;
            (e.source, e.sender) = (source, sender);
        }
        Fact::SenderLeft {
            source,
            sender,
            packets,
        } => {
            e.kind = EventKind::SenderLeft;
            (e.source, e.sender, e.count) = (source, sender, packets);
        }
        Fact::SenderRefused {
            source,
            sender,
            refusal,
            reason,
        } => {
            e.kind = EventKind::SenderRefused;
            (e.source, e.sender, e.reason) = (source, sender, reason);
            e.refusal = refusal.name().to_string();
        }
        Fact::UpstreamDrops {
            source,
            sender,
            dropped,
            total,
        } => {
            e.kind = EventKind::UpstreamDrops;
            (e.source, e.sender, e.count, e.total) = (source, sender, dropped, total);
        }
    }
    e
}

fn zero_counters() -> Vec<Counter> {
    caught(|| to_bridge(&Snapshot::default())).unwrap_or_default()
}

fn start(path: &[u8], options: &Options) -> Result<Box<PcapOverTcp>, crate::Error> {
    let Ok(path) = std::str::from_utf8(path) else {
        return Err(crate::Error::NotUtf8(
            String::from_utf8_lossy(path).into_owned(),
        ));
    };
    // Only the plugin installs a `log` logger: Zeek has none of its own.
    crate::shared::logger::install();
    caught(|| Source::start(path, config(options)?))
        .unwrap_or_else(|message| {
            Err(crate::Error::Panic {
                endpoint: path.to_string(),
                function: "start",
                message,
            })
        })
        .map(|source| {
            Box::new(PcapOverTcp {
                source,
                label: path.to_string(),
                failure: String::new(),
                panics: Mutex::new(Vec::new()),
            })
        })
}

impl PcapOverTcp {
    /// `body`'s answer, or after a panic in it, `None` and an error line
    /// for the operator (taken with the source's messages).
    fn guard<T>(&self, function: &'static str, body: Result<T, String>) -> Option<T> {
        body.map_err(|message| {
            let e = crate::Error::Panic {
                endpoint: self.label.clone(),
                function,
                message,
            };
            crate::shared::sync::lock(&self.panics).push(e.to_string());
        })
        .ok()
    }

    fn failure(&self) -> String {
        let body = caught(|| self.failure.clone());
        self.guard("failure", body).unwrap_or_default()
    }

    fn link_type(&self) -> i32 {
        NOMINAL_LINK_TYPE
    }

    fn selectable_fd(&self) -> i32 {
        let body = caught(|| self.source.selectable_fd());
        self.guard("selectable_fd", body).unwrap_or(-1)
    }

    fn next_packet(&mut self, info: &mut PacketInfo) -> Status {
        let body = caught(|| {
            let status = match self.source.next_packet() {
                Next::Packet(p) => {
                    info.data = p.data.as_ptr();
                    info.caplen = p.data.len() as u32;
                    info.wirelen = p.wirelen;
                    info.ts_sec = p.ts_sec;
                    info.ts_usec = p.ts_usec();
                    info.link_type = p.dlt;
                    info.input = p.input;
                    return Status::Packet;
                }
                Next::Empty => Status::Empty,
                Next::Ended => Status::Ended,
            };
            // Nothing to hand over: perhaps because the start-up failed.
            match self.source.take_failure() {
                Some(e) => {
                    self.failure = e.to_string();
                    Status::Failed
                }
                None => status,
            }
        });
        // Ended: Zeek closes the source and reports the error line.
        self.guard("next_packet", body).unwrap_or(Status::Ended)
    }

    fn packet_not_delivered(&mut self, filtered: bool) {
        let body = caught(|| self.source.not_delivered(filtered));
        self.guard("packet_not_delivered", body);
    }

    fn stats(&self) -> SourceStats {
        let body = caught(|| {
            let s = self.source.stats();
            SourceStats {
                received: s.received,
                dropped: s.dropped,
                link: s.link,
                bytes_received: s.bytes_received,
                filtered: s.filtered,
            }
        });
        self.guard("stats", body).unwrap_or(SourceStats {
            received: 0,
            dropped: 0,
            link: 0,
            bytes_received: 0,
            filtered: 0,
        })
    }

    fn counters(&self) -> Vec<Counter> {
        let body = caught(|| to_bridge(&self.source.counters()));
        self.guard("counters", body).unwrap_or_else(zero_counters)
    }

    fn senders(&self) -> Vec<SenderCounters> {
        let body = caught(|| {
            self.source
                .senders()
                .into_iter()
                .map(|(address, snapshot)| SenderCounters {
                    address,
                    counters: to_bridge(&snapshot),
                })
                .collect()
        });
        self.guard("senders", body).unwrap_or_default()
    }

    fn sender_address(&self, input: u32) -> String {
        let body = caught(|| self.source.sender_address(input).unwrap_or_default());
        self.guard("sender_address", body).unwrap_or_default()
    }

    fn sender_count(&self) -> usize {
        let body = caught(|| self.source.sender_count());
        self.guard("sender_count", body).unwrap_or(0)
    }

    fn sender_value(&self, sender: usize, field: usize) -> f64 {
        let body = caught(|| {
            let Some(snapshot) = self.source.sender_at(sender) else {
                return 0.0;
            };
            match snapshot.fields().get(field) {
                Some(Field::Count(_, n) | Field::Level(_, n)) => *n as f64,
                Some(Field::Interval(_, d) | Field::IntervalLevel(_, d)) => d.as_secs_f64(),
                None => 0.0,
            }
        });
        self.guard("sender_value", body).unwrap_or(0.0)
    }

    fn buffer(&self) -> BufferUse {
        let body = caught(|| {
            let (used, capacity) = self.source.buffer();
            BufferUse {
                used: used as u64,
                capacity: capacity as u64,
            }
        });
        self.guard("buffer", body).unwrap_or(BufferUse {
            used: 0,
            capacity: 0,
        })
    }

    fn has_messages(&self) -> bool {
        let body = caught(|| self.source.has_messages());
        // A caught panic is a message too.
        let source = self.guard("has_messages", body).unwrap_or(false);
        source || !crate::shared::sync::lock(&self.panics).is_empty()
    }

    fn take_messages(&self) -> Vec<LogLine> {
        let body = caught(|| {
            self.source
                .take_messages()
                .into_iter()
                .map(|(level, message)| LogLine {
                    level: match level {
                        log::Level::Error => LogLevel::Error,
                        log::Level::Warn => LogLevel::Warning,
                        log::Level::Info => LogLevel::Info,
                        log::Level::Debug | log::Level::Trace => LogLevel::Debug,
                    },
                    message,
                })
                .collect()
        });
        let mut lines: Vec<LogLine> = self.guard("take_messages", body).unwrap_or_default();
        let panics = std::mem::take(&mut *crate::shared::sync::lock(&self.panics));
        lines.extend(panics.into_iter().map(|message| LogLine {
            level: LogLevel::Error,
            message,
        }));
        lines
    }

    fn take_events(&self) -> Vec<ScriptEvent> {
        let body = caught(|| {
            self.source
                .take_facts()
                .into_iter()
                .map(script_event)
                .collect()
        });
        self.guard("take_events", body).unwrap_or_default()
    }

    fn close(&mut self) {
        let body = caught(|| self.source.close());
        self.guard("close", body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    fn options() -> Options {
        Options {
            buffer_size: 1 << 20,
            max_caplen: 65535,
            reconnect: false,
            reconnect_min: 0.1,
            reconnect_max: 1.0,
            open_timeout: 0.0,
            drop_when_full: false,
            keepalive_idle: 10.0,
            keepalive_interval: 3.0,
            keepalive_probes: 4,
            idle_timeout: 0.0,
            merge_window: 0.1,
            merge_max_hold: 1.0,
            merge_max_skew: 300.0,
            max_senders: 64,
            allowed_senders: vec!["10.0.0.0/8".into(), "::1/128".into()],
            header_timeout: 10.0,
            share_by: 0,
            tls_ca_file: String::new(),
            tls_server_name: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_require_client_cert: true,
            tls_allowed_names: Vec::new(),
        }
    }

    #[test]
    fn a_path_that_is_not_utf8_is_an_error_not_an_abort() {
        let Err(e) = start(b"\xff\xfe:57012", &options()) else {
            panic!("must fail");
        };
        assert_eq!(
            e.to_string(),
            "the interface name \"\u{fffd}\u{fffd}:57012\" is not valid UTF-8; expected pcapovertcp::HOST:PORT"
        );
    }

    #[test]
    fn options_become_the_config() {
        let mut o = options();
        let c = config(&o).unwrap();
        assert_eq!(c.allowed_senders.len(), 2);
        assert_eq!(c.merge_window, Duration::from_millis(100));
        assert_eq!(
            c.keepalive.map(|k| k.bound()),
            Some(Duration::from_secs(22))
        );
        assert_eq!(c.idle_timeout, None);
        o.keepalive_idle = 0.0;
        o.idle_timeout = 2.5;
        o.open_timeout = -1.0;
        o.header_timeout = 0.0;
        let c = config(&o).unwrap();
        assert_eq!(c.header_timeout, None);
        assert_eq!(c.keepalive, None);
        assert_eq!(c.idle_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.open_timeout, None);
        o.allowed_senders = vec!["10.0.0.0/33".into()];
        let Err(e) = config(&o) else {
            panic!("a bad subnet must fail");
        };
        assert_eq!(
            e.to_string(),
            "PcapOverTcp::allowed_senders: \"10.0.0.0/33\" is not a subnet"
        );
    }

    /// A port on 127.0.0.1 that was free a moment ago (the endpoint
    /// grammar refuses port 0).
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    /// A listening source through the bridge, opened; and its address.
    fn listening(mut o: Options) -> (Box<PcapOverTcp>, SocketAddr) {
        o.allowed_senders.clear();
        let name = format!("tcp-listen://127.0.0.1:{}", free_port());
        let h = start(name.as_bytes(), &o).unwrap();
        let addr = h.source.listening()[0];
        (h, addr)
    }

    /// A little-endian microsecond Ethernet pcap header.
    fn pcap_header() -> Vec<u8> {
        let mut b = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b
    }

    /// `n` records of 60 bytes, one second apart from 1,700,000,000.
    fn pcap_records(n: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for i in 0..n {
            for v in [1_700_000_000 + i, 0, 60, 60] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&[i as u8; 60]);
        }
        b
    }

    /// The seconds of `want` packets, taken through the bridge within 10 s.
    fn collect(h: &mut PcapOverTcp, want: usize) -> Vec<i64> {
        collect_from(h, want)
            .into_iter()
            .map(|(ts, _)| ts)
            .collect()
    }

    /// The seconds and sender address of `want` packets, taken through the
    /// bridge within 10 s.
    fn collect_from(h: &mut PcapOverTcp, want: usize) -> Vec<(i64, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut info = PacketInfo {
            data: std::ptr::null(),
            caplen: 0,
            wirelen: 0,
            ts_sec: 0,
            ts_usec: 0,
            link_type: 0,
            input: 0,
        };
        let mut got = Vec::new();
        while got.len() < want {
            match h.next_packet(&mut info) {
                Status::Packet => got.push((info.ts_sec, h.sender_address(info.input))),
                Status::Ended => panic!("the source ended after {} packets", got.len()),
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "only {} of {want} packets arrived within 10 s; messages: {:?}",
                        got.len(),
                        lines(h)
                    );
                    h.source.wait(Duration::from_millis(50));
                }
            }
        }
        got
    }

    fn lines(h: &PcapOverTcp) -> Vec<String> {
        h.take_messages().into_iter().map(|l| l.message).collect()
    }

    /// Serves `records` after a pcap header to one client, on a thread;
    /// its address.
    fn serve_once(records: Vec<u8>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.write_all(&pcap_header());
                let _ = s.write_all(&records);
            }
        });
        addr
    }

    #[test]
    fn each_packet_names_its_sender_the_same_across_reconnects() {
        // Listening: two connections from one address, one after the
        // other, are one sender (by IP address, not port).
        let (mut h, addr) = listening(options());
        for (n, first) in [(2, 0), (3, 2)] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&pcap_header()).unwrap();
            let records = pcap_records(first + n);
            s.write_all(&records[(first as usize) * 76..]).unwrap();
            drop(s);
            let got = collect_from(&mut h, n as usize);
            assert!(
                got.iter().all(|(_, a)| a == "127.0.0.1"),
                "connection {first}: {got:?}"
            );
        }
        assert_eq!(h.sender_address(7), "", "no such sender");
        h.close();

        // Connecting: each endpoint as written, whichever sends first.
        let (a, b) = (serve_once(pcap_records(2)), serve_once(pcap_records(2)));
        let name = format!("{a},{b}");
        let mut h = start(name.as_bytes(), &options()).unwrap();
        let mut got = collect_from(&mut h, 4);
        got.sort();
        let (a, b) = (a.to_string(), b.to_string());
        let mut want = vec![
            (1_700_000_000, a.clone()),
            (1_700_000_000, b.clone()),
            (1_700_000_001, a),
            (1_700_000_001, b),
        ];
        want.sort();
        assert_eq!(got, want);
        h.close();
    }

    fn no_packet() -> PacketInfo {
        PacketInfo {
            data: std::ptr::null(),
            caplen: 0,
            wirelen: 0,
            ts_sec: 0,
            ts_usec: 0,
            link_type: 0,
            input: 0,
        }
    }

    #[test]
    fn a_connect_source_whose_server_is_down_lets_zeek_run_and_fails_at_open_timeout() {
        // Zeek's loop keeps calling next_packet while the source waits for
        // its feed, and sleeps on the selectable fd in between: the failure
        // at open_timeout must come through both, on time.
        let port = free_port();
        let mut h = start(
            format!("127.0.0.1:{port}").as_bytes(),
            &Options {
                reconnect: true,
                open_timeout: 0.5,
                ..options()
            },
        )
        .unwrap();
        assert_eq!(h.link_type(), 1, "Zeek's source opens as Ethernet");
        let t0 = Instant::now();
        let mut info = no_packet();
        let mut seen = Vec::new();
        let status = loop {
            let status = h.next_packet(&mut info);
            if !matches!(status, Status::Empty) {
                break status;
            }
            seen.extend(lines(&h));
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no failure within 5 s (open_timeout 0.5 s); messages: {seen:?}"
            );
            h.source.wait(Duration::from_secs(5));
        };
        let took = t0.elapsed();
        assert!(matches!(status, Status::Failed), "{seen:?}");
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
            "failed after {took:?}, open_timeout 0.5 s"
        );
        let failure = h.failure();
        let want = format!(
            "no PCAP-over-IP stream from 127.0.0.1:{port} within PcapOverTcp::open_timeout (0.5 s): cannot connect to 127.0.0.1:{port}: Connection refused"
        );
        assert!(failure.starts_with(&want), "{failure}");
        seen.extend(lines(&h));
        assert_eq!(
            seen.iter()
                .filter(|l| l.contains("waiting for a stream"))
                .count(),
            1,
            "the wait is reported once: {seen:?}"
        );
    }

    #[test]
    fn a_connect_source_opens_before_its_stream_whose_packets_carry_their_link_type() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let mut h = start(format!("{addr}").as_bytes(), &options()).unwrap();
        let mut info = no_packet();
        assert!(matches!(h.next_packet(&mut info), Status::Empty));
        assert_eq!(h.link_type(), 1);
        // A raw-IP stream (LINKTYPE_RAW, 101), after the source opened.
        let (mut peer, _) = server.accept().unwrap();
        let mut header = pcap_header();
        header[20..24].copy_from_slice(&101u32.to_le_bytes());
        peer.write_all(&header).unwrap();
        peer.write_all(&pcap_records(2)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut link_types = Vec::new();
        while link_types.len() < 2 {
            match h.next_packet(&mut info) {
                Status::Packet => link_types.push(info.link_type),
                Status::Empty => {
                    assert!(Instant::now() < deadline, "{:?}", lines(&h));
                    h.source.wait(Duration::from_millis(50));
                }
                _ => panic!("the source ended or failed: {:?}", lines(&h)),
            }
        }
        assert_eq!(
            link_types,
            [crate::stream::linktype::linktype_to_dlt(101); 2]
        );
        h.close();
    }

    #[test]
    fn absurd_open_timeouts_neither_panic_nor_keep_packets_from_zeek() {
        for open_timeout in [1e300, f64::INFINITY, f64::MAX, f64::NAN, -5.0] {
            let (mut h, addr) = listening(Options {
                open_timeout,
                ..options()
            });
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&pcap_header()).unwrap();
            s.write_all(&pcap_records(3)).unwrap();
            let got = collect(&mut h, 3);
            assert_eq!(
                got,
                [1_700_000_000, 1_700_000_001, 1_700_000_002],
                "open_timeout = {open_timeout}"
            );
            h.close();
            assert!(
                lines(&h).iter().all(|l| !l.contains("panic")),
                "open_timeout = {open_timeout}"
            );
        }
    }

    #[test]
    fn a_huge_merge_window_holds_packets_for_a_quiet_sender_but_does_not_kill_the_merge() {
        let (mut h, addr) = listening(Options {
            merge_window: 1e300,
            ..options()
        });
        // A sender that is connected and has sent its header, but no
        // packet: the merge waits for it, computing "quiet since + window".
        let mut quiet = TcpStream::connect(addr).unwrap();
        quiet.write_all(&pcap_header()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.sender_count() == 0 {
            assert!(Instant::now() < deadline, "the quiet sender was not seen");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut good = TcpStream::connect(addr).unwrap();
        good.write_all(&pcap_header()).unwrap();
        good.write_all(&pcap_records(3)).unwrap();
        drop(good);
        std::thread::sleep(Duration::from_millis(200));
        // The window (a year, capped) ends when the quiet sender does.
        drop(quiet);
        assert_eq!(
            collect(&mut h, 3),
            [1_700_000_000, 1_700_000_001, 1_700_000_002]
        );
        h.close();
        let lines = lines(&h);
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("panic") && !l.contains("internal error")),
            "{lines:?}"
        );
    }

    #[test]
    fn absurd_intervals_become_the_config_capped_or_off() {
        let c = config(&Options {
            reconnect_min: f64::NAN,
            reconnect_max: 1e300,
            open_timeout: 1e300,
            keepalive_idle: 1e300,
            keepalive_interval: -5.0,
            idle_timeout: f64::INFINITY,
            merge_window: -5.0,
            header_timeout: f64::NAN,
            ..options()
        })
        .unwrap();
        assert_eq!(c.reconnect_min, Duration::ZERO);
        assert_eq!(c.reconnect_max, crate::shared::config::MAX_INTERVAL);
        assert_eq!(c.open_timeout, Some(crate::shared::config::MAX_INTERVAL));
        assert_eq!(
            c.keepalive.map(|k| (k.idle, k.interval)),
            Some((crate::shared::config::MAX_INTERVAL, Duration::ZERO))
        );
        assert_eq!(c.idle_timeout, Some(crate::shared::config::MAX_INTERVAL));
        assert_eq!(c.merge_window, Duration::ZERO);
        assert_eq!(c.header_timeout, None);
    }

    #[test]
    fn a_panic_in_a_bridge_function_becomes_an_error_line_and_a_neutral_answer() {
        let (h, _) = listening(options());
        let body: Result<Status, String> = caught(|| panic!("boom {}", 42));
        let status = h.guard("next_packet", body).unwrap_or(Status::Ended);
        assert!(matches!(status, Status::Ended));
        assert!(h.has_messages());
        let lines = h.take_messages();
        let errors: Vec<&str> = lines
            .iter()
            .filter(|l| matches!(l.level, LogLevel::Error))
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(
            errors,
            [format!(
                "{}: internal error (a panic in next_packet: boom 42); please report it as a bug",
                h.label
            )]
        );
        let unit: Result<(), String> = caught(|| panic!("static"));
        assert_eq!(unit, Err("static".to_string()));
    }
}
