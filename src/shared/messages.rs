//! One source's messages for the operator, queued by whichever thread logs
//! them (through the `log` facade, see [`super::logger`]) and drained by the
//! shim on Zeek's main thread, the only thread that may call Zeek's reporter.
//!
//! Each source has its own queue, so what one source (or test) logs never
//! lands in another's; and a queue outlives a failed `open`, so the shim can
//! still report what was said before the failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use log::Level;

use crate::shared::facts::{Fact, Facts};
use crate::shared::setting::Names;
use crate::shared::sync::lock;

/// Queued messages beyond this are counted, not kept.
const MAX_QUEUED: usize = 1000;

type Notify = Box<dyn Fn() + Send + Sync>;

pub struct Messages {
    /// The words of the front end that reads them (see [`super::setting`]).
    names: Names,
    queue: Mutex<Vec<(Level, String)>>,
    pending: AtomicBool,
    lost: AtomicUsize,
    /// Facts for the front end's scripts (events), drained with the
    /// messages.
    facts: Facts,
    /// Called after each message the operator sees (info and above): wakes
    /// an idle Zeek so that it reports the message now, not on its next
    /// packet. Debug lines wait for the next turn.
    notify: OnceLock<Notify>,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Default for Messages {
    /// In the Zeek plugin's words.
    fn default() -> Self {
        Messages::with_names(crate::shared::setting::zeek)
    }
}

impl Messages {
    /// A queue whose messages name settings with `names`.
    pub fn with_names(names: Names) -> Self {
        Messages {
            names,
            queue: Mutex::default(),
            pending: AtomicBool::default(),
            lost: AtomicUsize::default(),
            facts: Facts::default(),
            notify: OnceLock::new(),
        }
    }

    /// The words its messages name settings in.
    pub fn names(&self) -> Names {
        self.names
    }

    /// Sets what wakes the consumer when a message is queued (once).
    pub fn on_message(&self, notify: impl Fn() + Send + Sync + 'static) {
        let _ = self.notify.set(Box::new(notify));
    }

    pub fn push(&self, level: Level, message: String) {
        {
            let mut q = lock(&self.queue);
            if q.len() >= MAX_QUEUED {
                self.lost.fetch_add(1, Ordering::Relaxed);
            } else {
                q.push((level, message));
            }
            self.pending.store(true, Ordering::Release);
        }
        if level <= Level::Info {
            if let Some(notify) = self.notify.get() {
                notify();
            }
        }
    }

    /// From now on facts are kept for the front end (the Zeek plugin),
    /// which drains them with [`Messages::take_facts`].
    pub fn enable_facts(&self) {
        self.facts.enable();
    }

    /// Queues a fact for the front end's scripts and wakes the consumer.
    pub fn fact(&self, fact: Fact) {
        if self.facts.push(fact) {
            if let Some(notify) = self.notify.get() {
                notify();
            }
        }
    }

    /// The queued facts, oldest first. Facts dropped because the queue
    /// was full are said in a warning, taken with the messages.
    pub fn take_facts(&self) -> Vec<Fact> {
        let (facts, lost) = self.facts.take();
        if lost > 0 {
            self.push(
                Level::Warn,
                format!(
                    "{lost} events of the PCAP-over-IP reader were dropped: more than {} were waiting for Zeek",
                    crate::shared::facts::MAX_FACTS
                ),
            );
        }
        facts
    }

    /// Whether messages (or facts) are waiting; cheap enough to call per
    /// packet.
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) || self.facts.pending()
    }

    /// Takes the queued messages, oldest first.
    pub fn take(&self) -> Vec<(Level, String)> {
        let mut q = lock(&self.queue);
        self.pending.store(false, Ordering::Release);
        let mut out = std::mem::take(&mut *q);
        let lost = self.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            out.push((
                Level::Warn,
                format!("{lost} further messages of the PCAP-over-IP reader were dropped"),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[test]
    fn queue_keeps_order_bounds_its_length_and_notifies() {
        let m = Messages::default();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        m.on_message(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert!(!m.pending());
        for i in 0..MAX_QUEUED + 5 {
            m.push(Level::Info, format!("m{i}"));
        }
        m.push(Level::Debug, "quiet".into());
        assert!(m.pending());
        let got = m.take();
        assert_eq!(got.len(), MAX_QUEUED + 1);
        // Past the bound, the debug line was counted as lost too.
        assert!(got[MAX_QUEUED].1.starts_with("6 further messages"));
        assert_eq!(got[0].1, "m0");
        assert!(!m.pending());
        assert_eq!(calls.load(Ordering::Relaxed), (MAX_QUEUED + 5) as u32);
    }
}
