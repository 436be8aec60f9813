//! The byte budget that `buffer_size` sets for all connections together when
//! several are merged, and each connection's fair share of it.
//!
//! A connection charges each read's bytes before queueing them and gets
//! them back when Zeek has released the last packet cut from that read (the
//! [`Charge`] travels with the packets and is released on drop, wherever
//! that happens). A connection may hold at most an equal share of the
//! budget among the connections attached now, so a flooding sender fills
//! its own share and then waits (or drops, with `drop_when_full`) while a
//! slow one always finds room in its own. A connection holding nothing may
//! always charge one read, however large: an undersized budget slows
//! streams down but never stalls them. So the bytes held stay within the
//! capacity, plus at most one read per connection when shares are smaller
//! than a read, plus what connections took before others joined and
//! shrank their shares (given back as Zeek takes it).
//!
//! Each account waits on its own condition variable: whether a connection
//! may charge depends only on what it holds and on the number of shares,
//! so giving bytes back wakes only the account they were charged to. (One
//! shared condition variable woke every waiting connection at each of
//! Zeek's releases: with 64 senders that was most of the readers' time.)

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

use crate::shared::sync::lock;

#[derive(Debug)]
pub struct Budget {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    /// Connections attached now; each may hold `capacity / shares`.
    shares: usize,
    /// Those accounts, to wake when their shares grow or the budget closes.
    accounts: Vec<Weak<Account>>,
    closed: bool,
}

/// One connection's account: what it holds now.
#[derive(Debug)]
pub struct Account {
    budget: Arc<Budget>,
    held: AtomicUsize,
    /// Waiting for room: what it holds is queued downstream, so it will
    /// refill as Zeek takes those bytes.
    waiting: AtomicBool,
    /// Time spent waiting for room, not yet taken.
    waited_ns: AtomicU64,
    /// Signalled (under the budget's lock) when this account's bytes come
    /// back, its share grows or the budget closes.
    space: Condvar,
    /// Times `charge` woke from a wait: the cost the per-account condition
    /// variable keeps down.
    #[cfg(test)]
    wakeups: AtomicU64,
}

/// Bytes charged to an account, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    account: Arc<Account>,
    bytes: usize,
}

/// What became of a request for budget.
#[derive(Debug, PartialEq, Eq)]
pub enum Grant {
    Granted,
    /// Over the budget or the share, with `drop_when_full`.
    Full,
    /// The budget was closed: the source is closing.
    Closed,
}

