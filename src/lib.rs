//! zeek-pcapovertcp: a Zeek packet source that reads PCAP-over-IP.
//!
//! The folders follow the data path, in order:
//!
//! 1. [`endpoint`]: the interface name: where to connect or listen.
//! 2. [`net`]: the network layer shared with pcapovertcp-serve:
//!    [`net::connect`] (one connect attempt: resolve, connect with a
//!    deadline), [`net::tls`] (the transport and the TLS handshake),
//!    [`net::backoff`] (the pause between attempts, an outage reported
//!    once), and the core's one poll(2) call.
//! 3. `stream`: one stream, from its socket to batches of records: the
//!    `dialler` (a connect endpoint's life: connect, read, reconnect) or
//!    the `listener` (accept and admit senders) runs a `reader` per
//!    connection (the socket read in large chunks), which feeds its own
//!    [`parse`]r (pcap or pcapng, with [`linktype`]) and keeps this
//!    worker's [`share`] of the packets; each read becomes one batch, sent
//!    to the connection's outlet.
//! 4. `merge`: several connections in timestamp order, each on its lane,
//!    within one budget (`buffer_size`); skipped with one connection.
//! 5. `handoff`: the bounded queue of batches that Zeek's main loop takes
//!    packets from without copying, and the fd that wakes an idle Zeek.
//! 6. [`Source`] (`source.rs`): what Zeek's main loop (or the broker)
//!    calls: start, wait for the header, take packets, close.
//! 7. [`ffi`]: the one `cxx` bridge the C++ shim uses (the default feature
//!    `zeek`, which the broker turns off).
//!
//! Beside them, `shared`: what the threads and the consumer share:
//! control (settings, the stop signal, the open state, the threads),
//! [`counters`], messages for the operator with their [`facts`] for
//! Zeek's events, the logger that routes a thread's messages to its
//! source, [`config`], [`setting`] names, [`error`]s, named threads,
//! locks that survive a panic, [`utc`] dates.
//!
//! Words for the end of things: a producer that is done *ends* (the
//! hand-off's `end`, [`Next::Ended`]); the consumer *closes*
//! ([`Source::close`]), which *stops* every thread; a peer that hangs up
//! *closes* its connection; a listener *evicts* a sender to make room.
//!
//! Only what serve/, the benches, fuzz/ and the tests use is public, at
//! the crate root below; the layers themselves are private.

pub mod endpoint;
#[cfg(feature = "zeek")]
pub mod ffi;
mod handoff;
mod merge;
pub mod net;
mod shared;
mod source;
mod stream;

// The API, at the crate root: what Zeek's shim (through `ffi`), the
// broker (serve/), the benches, fuzz/ and the integration tests use. The
// rest (the hand-off, the merge and its budget, control, messages,
// logger, threads) is the core's own.
/// The TLS of `tls://` and `tls-listen://`.
pub use net::tls;
pub use shared::config::{Config, Keepalive};
pub use shared::error::Error;
pub use shared::{config, counters, error, facts, setting, utc};
pub use source::{Next, Opening, Packet, Source, Stats};
pub use stream::{linktype, parse, share};
