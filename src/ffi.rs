//! The one bridge between Zeek's C++ `PktSrc` shim and the Rust core.
//! Every function here translates and delegates; none may panic.

use std::time::Duration;

use crate::config::Config;
use crate::parse::Limits;
use crate::source::{Next, Source};

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

    /// The reader's counters, for `PcapOverTcp::stats()`.
    struct Counters {
        connects: u64,
        disconnects: u64,
        bytes: u64,
        records: u64,
        dropped: u64,
        truncated: u64,
        corrupt: u64,
        /// Seconds.
        connected: f64,
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

        /// Connects to `path` (`host:port`) and waits for the stream header.
        fn open(path: &str, options: &Options) -> Result<Box<PcapOverTcp>>;
        fn link_type(self: &PcapOverTcp) -> i32;
        fn selectable_fd(self: &PcapOverTcp) -> i32;
        fn next_packet(self: &mut PcapOverTcp, info: &mut PacketInfo) -> Status;
        /// The packet last returned was not passed to Zeek: rejected by the
        /// BPF filter (`filtered`), or dropped as empty.
        fn packet_not_delivered(self: &mut PcapOverTcp, filtered: bool);
        fn stats(self: &PcapOverTcp) -> SourceStats;
        fn counters(self: &PcapOverTcp) -> Counters;
        /// Whether `take_messages` has anything; cheap.
        fn has_messages(self: &PcapOverTcp) -> bool;
        fn take_messages(self: &PcapOverTcp) -> Vec<LogLine>;
        fn close(self: &mut PcapOverTcp);
    }
}

use bridge::{Counters, LogLevel, LogLine, Options, PacketInfo, SourceStats, Status};

/// The opaque handle the shim owns.
pub struct PcapOverTcp(Source);

fn clamp(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Seconds from a Zeek interval; negative, NaN or huge values are clamped.
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

fn config(options: &Options) -> Config {
    Config {
        buffer_size: clamp(options.buffer_size),
        limits: Limits {
            max_caplen: u32::try_from(options.max_caplen).unwrap_or(u32::MAX),
        },
        reconnect: options.reconnect,
        reconnect_min: seconds(options.reconnect_min),
        reconnect_max: seconds(options.reconnect_max),
        open_timeout: (options.open_timeout > 0.0).then(|| seconds(options.open_timeout)),
        drop_when_full: options.drop_when_full,
        ..Config::default()
    }
}

fn open(path: &str, options: &Options) -> Result<Box<PcapOverTcp>, crate::Error> {
    crate::logger::install();
    // Nothing here should panic; if it does, Zeek gets an error, not an abort.
    std::panic::catch_unwind(|| Source::open(path, config(options)))
        .unwrap_or_else(|_| {
            Err(crate::Error::Internal {
                endpoint: path.to_string(),
                message: "panic while opening the source".into(),
            })
        })
        .map(|s| Box::new(PcapOverTcp(s)))
}

impl PcapOverTcp {
    fn link_type(&self) -> i32 {
        self.0.link_type()
    }

    fn selectable_fd(&self) -> i32 {
        self.0.selectable_fd()
    }

    fn next_packet(&mut self, info: &mut PacketInfo) -> Status {
        match self.0.next_packet() {
            Next::Packet(p) => {
                info.data = p.data.as_ptr();
                info.caplen = p.data.len() as u32;
                info.wirelen = p.wirelen;
                info.ts_sec = p.ts_sec;
                info.ts_usec = p.ts_usec;
                info.link_type = p.dlt;
                Status::Packet
            }
            Next::Empty => Status::Empty,
            Next::Ended => Status::Ended,
        }
    }

    fn packet_not_delivered(&mut self, filtered: bool) {
        self.0.not_delivered(filtered);
    }

    fn stats(&self) -> SourceStats {
        let s = self.0.stats();
        SourceStats {
            received: s.received,
            dropped: s.dropped,
            link: s.link,
            bytes_received: s.bytes_received,
            filtered: s.filtered,
        }
    }

    fn counters(&self) -> Counters {
        let c = self.0.counters();
        Counters {
            connects: c.connects,
            disconnects: c.disconnects,
            bytes: c.bytes,
            records: c.records,
            dropped: c.dropped,
            truncated: c.truncated,
            corrupt: c.corrupt,
            connected: c.connected.as_secs_f64(),
        }
    }

    fn has_messages(&self) -> bool {
        crate::logger::pending()
    }

    fn take_messages(&self) -> Vec<LogLine> {
        crate::logger::take()
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
        self.0.close();
    }
}
