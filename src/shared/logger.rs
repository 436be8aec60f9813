//! Where the core's messages go: the message sink of the source a thread
//! works for.
//!
//! Zeek's reporter may only be called from the main thread, but most messages
//! come from reader threads. A thread that works for a source routes what
//! it says ([`warning!`] and its siblings, the core's stand-ins for `log`'s
//! macros) to that source's [`Messages`] queue ([`route_to`]), in the words
//! of the front end that started the source ([`super::setting`]); the front
//! end drains the queue (the Zeek shim on its main thread, reporting
//! warnings and errors through the reporter and the rest to the plugin's
//! debug stream; pcapovertcp-serve into its log).
//!
//! What a thread that works for no source says goes to the `log` facade:
//! to the host program's logger. The Zeek plugin installs [`install`] as
//! that logger (Zeek has none), which writes such lines to stderr rather
//! than lose them; pcapovertcp-serve has its own (env_logger) and gets the
//! core's lines (the shared network layer's) there.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use log::Level;
#[cfg(feature = "zeek")]
use log::{LevelFilter, Log, Metadata, Record};

use crate::shared::messages::Messages;

thread_local! {
    static ROUTE: RefCell<Option<Arc<Messages>>> = const { RefCell::new(None) };
}

#[cfg(feature = "zeek")]
struct Router;

#[cfg(feature = "zeek")]
static LOGGER: Router = Router;

#[cfg(feature = "zeek")]
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

/// Says `args` at `level`: to the message sink of the source this thread
/// works for, else to the `log` facade (with `target`, the module's path).
pub fn say(level: Level, target: &str, args: fmt::Arguments<'_>) {
    let unrouted = ROUTE.with(|r| match &*r.borrow() {
        Some(sink) => {
            sink.push(level, args.to_string());
            None
        }
        None => Some(args),
    });
    if let Some(args) = unrouted {
        log::log!(target: target, level, "{args}");
    }
}

macro_rules! say_at {
    ($level:ident, $($arg:tt)+) => {
        $crate::shared::logger::say(log::Level::$level, module_path!(), format_args!($($arg)+))
    };
}

/// The core's `log::error!`, to this thread's message sink.
macro_rules! error {
    ($($arg:tt)+) => { $crate::shared::logger::say_at!(Error, $($arg)+) };
}
macro_rules! warning {
    ($($arg:tt)+) => { $crate::shared::logger::say_at!(Warn, $($arg)+) };
}
macro_rules! info {
    ($($arg:tt)+) => { $crate::shared::logger::say_at!(Info, $($arg)+) };
}
macro_rules! debug {
    ($($arg:tt)+) => { $crate::shared::logger::say_at!(Debug, $($arg)+) };
}
#[allow(unused_imports)]
pub(crate) use {debug, error, info, say_at, warning};

/// Installs the logger that writes what no source's thread says to stderr
/// (the Zeek plugin's: Zeek has no `log` logger), unless the host program
/// installed one.
#[cfg(feature = "zeek")]
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
}

/// From now on, what this thread says goes to `sink`, in its front end's
/// words.
pub fn route_to(sink: Arc<Messages>) {
    crate::shared::setting::use_names(sink.names());
    ROUTE.with(|r| *r.borrow_mut() = Some(sink));
}

/// Queues `fact` for the scripts of the front end of the source this
/// thread works for; dropped on a thread that works for none.
pub fn fact(fact: crate::shared::facts::Fact) {
    ROUTE.with(|r| {
        if let Some(sink) = &*r.borrow() {
            sink.fact(fact);
        }
    });
}

/// Runs `f` with this thread's records routed to `sink`, then restores the
/// previous route.
pub fn routed<T>(sink: &Arc<Messages>, f: impl FnOnce() -> T) -> T {
    let previous = ROUTE.with(|r| r.borrow_mut().replace(sink.clone()));
    let out = crate::shared::setting::with_names(sink.names(), f);
    ROUTE.with(|r| *r.borrow_mut() = previous);
    out
}
