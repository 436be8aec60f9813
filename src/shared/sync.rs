//! Locking that survives a panic elsewhere.
//!
//! Every state behind a lock here is updated by single assignments or
//! pushes, so a panic on another thread cannot leave it half-changed; a
//! poisoned lock is used as is rather than turned into a second panic,
//! which in Zeek's process would cross the FFI boundary.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
