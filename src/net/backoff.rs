//! Between connection attempts: a pause that doubles from a minimum to a
//! maximum and starts again at the minimum after a success ([`Backoff`]),
//! and an outage said once when it starts and once when it ends, not once
//! per attempt ([`Outage`]). The core's connect endpoints and every
//! redialling loop of pcapovertcp-serve use these.

use std::time::{Duration, Instant};

/// The pause before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The pause before the next attempt, without taking it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Takes the pause before the next attempt; the one after is twice as
    /// long, up to the maximum.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        pause
    }

    /// An attempt succeeded: the next pause is the minimum again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Resets when the attempt that ended lasted at least the maximum
    /// pause: a peer that keeps closing at once is not redialled ten times
    /// a second, one that served a while gets a prompt retry.
    pub fn reset_after(&mut self, lasted: Duration) {
        if lasted >= self.max {
            self.reset();
        }
    }

    /// Sleeps the next pause.
    pub fn wait(&mut self) {
        std::thread::sleep(self.next_pause());
    }
}

/// An outage, reported once when it starts (and once per kind of failure
/// in it) and once when it ends.
#[derive(Debug, Default)]
pub struct Outage {
    /// Since when the peer is down; None while it is up.
    since: Option<Instant>,
    /// The kinds of failure already reported in this outage.
    said: Vec<String>,
}

impl Outage {
    /// An attempt failed with a failure of `kind`: whether to report it
    /// (the first of its kind in this outage). Starts the outage.
    pub fn down(&mut self, kind: &str) -> bool {
        self.since.get_or_insert_with(Instant::now);
        if self.said.iter().any(|k| k == kind) {
            return false;
        }
        // Bounded: a peer that fails a new way each time is said at most
        // this often per outage.
        if self.said.len() < 16 {
            self.said.push(kind.to_string());
        }
        true
    }

    /// The peer is up: how long the outage lasted, if there was one (to
    /// report its end once).
    pub fn up(&mut self) -> Option<Duration> {
        self.said.clear();
        self.since.take().map(|s| s.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_to_the_maximum_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let pauses: Vec<_> = (0..5).map(|_| b.next_pause()).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset_after(ms(499));
        assert_eq!(b.peek(), ms(500));
        b.reset_after(ms(500));
        assert_eq!(b.peek(), ms(100));
        b.next_pause();
        b.reset();
        assert_eq!(b.next_pause(), ms(100));
        // A maximum below the minimum is the minimum.
        assert_eq!(Backoff::new(ms(300), ms(1)).next_pause(), ms(300));
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.next_pause(), Duration::MAX);
        assert_eq!(huge.next_pause(), Duration::MAX);
    }

    #[test]
    fn an_outage_is_reported_once_per_kind_and_its_end_once() {
        let mut o = Outage::default();
        assert!(o.up().is_none(), "no outage yet");
        assert!(o.down("refused"));
        assert!(!o.down("refused"));
        assert!(o.down("no header"));
        assert!(!o.down("no header"));
        assert!(o.since.is_some());
        assert!(o.up().is_some());
        assert!(o.up().is_none(), "its end is said once");
        assert!(o.down("refused"), "a new outage is reported again");
        for i in 0..100 {
            o.down(&format!("kind {i}"));
        }
        assert!(o.said.len() <= 16);
    }
}
