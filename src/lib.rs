//! zeek-pcapovertcp: a Zeek packet source that reads PCAP-over-IP.
//!
//! The data path, in order:
//! [`endpoint`] (the interface name: where to connect or listen) →
//! [`dial`] (one connect endpoint's life: reconnects with
//! [`net::backoff`]) or [`listen`] (accepting senders) → [`net`] (the
//! network layer shared with pcapovertcp-serve: [`net::connect`] for
//! resolving and connecting, [`net::tls`] for the transport and the TLS
//! handshake) → [`connection`] (one stream: transport → its own
//! [`parse`]r, with [`linktype`]) → [`merge`] (several connections in
//! timestamp order, within one [`budget`]; skipped when there is one
//! connection) → [`hand-off`] (the zero-copy hand-over, with [`wake`] for
//! Zeek's poll loop) → [`source`] (what Zeek's main loop calls) → [`ffi`]
//! (the one `cxx` bridge the C++ shim uses; the default feature `zeek`,
//! which the broker turns off).
//!
//! Beside it: [`control`] (what the threads and the consumer share),
//! [`messages`] (each source's message sink, drained by its front end,
//! with its [`facts`] for the front end's scripts),
//! [`logger`] (a thread's messages to its source's sink; the `log` logger
//! only the Zeek plugin installs), [`setting`] (settings named in each
//! front end's words), [`counters`], [`config`], [`threads`].

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
