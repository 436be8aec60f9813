//! What the source's threads and its consumer share, beside the data path:
//! [`control`] (settings, the stop signal, the open state, the threads),
//! [`counters`] (per sender), [`messages`] (for the operator) with their
//! [`facts`] (for Zeek's events) and the [`logger`] that routes a thread's
//! messages to its source; the settings ([`config`], named by [`setting`]
//! in each front end's words) and [`error`]s; and the plumbing: named
//! [`threads`], locks that survive a panic ([`sync`]), UTC dates ([`utc`]).

pub mod config;
pub(crate) mod control;
pub mod counters;
pub mod error;
pub mod facts;
pub mod logger;
pub mod messages;
pub(crate) mod read_buffers;
pub mod setting;
pub(crate) mod sync;
pub(crate) mod threads;
pub mod utc;
