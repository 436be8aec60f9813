//! What the reader thread and the consumer share: the settings, the ring
//! and counters, the message queue, whether the stream has opened (or why
//! it could not), and the stop signal that closing sends.
//!
//! Both [`crate::reader`] and [`crate::source`] use it; neither owns it, so
//! the data path has no circle: source → reader → control.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::config::Config;
use crate::counters::Counters;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::messages::Messages;
use crate::ring::Ring;
use crate::sync::lock;

/// A start-up step (a connect, a header) still unfinished after this long is
/// mentioned to the operator (once per start-up), while the wait goes on.
pub const NOTICE_AFTER: Duration = Duration::from_secs(1);

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

#[derive(Debug)]
pub(crate) struct Control {
    pub endpoint: Endpoint,
    pub config: Config,
    pub ring: Ring,
    pub counters: Counters,
    pub messages: Arc<Messages>,
    status: Mutex<Status>,
    status_changed: Condvar,
    open: AtomicBool,
    stop: AtomicBool,
    /// Signalled when `stop` is set, to cut a backoff pause short.
    stop_lock: Mutex<()>,
    stopped: Condvar,
    /// The socket being connected or read, so that closing can shut it.
    socket: Mutex<Option<Socket>>,
    /// Why no stream is open yet, for the error when the wait runs out.
    waiting_for: Mutex<String>,
    /// The start-up wait has been mentioned to the operator.
    wait_mentioned: AtomicBool,
}

impl Control {
    pub fn new(endpoint: Endpoint, config: Config, ring: Ring, messages: Arc<Messages>) -> Self {
        Control {
            endpoint,
            config,
            ring,
            counters: Counters::default(),
            messages,
            status: Mutex::new(Status::Starting),
            status_changed: Condvar::new(),
            open: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stopped: Condvar::new(),
            socket: Mutex::new(None),
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
    /// the error the consumer reports.
    pub fn fail(&self, e: Error) {
        let mut st = lock(&self.status);
        if matches!(*st, Status::Starting) {
            *st = Status::Failed(e);
            self.status_changed.notify_all();
        }
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
        let how_long = match self.config.open_timeout {
            None => "waiting for a stream (PcapOverTcp::open_timeout is 0: no time limit)".into(),
            Some(limit) => format!(
                "waiting for a stream for up to {:.1} s (PcapOverTcp::open_timeout)",
                limit.as_secs_f64()
            ),
        };
        log::warn!("{what}; {how_long}");
    }

    pub fn waiting_for(&self) -> String {
        lock(&self.waiting_for).clone()
    }

    pub fn set_socket(&self, socket: Socket) {
        *lock(&self.socket) = Some(socket);
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
    /// blocked in (a pause, a connect or read, a full ring).
    pub fn stop(&self) {
        {
            let _guard = lock(&self.stop_lock);
            self.stop.store(true, Ordering::Release);
            self.stopped.notify_all();
        }
        if let Some(s) = lock(&self.socket).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.ring.close();
    }
}
