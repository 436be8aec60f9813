//! The source's settings: the `PcapOverTcp::` script constants.

use std::time::Duration;

use ipnet::IpNet;

use crate::endpoint::Share;
use crate::stream::share::ShareBy;
use crate::tls::TlsOptions;

use crate::stream::parse::Limits;

/// The longest interval any option is taken to mean: 365 days. A longer one
/// (`1e300 sec`, `inf`) is this: for a timeout or a window it is "for ever"
/// in practice, and it keeps every `Instant + option` in the core far from
/// overflow (which would panic, and a panic in Zeek's process aborts it).
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A Zeek interval (seconds, as a double) as a `Duration`, never panicking:
/// NaN and negative values are 0, values above [`MAX_INTERVAL`] are
/// `MAX_INTERVAL`.
pub fn interval(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(seconds).map_or(MAX_INTERVAL, |d| d.min(MAX_INTERVAL))
}

/// An interval option whose 0 means "off" (no limit, or the system's
/// default): `None` for 0, negative and NaN, else [`interval`].
pub fn optional_interval(seconds: f64) -> Option<Duration> {
    (seconds > 0.0).then(|| interval(seconds))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Capacity of the hand-off in bytes (`buffer_size`).
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
    /// Drop whole packets instead of blocking the reader while the hand-off is
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
    /// Queue [`super::facts::Fact`]s for the front end to drain (the Zeek
    /// plugin raises them as events); off, none are kept.
    pub events: bool,
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
            events: false,
        }
    }
}

impl Config {
    /// The same settings with inconsistent values made usable: every
    /// interval is at most [`MAX_INTERVAL`] (so that the core's `Instant +
    /// interval` cannot overflow, whoever built the `Config`), a zero
    /// backoff becomes 1 ms, the maximum is at least the minimum, keepalive
    /// times are whole seconds of at least 1 (the kernel's unit).
    pub fn normalized(mut self) -> Config {
        let cap = |d: &mut Duration| *d = (*d).min(MAX_INTERVAL);
        cap(&mut self.reconnect_min);
        cap(&mut self.reconnect_max);
        cap(&mut self.connect_timeout);
        cap(&mut self.merge_window);
        for d in [
            &mut self.open_timeout,
            &mut self.idle_timeout,
            &mut self.header_timeout,
        ] {
            d.iter_mut().for_each(cap);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_is_never_negative_nan_or_beyond_the_maximum() {
        assert_eq!(interval(0.25), Duration::from_millis(250));
        assert_eq!(interval(0.0), Duration::ZERO);
        assert_eq!(interval(-0.0), Duration::ZERO);
        assert_eq!(interval(-5.0), Duration::ZERO);
        assert_eq!(interval(f64::NAN), Duration::ZERO);
        assert_eq!(interval(f64::NEG_INFINITY), Duration::ZERO);
        assert_eq!(interval(1e-300), Duration::ZERO);
        assert_eq!(interval(31_536_000.0), MAX_INTERVAL);
        assert_eq!(interval(31_536_001.0), MAX_INTERVAL);
        assert_eq!(interval(1e300), MAX_INTERVAL);
        assert_eq!(interval(f64::MAX), MAX_INTERVAL);
        assert_eq!(interval(f64::INFINITY), MAX_INTERVAL);
        assert_eq!(MAX_INTERVAL, Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn an_interval_whose_zero_means_off_is_none_for_zero_negative_and_nan() {
        assert_eq!(optional_interval(2.5), Some(Duration::from_millis(2500)));
        assert_eq!(optional_interval(1e300), Some(MAX_INTERVAL));
        assert_eq!(optional_interval(0.0), None);
        assert_eq!(optional_interval(-5.0), None);
        assert_eq!(optional_interval(f64::NAN), None);
    }

    #[test]
    fn normalized_caps_every_interval_so_that_instant_arithmetic_cannot_overflow() {
        let c = Config {
            reconnect_min: Duration::MAX,
            reconnect_max: Duration::MAX,
            open_timeout: Some(Duration::MAX),
            connect_timeout: Duration::MAX,
            idle_timeout: Some(Duration::MAX),
            merge_window: Duration::MAX,
            header_timeout: Some(Duration::MAX),
            ..Config::default()
        }
        .normalized();
        for d in [
            c.reconnect_min,
            c.reconnect_max,
            c.open_timeout.unwrap(),
            c.connect_timeout,
            c.idle_timeout.unwrap(),
            c.merge_window,
            c.header_timeout.unwrap(),
        ] {
            assert_eq!(d, MAX_INTERVAL);
            // What merge.rs and source.rs do with a window or a timeout.
            assert!(std::time::Instant::now().checked_add(d).is_some());
        }
        assert_eq!(Config::default().normalized(), Config::default());
    }
}
