//! Whether the source has opened: the open-state machine that the readers
//! drive (a stream header opens the source, a failure before it fails the
//! start-up) and the consumer waits on, and what the start-up is waiting
//! for, told to the operator once. A part of [`super::Control`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::shared::error::Error;
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

/// The open state and the start-up wait of one source (see the module).
pub(crate) struct Startup {
    /// `open_timeout`, for the operator's message while waiting.
    open_timeout: Option<Duration>,
    status: Mutex<Status>,
    status_changed: Condvar,
    open: AtomicBool,
    /// Why no stream is open yet, for the error when the wait runs out.
    waiting_for: Mutex<String>,
    /// The start-up wait has been mentioned to the operator.
    wait_mentioned: AtomicBool,
}

impl Startup {
    pub fn new(open_timeout: Option<Duration>) -> Self {
        Startup {
            open_timeout,
            status: Mutex::new(Status::Starting),
            status_changed: Condvar::new(),
            open: AtomicBool::new(false),
            waiting_for: Mutex::new("no connection was attempted yet".into()),
            wait_mentioned: AtomicBool::new(false),
        }
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

    /// Records why the start-up failed, unless a stream has opened (or it
    /// failed already); whether it did, for the caller to wake the consumer.
    pub fn fail(&self, e: Error) -> bool {
        let mut st = lock(&self.status);
        if matches!(*st, Status::Starting) {
            *st = Status::Failed(e);
            self.status_changed.notify_all();
            return true;
        }
        false
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

    /// Waits until the stream opens, the start-up fails, `stopping` says
    /// so or `deadline` passes; whether it passed with the start-up still
    /// pending (the caller then fails it with `OpenTimeout`).
    pub fn wait_timed_out(&self, deadline: Instant, stopping: impl Fn() -> bool) -> bool {
        let mut st = lock(&self.status);
        loop {
            if !matches!(*st, Status::Starting) || stopping() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // In ticks: `stop` signals another condition variable.
            st = self
                .status_changed
                .wait_timeout(st, left.min(WATCH_TICK))
                .unwrap_or_else(|e| e.into_inner())
                .0;
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
        let setting = Setting::OpenTimeout;
        let how_long = match (self.open_timeout, setting.name()) {
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
}
