//! The core's threads: named, and with signals blocked as Zeek's own threads
//! have them (threading/BasicThread.cc), so that SIGTERM, SIGINT and the
//! rest are always delivered to Zeek's main thread, whose handlers expect
//! them there.

use std::io;
use std::thread::JoinHandle;

/// Spawns `f` on a thread named `name` that starts with every signal but
/// the synchronous ones (FPE, ILL, SEGV, BUS) blocked.
pub fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    // The mask is inherited at creation: block here, spawn, restore. So the
    // new thread never runs a moment with signals open.
    // SAFETY: sigset_t is plain data initialised by sigfillset/sigdelset;
    // pthread_sigmask only reads `block` and writes `previous`.
    let previous = unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut block);
        for sig in [libc::SIGFPE, libc::SIGILL, libc::SIGSEGV, libc::SIGBUS] {
            libc::sigdelset(&mut block, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
        previous
    };
    let spawned = std::thread::Builder::new().name(name).spawn(f);
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
    }
    spawned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(sig: libc::c_int) -> bool {
        // SAFETY: reads this thread's mask into a zeroed sigset_t.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
            libc::sigismember(&set, sig) == 1
        }
    }

    #[test]
    fn spawned_threads_block_signals_and_the_caller_keeps_its_mask() {
        let before = blocked(libc::SIGTERM);
        let inside = spawn("t".into(), || {
            (
                blocked(libc::SIGTERM),
                blocked(libc::SIGINT),
                blocked(libc::SIGSEGV),
            )
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(inside, (true, true, false));
        assert_eq!(blocked(libc::SIGTERM), before);
    }
}
