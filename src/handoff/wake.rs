//! The selectable fd Zeek polls: the hand-off makes it readable when a consumer
//! that found nothing has something to take (packets, or the end of the
//! stream), and clears it once the consumer takes a batch.
//!
//! A non-blocking Unix datagram pair: std-only and portable to every platform
//! Zeek runs on. `signal` queues a byte; `clear` drains them. `wait`, for
//! consumers outside Zeek (benchmarks, tests), blocks in poll(2) as Zeek does.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug)]
pub struct Wake {
    rx: UnixDatagram,
    tx: UnixDatagram,
}

impl Wake {
    pub fn new() -> io::Result<Wake> {
        let (rx, tx) = UnixDatagram::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Wake { rx, tx })
    }

    /// Makes the fd readable. A full socket buffer means it already is.
    pub fn signal(&self) {
        let _ = self.tx.send(&[1]);
    }

    /// Makes the fd unreadable until the next `signal`.
    pub fn clear(&self) {
        let mut sink = [0u8; 64];
        while self.rx.recv(&mut sink).is_ok() {}
    }

    pub fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Blocks until the fd is readable or `limit` has passed; whether it is
    /// readable. Does not change what it waits for.
    pub fn wait(&self, limit: Duration) -> bool {
        crate::net::poll::wait(&mut [crate::net::poll::fd(self.fd(), libc::POLLIN)], limit)
            .unwrap_or(false)
    }

    /// Whether the fd is readable now (for tests): takes one datagram and,
    /// if there was one, puts it back.
    #[cfg(test)]
    pub(crate) fn is_signalled(&self) -> bool {
        let mut probe = [0u8; 1];
        let readable = self.rx.recv(&mut probe).is_ok();
        if readable {
            self.signal();
        }
        readable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_and_clear() {
        let w = Wake::new().unwrap();
        assert!(!w.is_signalled());
        w.signal();
        w.signal();
        assert!(w.is_signalled());
        w.clear();
        assert!(!w.is_signalled());
    }

    #[test]
    fn wait_returns_once_signalled_and_leaves_the_signal() {
        let w = Wake::new().unwrap();
        assert!(!w.wait(Duration::from_millis(20)), "nothing signalled");
        let waiter = {
            let fd = w.tx.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                fd.send(&[1]).unwrap();
            })
        };
        assert!(w.wait(Duration::from_secs(10)));
        waiter.join().unwrap();
        assert!(w.is_signalled(), "wait must not consume the signal");
    }

    #[test]
    fn many_signals_never_block() {
        let w = Wake::new().unwrap();
        for _ in 0..100_000 {
            w.signal();
        }
        assert!(w.is_signalled());
        w.clear();
        assert!(!w.is_signalled());
    }
}
