//! The one bridge between Zeek's C++ `PktSrc` shim and the Rust core.
//! Every function here translates and delegates; none may panic.

use std::time::Duration;

use crate::config::{Config, Keepalive};
use crate::counters::{Field, Snapshot};
use crate::parse::Limits;
use crate::share::ShareBy;
use crate::source::{Next, Opening, Source};
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

    enum OpenStatus {
        /// The stream's header arrived; `link_type` is valid.
        Open,
        /// Still waiting; report messages and ask again.
        Waiting,
        /// Opening failed for good; `open_error` says why.
        Failed,
    }

    enum Status {
        /// `PacketInfo` describes a packet.
        Packet,
        /// Nothing waiting right now.
        Empty,
        /// The stream ended and every packet has been delivered.
        Ended,
    }

    struct PacketInfo {
        /// Valid until the next call to `next_packet` (Zeek's DoneWithPacket).
        data: *const u8,
        caplen: u32,
        wirelen: u32,
        ts_sec: i64,
        ts_usec: u32,
        link_type: i32,
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

    extern "Rust" {
        type PcapOverTcp;

        /// Checks `path` (the interface name after the prefix, as bytes:
        /// it may not be UTF-8) and starts connecting; returns at once.
        fn start(path: &[u8], options: &Options) -> Result<Box<PcapOverTcp>>;
        /// Waits at most `seconds` for the stream's header.
        fn wait_open(self: &mut PcapOverTcp, seconds: f64) -> OpenStatus;
        /// Why opening failed (after `OpenStatus::Failed`).
        fn open_error(self: &PcapOverTcp) -> String;
        /// The stream's DLT_ value once open (its first interface's for
        /// pcapng; packets carry their own).
        fn link_type(self: &PcapOverTcp) -> i32;
        fn selectable_fd(self: &PcapOverTcp) -> i32;
        fn next_packet(self: &mut PcapOverTcp, info: &mut PacketInfo) -> Status;
        /// The packet last returned was not passed to Zeek: rejected by the
        /// BPF filter (`filtered`), or dropped as empty.
        fn packet_not_delivered(self: &mut PcapOverTcp, filtered: bool);
        fn stats(self: &PcapOverTcp) -> SourceStats;
        fn counters(self: &PcapOverTcp) -> Vec<Counter>;
        fn senders(self: &PcapOverTcp) -> Vec<SenderCounters>;
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
        fn close(self: &mut PcapOverTcp);
    }
}

use bridge::{
    BufferUse, Counter, LogLevel, LogLine, OpenStatus, Options, PacketInfo, SenderCounters,
    SourceStats, Status,
};

/// The opaque handle the shim owns.
pub struct PcapOverTcp {
    source: Source,
    open_error: String,
}

fn clamp(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Seconds from a Zeek interval; negative, NaN or huge values are clamped.
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
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
        reconnect_min: seconds(options.reconnect_min),
        reconnect_max: seconds(options.reconnect_max),
        open_timeout: (options.open_timeout > 0.0).then(|| seconds(options.open_timeout)),
        drop_when_full: options.drop_when_full,
        keepalive: (options.keepalive_idle > 0.0).then(|| Keepalive {
            idle: seconds(options.keepalive_idle),
            interval: seconds(options.keepalive_interval),
            probes: u32::try_from(options.keepalive_probes).unwrap_or(u32::MAX),
        }),
        idle_timeout: (options.idle_timeout > 0.0).then(|| seconds(options.idle_timeout)),
        merge_window: seconds(options.merge_window),
        merge_max_hold: seconds(options.merge_max_hold),
        merge_max_skew: seconds(options.merge_max_skew),
        max_senders: clamp(options.max_senders),
        allowed_senders,
        header_timeout: (options.header_timeout > 0.0).then(|| seconds(options.header_timeout)),
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

fn zero_counters() -> Vec<Counter> {
    to_bridge(&Snapshot::default())
}

fn start(path: &[u8], options: &Options) -> Result<Box<PcapOverTcp>, crate::Error> {
    let Ok(path) = std::str::from_utf8(path) else {
        return Err(crate::Error::NotUtf8(
            String::from_utf8_lossy(path).into_owned(),
        ));
    };
    // Only the plugin installs a `log` logger: Zeek has none of its own.
    crate::logger::install();
    // Nothing here should panic; if it does, Zeek gets an error, not an abort.
    std::panic::catch_unwind(|| Source::start(path, config(options)?))
        .unwrap_or_else(|_| {
            Err(crate::Error::Internal {
                endpoint: path.to_string(),
                message: "panic while starting the source".into(),
            })
        })
        .map(|source| {
            Box::new(PcapOverTcp {
                source,
                open_error: String::new(),
            })
        })
}

impl PcapOverTcp {
    fn wait_open(&mut self, secs: f64) -> OpenStatus {
        match self.source.wait_open(seconds(secs)) {
            Opening::Open(_) => OpenStatus::Open,
            Opening::Waiting => OpenStatus::Waiting,
            Opening::Failed(e) => {
                self.open_error = e.to_string();
                OpenStatus::Failed
            }
        }
    }

    fn open_error(&self) -> String {
        self.open_error.clone()
    }

    fn link_type(&self) -> i32 {
        self.source.link_type().unwrap_or(-1)
    }

    fn selectable_fd(&self) -> i32 {
        self.source.selectable_fd()
    }

    fn next_packet(&mut self, info: &mut PacketInfo) -> Status {
        match self.source.next_packet() {
            Next::Packet(p) => {
                info.data = p.data.as_ptr();
                info.caplen = p.data.len() as u32;
                info.wirelen = p.wirelen;
                info.ts_sec = p.ts_sec;
                info.ts_usec = p.ts_usec();
                info.link_type = p.dlt;
                Status::Packet
            }
            Next::Empty => Status::Empty,
            Next::Ended => Status::Ended,
        }
    }

    fn packet_not_delivered(&mut self, filtered: bool) {
        self.source.not_delivered(filtered);
    }

    fn stats(&self) -> SourceStats {
        let s = self.source.stats();
        SourceStats {
            received: s.received,
            dropped: s.dropped,
            link: s.link,
            bytes_received: s.bytes_received,
            filtered: s.filtered,
        }
    }

    fn counters(&self) -> Vec<Counter> {
        to_bridge(&self.source.counters())
    }

    fn senders(&self) -> Vec<SenderCounters> {
        self.source
            .senders()
            .into_iter()
            .map(|(address, snapshot)| SenderCounters {
                address,
                counters: to_bridge(&snapshot),
            })
            .collect()
    }

    fn sender_count(&self) -> usize {
        self.source.sender_count()
    }

    fn sender_value(&self, sender: usize, field: usize) -> f64 {
        let Some(snapshot) = self.source.sender_at(sender) else {
            return 0.0;
        };
        match snapshot.fields().get(field) {
            Some(Field::Count(_, n) | Field::Level(_, n)) => *n as f64,
            Some(Field::Interval(_, d) | Field::IntervalLevel(_, d)) => d.as_secs_f64(),
            None => 0.0,
        }
    }

    fn buffer(&self) -> BufferUse {
        let (used, capacity) = self.source.buffer();
        BufferUse {
            used: used as u64,
            capacity: capacity as u64,
        }
    }

    fn has_messages(&self) -> bool {
        self.source.has_messages()
    }

    fn take_messages(&self) -> Vec<LogLine> {
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
    }

    fn close(&mut self) {
        self.source.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
