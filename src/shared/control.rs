//! What the source's threads (connections, listeners, the merge) and the
//! consumer share: the settings, the hand-off and counters, the message queue,
//! whether the source has opened (or why it could not), the stop signal
//! that closing sends, and the sockets and threads that closing must end.
//!
//! Every layer uses it and none owns it, so the data path has no circle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::handoff::queue::HandOff;
use crate::shared::config::Config;
use crate::shared::counters::Registry;
use crate::shared::error::Error;
use crate::shared::messages::Messages;
use crate::shared::setting::Setting;
use crate::shared::sync::lock;

/// A start-up step (a connect, a header) still unfinished after this long is
/// mentioned to the operator (once per start-up), while the wait goes on.
pub const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// How soon the `open_timeout` watch sees that the source is closing.
const WATCH_TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum Status {
    Starting,
    Open {
        link_type: i32,
    },
    Failed(Error),
    /// The failure was handed to the consumer.
    Reported,
}

/// What the consumer found while waiting for the stream to open.
#[derive(Debug)]
pub enum Opening {
    /// A whole stream header arrived; its link type.
    Open(i32),
    Waiting,
    Failed(Error),
}

type Hook = Box<dyn Fn() + Send + Sync>;

pub(crate) struct Control {
    /// The whole interface name, for what concerns the source as a whole.
    pub label: String,
    pub config: Config,
    pub hand_off: HandOff,
    pub counters: Registry,
    pub messages: Arc<Messages>,
    status: Mutex<Status>,
    status_changed: Condvar,
    open: AtomicBool,
    stop: AtomicBool,
    /// Signalled when `stop` is set, to cut a backoff pause short.
    stop_lock: Mutex<()>,
    stopped: Condvar,
    /// The sockets being connected, read or listened on, so that closing
    /// can shut them; by a key each holder removes on its way out.
    sockets: Mutex<(u64, HashMap<u64, Socket>)>,
    /// Called by `stop`: what else must wake up (a budget, the merge).
    on_stop: Mutex<Vec<Hook>>,
    /// The source's threads, for closing to wait for.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Why no stream is open yet, for the error when the wait runs out.
    waiting_for: Mutex<String>,
    /// The start-up wait has been mentioned to the operator.
    wait_mentioned: AtomicBool,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A socket registered with [`Control::hold_socket`]; unregistered on drop.
pub(crate) struct SocketHold<'a> {
    control: &'a Control,
    key: u64,
}

impl Drop for SocketHold<'_> {
    fn drop(&mut self) {
        lock(&self.control.sockets).1.remove(&self.key);
    }
}

