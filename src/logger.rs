//! The `log` facade, routed to Zeek.
//!
//! Zeek's reporter may only be called from the main thread, but most messages
//! come from reader threads. A thread that works for a source routes its
//! records to that source's [`Messages`] queue ([`route_to`]); the shim
//! drains the queue on the main thread, reporting warnings and errors
//! through the reporter and the rest to the plugin's debug stream. A record
//! from a thread that works for no source (there is none today) has no
//! queue to go to: it is written to stderr rather than lost.

use std::cell::RefCell;
use std::sync::Arc;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::messages::Messages;

thread_local! {
    static ROUTE: RefCell<Option<Arc<Messages>>> = const { RefCell::new(None) };
}

struct Router;

static LOGGER: Router = Router;

impl Log for Router {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target().starts_with("pcapovertcp")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let level = record.level();
        let routed = ROUTE.with(|r| match &*r.borrow() {
            Some(sink) => {
                sink.push(level, message.clone());
                true
            }
            None => false,
        });
        if !routed && level <= Level::Info {
            eprintln!("pcapovertcp: {level}: {message}");
        }
    }

    fn flush(&self) {}
}

/// Installs the routing logger, unless the host program installed one.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
}

/// From now on, what this thread logs goes to `sink`.
pub fn route_to(sink: Arc<Messages>) {
    ROUTE.with(|r| *r.borrow_mut() = Some(sink));
}

/// Runs `f` with this thread's records routed to `sink`, then restores the
/// previous route.
pub fn routed<T>(sink: &Arc<Messages>, f: impl FnOnce() -> T) -> T {
    let previous = ROUTE.with(|r| r.borrow_mut().replace(sink.clone()));
    let out = f();
    ROUTE.with(|r| *r.borrow_mut() = previous);
    out
}
