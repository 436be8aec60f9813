//! Who may hold a place at a listening source, shared by all its listen
//! endpoints.
//!
//! A connection is *pending* from accept until its whole stream header has
//! arrived (after its TLS handshake), then *admitted*: only then does it
//! get its lane of the merge and its entry among the senders. The two
//! pools are bounded apart, so that connections that never send a header
//! can never take the place of a sender:
//!
//! - at most [`Admission::pending_max`] pending connections
//!   (`max(64, 2 × max_senders)`); when a new one arrives with the pool
//!   full, the one pending longest is closed to make room (it has had the
//!   most time to send its header);
//! - at most `max_senders` admitted senders, over every listen endpoint of
//!   the source; when a new sender's header completes with all of them
//!   taken, the admitted sender that has sent no packet for longest is
//!   closed in its favour if it has been silent for at least
//!   [`Admission::silent_max`] (`header_timeout`, or 10 s when that is 0);
//!   otherwise the newcomer is refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::shared::config::Config;
use crate::shared::sync::lock;
use crate::stream::reader::Heard;

/// The pending pool holds at least this many connections.
pub const PENDING_MIN: usize = 64;
/// How long an admitted sender must have been silent to be closed for a
/// newcomer when `header_timeout` is 0 (no limit).
pub const SILENT_DEFAULT: Duration = Duration::from_secs(10);

pub(crate) struct Admission {
    max_senders: usize,
    pending_max: usize,
    silent_max: Duration,
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    pending: Vec<Entry>,
    admitted: Vec<Entry>,
}

struct Entry {
    id: u64,
    /// To close it from another thread (shutdown wakes its reader).
    socket: Socket,
    since: Instant,
    /// Set once admitted: when it last handed packets on.
    heard: Option<Arc<Heard>>,
    evicted: Arc<Mutex<Option<Evicted>>>,
}

/// Why a connection was evicted: closed to make room for another.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Evicted {
    /// Still pending after this long, with the pending pool full.
    Pending { after: Duration, pool: usize },
    /// Admitted, and silent for this long, when a newcomer had a header.
    Silent { for_: Duration, max_senders: usize },
}

/// A full listener refused a sender whose header was complete.
#[derive(Debug)]
pub(crate) struct Full {
    pub max_senders: usize,
    pub silent_max: Duration,
}

/// A connection's place in one of the pools; given back when dropped.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    evicted: Arc<Mutex<Option<Evicted>>>,
}

impl Admission {
    pub fn new(config: &Config) -> Arc<Admission> {
        Arc::new(Admission {
            max_senders: config.max_senders,
            pending_max: PENDING_MIN.max(config.max_senders.saturating_mul(2)),
            silent_max: config.header_timeout.unwrap_or(SILENT_DEFAULT),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(0),
        })
    }

    /// How many connections may wait for admission at once.
    #[cfg(test)]
    pub fn pending_max(&self) -> usize {
        self.pending_max
    }

    /// A newly accepted connection joins the pending pool; with the pool
    /// full, the connection pending longest is closed to make room.
    pub fn enter(self: &Arc<Self>, socket: Socket) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Mutex::new(None));
        let mut st = lock(&self.state);
        if st.pending.len() >= self.pending_max {
            // The oldest is first: entries are pushed in accept order.
            let oldest = st.pending.remove(0);
            evict(
                &oldest,
                Evicted::Pending {
                    after: oldest.since.elapsed(),
                    pool: self.pending_max,
                },
            );
        }
        st.pending.push(Entry {
            id,
            socket,
            since: Instant::now(),
            heard: None,
            evicted: evicted.clone(),
        });
        Ticket {
            admission: self.clone(),
            id,
            evicted,
        }
    }

    /// Admits the pending connection `ticket` (its header is complete),
    /// closing the admitted sender silent longest if every place is taken
    /// and it has been silent for at least `silent_max`. Err when the
    /// sender is refused, or was closed meanwhile.
    pub fn admit(&self, ticket: &Ticket, heard: Arc<Heard>) -> Result<(), Full> {
        let full = || Full {
            max_senders: self.max_senders,
            silent_max: self.silent_max,
        };
        let mut st = lock(&self.state);
        let Some(at) = st.pending.iter().position(|e| e.id == ticket.id) else {
            return Err(full());
        };
        if st.admitted.len() >= self.max_senders {
            let quietest = st
                .admitted
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some((i, e.heard.as_ref()?.silent_for())))
                .max_by_key(|(_, silent)| *silent);
            match quietest {
                Some((i, silent)) if silent >= self.silent_max => {
                    let evicted = st.admitted.remove(i);
                    evict(
                        &evicted,
                        Evicted::Silent {
                            for_: silent,
                            max_senders: self.max_senders,
                        },
                    );
                }
                _ => return Err(full()),
            }
        }
        let mut entry = st.pending.remove(at);
        entry.heard = Some(heard);
        st.admitted.push(entry);
        Ok(())
    }

    /// Pending and admitted connections now.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.pending.len(), st.admitted.len())
    }
}

fn evict(entry: &Entry, why: Evicted) {
    *lock(&entry.evicted) = Some(why);
    let _ = entry.socket.shutdown(std::net::Shutdown::Both);
}

impl Ticket {
    /// Why the connection was evicted (closed to make room), if it was.
    pub fn evicted(&self) -> Option<Evicted> {
        lock(&self.evicted).clone()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = lock(&self.admission.state);
        st.pending.retain(|e| e.id != self.id);
        st.admitted.retain(|e| e.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn socket(l: &TcpListener) -> (TcpStream, Socket) {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, Socket::from(s))
    }

    fn admission(max_senders: usize, silent: Duration) -> Arc<Admission> {
        Admission::new(&Config {
            max_senders,
            header_timeout: Some(silent),
            ..Config::default()
        })
    }

    #[test]
    fn a_full_pending_pool_closes_its_oldest_and_never_grows() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = admission(2, Duration::from_secs(10));
        assert_eq!(a.pending_max(), PENDING_MIN);
        let mut tickets = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..PENDING_MIN + 3 {
            let (c, s) = socket(&l);
            peers.push(c);
            tickets.push(a.enter(s));
        }
        assert_eq!(a.counts(), (PENDING_MIN, 0));
        for t in &tickets[..3] {
            assert!(matches!(
                t.evicted(),
                Some(Evicted::Pending { pool: 64, .. })
            ));
        }
        assert_eq!(tickets[3].evicted(), None);
        drop(tickets);
        assert_eq!(a.counts(), (0, 0));
    }

    #[test]
    fn a_full_listener_closes_a_sender_silent_long_enough_and_else_refuses() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = admission(1, Duration::from_millis(100));
        let (_c1, s1) = socket(&l);
        let (_c2, s2) = socket(&l);
        let (_c3, s3) = socket(&l);
        let first = a.enter(s1);
        a.admit(&first, Arc::new(Heard::default())).unwrap();
        // The first has been silent less than 100 ms: refused.
        let second = a.enter(s2);
        assert!(a.admit(&second, Arc::new(Heard::default())).is_err());
        std::thread::sleep(Duration::from_millis(120));
        let third = a.enter(s3);
        a.admit(&third, Arc::new(Heard::default())).unwrap();
        assert!(matches!(
            first.evicted(),
            Some(Evicted::Silent { max_senders: 1, .. })
        ));
        assert_eq!(a.counts(), (1, 1));
    }
}
