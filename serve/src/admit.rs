//! Admission of listening clients: --allow (the addresses that may
//! connect) and --max-clients (how many are served at once; over TLS, as
//! many more may be in their handshake, so that peers that never finish
//! one cannot lock out the clients that did).
//!
//! A client refused is closed at once, with a rate-limited line
//! ([`crate::client_log`]). A slot is held by its client's thread and given
//! back when the thread ends (its [`Slot`] is dropped).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ipnet::IpNet;

/// A bounded number of places.
pub struct Slots {
    used: AtomicUsize,
    max: usize,
}

/// One place of a [`Slots`], given back when dropped.
pub struct Slot(Arc<Slots>);

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// A place, unless all are taken.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who may connect, and how many at once.
pub struct Admission {
    /// --allow; empty: every address.
    allow: Vec<IpNet>,
    /// Clients served (over TLS: with their handshake done).
    pub clients: Arc<Slots>,
    /// Over TLS: connections in their handshake.
    pub handshakes: Option<Arc<Slots>>,
}

impl Admission {
    pub fn new(allow: Vec<IpNet>, max_clients: usize, tls: bool) -> Admission {
        Admission {
            allow,
            clients: Slots::new(max_clients),
            handshakes: tls.then(|| Slots::new(max_clients)),
        }
    }

    /// Whether `ip` may connect (an IPv4 address mapped into IPv6, as a
    /// dual-stack socket reports it, is taken as the IPv4 address).
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// The place a new connection takes: a handshake's over TLS, else a
    /// client's. Err: why it is refused.
    pub fn arrive(&self) -> Result<Slot, String> {
        match &self.handshakes {
            Some(h) => h.take().ok_or_else(|| {
                format!(
                    "{} TLS handshakes are already under way (as many as --max-clients)",
                    h.max()
                )
            }),
            None => self.client(),
        }
    }

    /// A served client's place (over TLS, once its handshake is done).
    pub fn client(&self) -> Result<Slot, String> {
        self.clients.take().ok_or_else(|| {
            format!(
                "{} clients are already connected (--max-clients)",
                self.clients.max()
            )
        })
    }
}

/// An --allow value: a subnet (192.0.2.0/24, 2001:db8::/32) or one address.
pub fn parse_subnet(v: &str) -> Option<IpNet> {
    v.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let s = Slots::new(2);
        let a = s.take().unwrap();
        let _b = s.take().unwrap();
        assert!(s.take().is_none());
        drop(a);
        assert!(s.take().is_some());
    }

    #[test]
    fn allow_takes_subnets_addresses_and_mapped_ipv4() {
        let a = Admission::new(
            vec![
                parse_subnet("192.0.2.0/24").unwrap(),
                parse_subnet("::1").unwrap(),
            ],
            1,
            false,
        );
        assert!(a.allowed("192.0.2.7".parse().unwrap()));
        assert!(a.allowed("::ffff:192.0.2.7".parse().unwrap()));
        assert!(a.allowed("::1".parse().unwrap()));
        assert!(!a.allowed("127.0.0.1".parse().unwrap()));
        assert!(Admission::new(Vec::new(), 1, false).allowed("10.0.0.1".parse().unwrap()));
        assert!(parse_subnet("10.0.0.0/33").is_none());
        assert!(parse_subnet("host").is_none());
    }
}