impl Budget {
    pub fn new(capacity: usize) -> Arc<Budget> {
        Arc::new(Budget {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// A new connection's account; it counts as a share until dropped.
    pub fn open_account(self: &Arc<Self>) -> Arc<Account> {
        let account = Arc::new(Account {
            budget: self.clone(),
            held: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            waited_ns: AtomicU64::new(0),
            space: Condvar::new(),
            #[cfg(test)]
            wakeups: AtomicU64::new(0),
        });
        let mut st = lock(&self.state);
        st.shares += 1;
        st.accounts.push(Arc::downgrade(&account));
        account
    }

    /// Wakes every waiting connection for good: the source is closing.
    pub fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        let all = open_accounts(&st);
        drop(st);
        wake(&all);
    }

    /// Bytes charged and not yet given back.
    pub fn used(&self) -> usize {
        lock(&self.state).used
    }
}

/// The accounts still open. Taken under the lock but woken and dropped
/// after it: dropping the last handle of an account runs its `Drop`, which
/// takes the lock.
fn open_accounts(st: &State) -> Vec<Arc<Account>> {
    st.accounts.iter().filter_map(Weak::upgrade).collect()
}

/// Wakes each account's waiter: they re-check under the lock, so the
/// change made before is seen.
fn wake(accounts: &[Arc<Account>]) {
    for account in accounts {
        account.space.notify_all();
    }
}

impl Account {
    /// Charges `bytes`, waiting for room (or, with `drop_when_full`, giving
    /// up at once) while the budget or this account's share is exhausted.
    pub fn charge(self: &Arc<Self>, bytes: usize, drop_when_full: bool) -> (Grant, Option<Charge>) {
        let budget = &self.budget;
        let mut st = lock(&budget.state);
        loop {
            if st.closed {
                return (Grant::Closed, None);
            }
            let held = self.held.load(Ordering::Acquire);
            let share = budget.capacity / st.shares.max(1);
            // Within its share a connection always gets room, so a slow
            // sender is never starved by a flooder, whatever the total; one
            // holding nothing may always take one read, so that a budget
            // smaller than a read slows streams down but never stalls them.
            let fits = held == 0 || held.saturating_add(bytes) <= share;
            if fits {
                st.used = st.used.saturating_add(bytes);
                self.held.fetch_add(bytes, Ordering::AcqRel);
                let charge = Charge {
                    account: self.clone(),
                    bytes,
                };
                return (Grant::Granted, Some(charge));
            }
            if drop_when_full {
                return (Grant::Full, None);
            }
            self.waiting.store(true, Ordering::Release);
            let since = std::time::Instant::now();
            st = self.space.wait(st).unwrap_or_else(|e| e.into_inner());
            #[cfg(test)]
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.waited_ns.fetch_add(ns, Ordering::Relaxed);
            self.waiting.store(false, Ordering::Release);
        }
    }

    /// The time `charge` waited for room since the last call.
    pub fn take_waited(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.waited_ns.swap(0, Ordering::Relaxed))
    }

    /// Whether the connection is waiting for room (TCP backpressure).
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Bytes this connection holds now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // Every charge holds the account, so nothing is held any more.
        let mut st = lock(&self.budget.state);
        st.shares = st.shares.saturating_sub(1);
        // This one's strong count is 0 already: it goes with the others gone.
        st.accounts.retain(|a| a.strong_count() > 0);
        // Every other share grew.
        let others = open_accounts(&st);
        drop(st);
        wake(&others);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let account = &self.account;
        account.held.fetch_sub(self.bytes, Ordering::AcqRel);
        let mut st = lock(&account.budget.state);
        st.used = st.used.saturating_sub(self.bytes);
        // Under the lock, after `held` went down: a waiter either saw the
        // new `held` or is waiting already, so this wakeup is not lost.
        if account.waiting.load(Ordering::Acquire) {
            account.space.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_connection_holds_at_most_its_share() {
        let b = Budget::new(1000);
        let flood = b.open_account();
        let slow = b.open_account();
        let (g1, c1) = flood.charge(400, true);
        assert_eq!(g1, Grant::Granted);
        // 400 + 200 exceeds the flooder's share of 500.
        assert_eq!(flood.charge(200, true).0, Grant::Full);
        // The slow sender still finds room.
        let (g2, _c2) = slow.charge(450, true);
        assert_eq!(g2, Grant::Granted);
        drop(c1);
        assert_eq!(flood.held(), 0);
        assert_eq!(b.used(), 450);
    }

    #[test]
    fn a_slow_sender_keeps_room_when_a_flooder_took_more_than_the_budget() {
        // A budget smaller than one read: the flooder's first read alone
        // exceeds it.
        let b = Budget::new(1000);
        let flood = b.open_account();
        let slow = b.open_account();
        let (g, _big) = flood.charge(5000, true);
        assert_eq!(g, Grant::Granted);
        assert_eq!(flood.charge(10, true).0, Grant::Full);
        let (g1, _c1) = slow.charge(200, true);
        let (g2, _c2) = slow.charge(200, true);
        assert_eq!((g1, g2), (Grant::Granted, Grant::Granted));
        // Its share (500) is the limit.
        assert_eq!(slow.charge(200, true).0, Grant::Full);
    }

    #[test]
    fn an_empty_account_may_always_charge_one_read() {
        let b = Budget::new(10);
        let a = b.open_account();
        let (g, c) = a.charge(1 << 20, true);
        assert_eq!(g, Grant::Granted);
        assert!(c.is_some());
    }

    #[test]
    fn giving_bytes_back_wakes_only_the_account_they_were_charged_to() {
        // Sixteen connections wait for room (each holds its whole share)
        // while a seventeenth's bytes come and go: none of the sixteen may
        // be woken by those, since none of them can charge any more than
        // before.
        let b = Budget::new(17 * 100);
        let busy = b.open_account();
        let waiters: Vec<_> = (0..16).map(|_| b.open_account()).collect();
        let held: Vec<_> = waiters.iter().map(|a| a.charge(100, false).1).collect();
        let threads: Vec<_> = waiters
            .iter()
            .map(|a| {
                let a = a.clone();
                std::thread::spawn(move || a.charge(10, false).0)
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !waiters.iter().all(|a| a.waiting()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiters never waited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..1000 {
            let (g, c) = busy.charge(100, false);
            assert_eq!(g, Grant::Granted);
            drop(c);
        }
        let woken: u64 = waiters
            .iter()
            .map(|a| a.wakeups.load(Ordering::Relaxed))
            .sum();
        assert_eq!(
            woken, 0,
            "1000 releases of another account woke the waiters {woken} times"
        );
        // Their own bytes coming back does wake them, each once.
        drop(held);
        for t in threads {
            assert_eq!(t.join().unwrap(), Grant::Granted);
        }
        let woken: Vec<u64> = waiters
            .iter()
            .map(|a| a.wakeups.load(Ordering::Relaxed))
            .collect();
        assert!(woken.iter().all(|&w| w >= 1), "{woken:?}");
    }

    #[test]
    fn a_waiting_connection_resumes_on_release_and_ends_on_close() {
        let b = Budget::new(100);
        let a = b.open_account();
        let (_, held) = a.charge(100, false);
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.charge(50, false).0)
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert_eq!(waiter.join().unwrap(), Grant::Granted);

        let (_, _held) = a.charge(100, false);
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.charge(80, false).0)
        };
        std::thread::sleep(Duration::from_millis(50));
        b.close();
        assert_eq!(waiter.join().unwrap(), Grant::Closed);
    }
}
