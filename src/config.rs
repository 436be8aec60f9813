//! The source's settings: the `PcapOverTcp::` script constants.

use std::time::Duration;

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
    /// How long `open` waits for a first stream when reconnecting; `None`
    /// waits for ever (`open_timeout` 0).
    pub open_timeout: Option<Duration>,
    /// Drop whole packets instead of blocking the reader while the ring is
    /// full (`drop_when_full`).
    pub drop_when_full: bool,
    /// How long one TCP connect may take.
    pub connect_timeout: Duration,
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
        }
    }
}

impl Config {
    /// The same settings with inconsistent values made usable: a zero
    /// backoff becomes 1 ms, and the maximum is at least the minimum.
    pub fn normalized(mut self) -> Config {
        self.buffer_size = self.buffer_size.max(1);
        self.reconnect_min = self.reconnect_min.max(Duration::from_millis(1));
        self.reconnect_max = self.reconnect_max.max(self.reconnect_min);
        self.connect_timeout = self.connect_timeout.max(Duration::from_millis(1));
        self
    }
}
