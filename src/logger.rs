//! The `log` facade, routed to Zeek.
//!
//! Zeek's reporter may only be called from the main thread, but most messages
//! come from reader threads. So records are queued here and the shim drains
//! them on the main thread (`Source::take_messages`), reporting warnings and
//! errors through the reporter and the rest to the plugin's debug stream.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Queued messages beyond this are counted, not kept.
const MAX_QUEUED: usize = 1000;

struct QueueLogger {
    queue: Mutex<Vec<(Level, String)>>,
    pending: AtomicBool,
    lost: AtomicUsize,
}

static LOGGER: QueueLogger = QueueLogger {
    queue: Mutex::new(Vec::new()),
    pending: AtomicBool::new(false),
    lost: AtomicUsize::new(0),
};

impl Log for QueueLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target().starts_with("pcapovertcp")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut q = lock(&self.queue);
        if q.len() >= MAX_QUEUED {
            self.lost.fetch_add(1, Ordering::Relaxed);
        } else {
            q.push((record.level(), record.args().to_string()));
        }
        self.pending.store(true, Ordering::Release);
    }

    fn flush(&self) {}
}

/// Installs the queueing logger, unless the host program installed one.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
}

/// Whether messages are waiting; cheap enough to call per packet.
pub fn pending() -> bool {
    LOGGER.pending.load(Ordering::Acquire)
}

/// Takes the queued messages, oldest first.
pub fn take() -> Vec<(Level, String)> {
    let mut q = lock(&LOGGER.queue);
    LOGGER.pending.store(false, Ordering::Release);
    let mut out = std::mem::take(&mut *q);
    let lost = LOGGER.lost.swap(0, Ordering::Relaxed);
    if lost > 0 {
        out.push((
            Level::Warn,
            format!("{lost} further messages of the PCAP-over-IP reader were dropped"),
        ));
    }
    out
}
