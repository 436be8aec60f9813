//! The core's one poll(2) call: waits, at most a given time, until one of
//! some fds is ready (readable, writable). Shared by the connect in
//! progress, the listening sockets and the wake fd.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// One fd and what to wait for on it (`libc::POLLIN`, `libc::POLLOUT`).
pub(crate) fn fd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `limit` has passed; whether one
/// is. A signal that interrupts the wait counts as nothing ready.
pub(crate) fn wait(fds: &mut [libc::pollfd], limit: Duration) -> io::Result<bool> {
    let ms = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a valid array of pollfd of the given length that
    // outlives the call; poll only writes their `revents`.
    match unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) } {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}