impl Control {
    pub fn new(label: String, config: Config, hand_off: HandOff, messages: Arc<Messages>) -> Self {
        Control {
            label,
            config,
            hand_off,
            counters: Registry::default(),
            messages,
            status: Mutex::new(Status::Starting),
            status_changed: Condvar::new(),
            open: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stopped: Condvar::new(),
            sockets: Mutex::new((0, HashMap::new())),
            on_stop: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            waiting_for: Mutex::new("no connection was attempted yet".into()),
            wait_mentioned: AtomicBool::new(false),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Reader: a whole stream header has arrived.
    pub fn opened(&self, link_type: i32) {
        let mut st = lock(&self.status);
        if matches!(*st, Status::Starting) {
            *st = Status::Open { link_type };
        }
        self.open.store(true, Ordering::Release);
        self.status_changed.notify_all();
    }

    /// Reader: records why it stopped; before the stream opened, that is
    /// the error the consumer reports. The consumer is woken for it: Zeek
    /// runs (idle) while a connect source waits for its first stream.
    pub fn fail(&self, e: Error) {
        let mut st = lock(&self.status);
        if matches!(*st, Status::Starting) {
            *st = Status::Failed(e);
            self.status_changed.notify_all();
            self.hand_off.notify();
        }
    }

    /// Consumer: the start-up failure, if one is waiting (handed over once).
    /// Cheap once a stream has opened, when there can be none.
    pub fn take_failure(&self) -> Option<Error> {
        if self.is_open() {
            return None;
        }
        let mut st = lock(&self.status);
        match std::mem::replace(&mut *st, Status::Reported) {
            Status::Failed(e) => Some(e),
            other => {
                *st = other;
                None
            }
        }
    }

    /// Fails the start-up with `OpenTimeout` if no stream has opened by
    /// `deadline` (`open_timeout` after start); returns when the stream
    /// opens, the start-up fails otherwise, or the source closes. Run on a
    /// thread of its own, so that the limit holds whatever the readers and
    /// the consumer are doing (Zeek does not wait in `Open()` for it).
    pub fn watch_open(&self, deadline: Instant) {
        let mut st = lock(&self.status);
        loop {
            if !matches!(*st, Status::Starting) || self.stopping() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // In ticks: `stop` signals another condition variable.
            st = self
                .status_changed
                .wait_timeout(st, left.min(WATCH_TICK))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(st);
        self.fail(Error::OpenTimeout {
            endpoint: self.label.clone(),
            seconds: self.config.open_timeout.unwrap_or_default().as_secs_f64(),
            waiting_for: self.waiting_for(),
        });
    }

    /// Reader: what it is waiting for, in words, while no stream is open.
    pub fn note_waiting(&self, why: String) {
        *lock(&self.waiting_for) = why;
    }

    /// Reader: tells the operator, once per start-up, that Zeek is waiting
    /// and why (`what`), with how long it will wait.
    pub fn mention_wait(&self, what: &str) {
        if self.is_open() || self.wait_mentioned.swap(true, Ordering::AcqRel) {
            return;
        }
        let setting = Setting::OpenTimeout;
        let how_long = match (self.config.open_timeout, setting.name()) {
            (None, Some(name)) => format!("waiting for a stream ({name} is 0: no time limit)"),
            (None, None) => "waiting for a stream (no time limit)".into(),
            (Some(limit), _) => format!(
                "waiting for a stream for up to {:.1} s ({setting})",
                limit.as_secs_f64()
            ),
        };
        crate::shared::logger::warning!("{what}; {how_long}");
    }

    pub fn waiting_for(&self) -> String {
        lock(&self.waiting_for).clone()
    }

    /// Keeps a handle to a socket so that closing the source can shut it
    /// (which cuts a connect, read or accept short), until the returned
    /// hold is dropped.
    pub fn hold_socket(&self, socket: Socket) -> SocketHold<'_> {
        let mut s = lock(&self.sockets);
        let key = s.0;
        s.0 += 1;
        if self.stopping() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        s.1.insert(key, socket);
        SocketHold { control: self, key }
    }

    /// Runs `hook` when the source is stopped.
    pub fn on_stop(&self, hook: impl Fn() + Send + Sync + 'static) {
        lock(&self.on_stop).push(Box::new(hook));
    }

    /// Spawns one of the source's threads, with its messages routed to the
    /// source and a panic turned into an error line; closing waits for it.
    pub fn spawn(
        self: &Arc<Self>,
        name: String,
        f: impl FnOnce(&Arc<Control>) + Send + 'static,
    ) -> std::io::Result<()> {
        let control = self.clone();
        let handle = crate::shared::threads::spawn(name, move || {
            crate::shared::logger::route_to(control.messages.clone());
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&control)));
            if let Err(panic) = result {
                let e = Error::Internal {
                    endpoint: control.label.clone(),
                    message: panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into()),
                };
                crate::shared::logger::error!("{e}");
                control.fail(e);
            }
        })?;
        let mut threads = lock(&self.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(())
    }

    /// Waits until every thread of the source has ended, at most until
    /// `deadline`; whether they all did.
    pub fn join_threads(&self, deadline: Instant) -> bool {
        loop {
            let pending: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.threads));
            if pending.is_empty() {
                return true;
            }
            let (done, running): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|t| t.is_finished());
            for t in done {
                let _ = t.join();
            }
            if running.is_empty() {
                // A thread may have spawned another meanwhile: look again.
                continue;
            }
            lock(&self.threads).extend(running);
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Pauses the reader; false when the source is closing.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = lock(&self.stop_lock);
        let (_guard, _) = self
            .stopped
            .wait_timeout_while(guard, d, |_| !self.stopping())
            .unwrap_or_else(|e| e.into_inner());
        !self.stopping()
    }

    /// Consumer: waits until the stream opens or fails, at most until
    /// `until`. A failure is handed over once.
    pub fn wait_open(&self, until: Instant) -> Opening {
        let mut st = lock(&self.status);
        loop {
            match &*st {
                Status::Open { link_type } => return Opening::Open(*link_type),
                Status::Failed(_) => {
                    let Status::Failed(e) = std::mem::replace(&mut *st, Status::Reported) else {
                        unreachable!("matched above");
                    };
                    return Opening::Failed(e);
                }
                Status::Reported => return Opening::Waiting,
                Status::Starting => {}
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Opening::Waiting;
            }
            st = self
                .status_changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Consumer: tells the reader to stop, and cuts short whatever it is
    /// blocked in (a pause, a connect or read, a full hand-off).
    pub fn stop(&self) {
        {
            let _guard = lock(&self.stop_lock);
            self.stop.store(true, Ordering::Release);
            self.stopped.notify_all();
        }
        for s in lock(&self.sockets).1.values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for hook in lock(&self.on_stop).iter() {
            hook();
        }
        self.hand_off.close();
    }
}
