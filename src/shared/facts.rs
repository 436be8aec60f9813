//! Facts for the front end's scripts: a feed lost or restored, a sender
//! connected, gone or refused, drops its capture host reported. Reader
//! threads queue them; the Zeek shim drains them on Zeek's main thread
//! (the only one that may raise events) and raises one event each.
//!
//! The queue is bounded, and each fact is already rate limited where it
//! arises (one per outage, one refusal per address per 10 s, upstream
//! drops at most once a second per connection), so a storm of connections
//! cannot flood script land. A front end that raises no events (the
//! broker) leaves the queue disabled: nothing is kept.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::shared::sync::lock;

/// Facts queued beyond this are counted, not kept.
pub const MAX_FACTS: usize = 1000;

/// Why a listening source closed a sender before admitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address is outside `allowed_senders`.
    Acl,
    /// `max_senders` senders were connected and none was silent enough to
    /// give way.
    Limit,
    /// Its TLS handshake failed (no or a bad client certificate, a name
    /// not allowed, not TLS at all).
    Tls,
}

impl Refusal {
    /// The word script land sees (`PcapOverTcp::sender_refused`'s `kind`).
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Acl => "acl",
            Refusal::Limit => "limit",
            Refusal::Tls => "tls",
        }
    }
}

/// One fact, in the words of the event it becomes. `source` is the
/// endpoint as written in the interface name; `sender` is the sender as
/// `stats()$senders` names it (a connect endpoint, or a listening sender's
/// IP address).
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A connect endpoint's stream was lost (an outage begins).
    FeedLost { endpoint: String, reason: String },
    /// A connect endpoint's stream is back after `outage`.
    FeedRestored { endpoint: String, outage: Duration },
    /// A sender's stream header arrived (it was admitted).
    SenderConnected { source: String, sender: String },
    /// An admitted sender's connection ended after `packets` records.
    SenderLeft {
        source: String,
        sender: String,
        packets: u64,
    },
    /// A listening source turned a sender away.
    SenderRefused {
        source: String,
        sender: String,
        refusal: Refusal,
        reason: String,
    },
    /// The sender's capture host reported `dropped` more drops; `total`
    /// is the sender's `upstream_dropped` now.
    UpstreamDrops {
        source: String,
        sender: String,
        dropped: u64,
        total: u64,
    },
}

/// One source's queue of facts.
#[derive(Debug, Default)]
pub struct Facts {
    enabled: AtomicBool,
    queue: Mutex<Vec<Fact>>,
    pending: AtomicBool,
    lost: AtomicU64,
}

impl Facts {
    /// From now on facts are kept (the front end drains them).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// Queues `fact`; false if it was not kept (disabled, or full).
    pub fn push(&self, fact: Fact) -> bool {
        if !self.enabled.load(Ordering::Acquire) {
            return false;
        }
        let mut q = lock(&self.queue);
        if q.len() >= MAX_FACTS {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        q.push(fact);
        self.pending.store(true, Ordering::Release);
        true
    }

    /// Whether facts are waiting; cheap enough to call per packet.
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes the queued facts, oldest first, and how many were dropped
    /// since the last call because the queue was full.
    pub fn take(&self) -> (Vec<Fact>, u64) {
        let mut q = lock(&self.queue);
        self.pending.store(false, Ordering::Release);
        (
            std::mem::take(&mut *q),
            self.lost.swap(0, Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(n: u64) -> Fact {
        Fact::FeedLost {
            endpoint: format!("e{n}"),
            reason: "r".into(),
        }
    }

    #[test]
    fn facts_are_kept_only_when_enabled_in_order_and_bounded() {
        let f = Facts::default();
        assert!(!f.push(lost(0)), "disabled: the broker keeps none");
        assert!(!f.pending());
        f.enable();
        for i in 0..MAX_FACTS as u64 + 7 {
            f.push(lost(i));
        }
        assert!(f.pending());
        let (facts, dropped) = f.take();
        assert_eq!(facts.len(), MAX_FACTS);
        assert_eq!(facts[0], lost(0));
        assert_eq!(dropped, 7);
        assert!(!f.pending());
        assert_eq!(f.take(), (vec![], 0));
    }
}
