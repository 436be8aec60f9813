//! The source's settings: the `PcapOverTcp::` script constants.

use std::time::Duration;

use ipnet::IpNet;

use crate::endpoint::Share;
use crate::share::ShareBy;
use crate::tls::TlsOptions;

use crate::parse::Limits;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Capacity of the ring in bytes (`buffer_size`).
    pub buffer_size: usize,
    pub limits: Limits,
    /// Reconnect when the connection ends or fails (`reconnect`).
    pub reconnect: bool,
    /// First and longest wait between connection attempts.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long `open` waits for a stream header, whatever the peer does;
    /// `None` waits for ever (`open_timeout` 0).
    pub open_timeout: Option<Duration>,
    /// Drop whole packets instead of blocking the reader while the ring is
    /// full (`drop_when_full`).
    pub drop_when_full: bool,
    /// How long one TCP connect may take.
    pub connect_timeout: Duration,
    /// Dead-peer detection by TCP keepalive; `None` leaves the system's
    /// defaults (`keepalive_idle` 0).
    pub keepalive: Option<Keepalive>,
    /// No bytes for this long counts as an outage (`idle_timeout`); `None`
    /// waits for ever, since a quiet network is legitimate.
    pub idle_timeout: Option<Duration>,
    /// With several connections: how long a read may wait for the other
    /// connections' records before it is released anyway (`merge_window`);
    /// zero releases what has arrived at once.
    pub merge_window: Duration,
    /// With several connections: the longest a record waits in the merge,
    /// and how far behind the front a sender may be and still be waited
    /// for (`merge_max_hold`; at least `merge_window`).
    pub merge_max_hold: Duration,
    /// With several connections: records dated further than this after
    /// this host's clock and the merge's front are dropped
    /// (`merge_max_skew`); zero: no limit.
    pub merge_max_skew: Duration,
    /// Listening: senders connected at once (`max_senders`).
    pub max_senders: usize,
    /// Listening: the networks senders may connect from; empty = any
    /// (`allowed_senders`).
    pub allowed_senders: Vec<IpNet>,
    /// Listening: a sender whose header has not arrived after this long is
    /// closed (`header_timeout`); `None` waits for ever.
    pub header_timeout: Option<Duration>,
    /// This worker's share of the stream (`?share=I/N`); `None` keeps all.
    pub share: Option<Share>,
    /// How packets are assigned to shares (`share_by`).
    pub share_by: ShareBy,
    /// The `tls_*` options.
    pub tls: TlsOptions,
}

/// TCP keepalive: after `idle` without traffic the kernel probes the peer
/// every `interval`; after `probes` unanswered probes (and, on Linux,
/// TCP_USER_TIMEOUT at the same bound) the connection fails. A healthy but
/// quiet peer's kernel answers every probe, so this never fires on silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
}

impl Keepalive {
    /// The longest a dead peer can go unnoticed.
    pub fn bound(&self) -> Duration {
        self.idle
            .saturating_add(self.interval.saturating_mul(self.probes))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            buffer_size: 128 * 1024 * 1024,
            limits: Limits::default(),
            reconnect: true,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            open_timeout: None,
            drop_when_full: false,
            connect_timeout: Duration::from_secs(10),
            keepalive: Some(Keepalive {
                idle: Duration::from_secs(10),
                interval: Duration::from_secs(3),
                probes: 4,
            }),
            idle_timeout: None,
            merge_window: Duration::from_millis(100),
            merge_max_hold: Duration::from_secs(1),
            merge_max_skew: Duration::from_secs(300),
            max_senders: 64,
            allowed_senders: Vec::new(),
            header_timeout: Some(Duration::from_secs(10)),
            share: None,
            share_by: ShareBy::AddressPair,
            tls: TlsOptions::default(),
        }
    }
}

impl Config {
    /// The same settings with inconsistent values made usable: a zero
    /// backoff becomes 1 ms, the maximum is at least the minimum, keepalive
    /// times are whole seconds of at least 1 (the kernel's unit).
    pub fn normalized(mut self) -> Config {
        self.buffer_size = self.buffer_size.max(1);
        self.reconnect_min = self.reconnect_min.max(Duration::from_millis(1));
        self.reconnect_max = self.reconnect_max.max(self.reconnect_min);
        self.connect_timeout = self.connect_timeout.max(Duration::from_millis(1));
        if let Some(k) = &mut self.keepalive {
            let secs = |d: Duration| Duration::from_secs(d.as_secs().clamp(1, 32767));
            k.idle = secs(k.idle);
            k.interval = secs(k.interval);
            k.probes = k.probes.clamp(1, 127);
        }
        self
    }
}
