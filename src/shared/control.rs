//! What the source's threads (connections, listeners, the merge) and the
//! consumer share: the settings, the hand-off and counters, the message
//! queue, whether the source has opened or why it could not
//! ([`Startup`], in `control/startup.rs`), and the source's life: the stop
//! signal that closing sends, and the sockets and threads that closing
//! must end.
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
use crate::shared::read_buffers::ReadBuffers;
use crate::shared::sync::lock;

mod startup;
pub use startup::Opening;
pub(crate) use startup::{Startup, NOTICE_AFTER};

type Hook = Box<dyn Fn() + Send + Sync>;

pub(crate) struct Control {
    /// The whole interface name, for what concerns the source as a whole.
    pub label: String,
    pub config: Config,
    pub hand_off: HandOff,
    pub counters: Registry,
    pub messages: Arc<Messages>,
    /// The connections' read buffers, parked for reuse.
    pub read_buffers: ReadBuffers,
    /// Whether the source has opened, and what its start-up waits for.
    pub startup: Startup,
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
        let open_timeout = config.open_timeout;
        let read_buffers = ReadBuffers::new(config.buffer_size);
        Control {
            label,
            config,
            hand_off,
            counters: Registry::default(),
            messages,
            read_buffers,
            startup: Startup::new(open_timeout),
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stopped: Condvar::new(),
            sockets: Mutex::new((0, HashMap::new())),
            on_stop: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Reader: records why it stopped; before the stream opened, that is
    /// the error the consumer reports. The consumer is woken for it: Zeek
    /// runs (idle) while a connect source waits for its first stream.
    pub fn fail(&self, e: Error) {
        if self.startup.fail(e) {
            self.hand_off.notify();
        }
    }

    /// Fails the start-up with `OpenTimeout` if no stream has opened by
    /// `deadline` (`open_timeout` after start); returns when the stream
    /// opens, the start-up fails otherwise, or the source closes. Run on a
    /// thread of its own, so that the limit holds whatever the readers and
    /// the consumer are doing (Zeek does not wait in `Open()` for it).
    pub fn watch_open(&self, deadline: Instant) {
        if !self.startup.wait_timed_out(deadline, || self.stopping()) {
            return;
        }
        self.fail(Error::OpenTimeout {
            endpoint: self.label.clone(),
            seconds: self.config.open_timeout.unwrap_or_default().as_secs_f64(),
            waiting_for: self.startup.waiting_for(),
        });
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
