//! How the benchmark consumers wait when the source is empty: on its
//! selectable fd, as Zeek's I/O loop does, rather than spinning on a core
//! the reader thread and the sender need.

use std::os::fd::RawFd;

pub fn readable(fd: RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd that outlives the call. A timeout
    // (100 ms) or an error just means the caller asks the source again.
    unsafe { libc::poll(&mut p, 1, 100) };
}
