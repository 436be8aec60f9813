//! The network layer that the Zeek plugin's core and pcapovertcp-serve
//! share, so that a fix to one lands in both:
//! [`connect`] (resolve, connect to each address in turn with a deadline
//! and a self-connect guard, set the socket up: keepalive,
//! TCP_USER_TIMEOUT, the receive tick) → [`tls`] (the certificates, the
//! [`tls::Transport`] a connection is read and written through, and the
//! one handshake with an absolute deadline) → [`backoff`] (the pause
//! between attempts, and an outage reported once when it starts and once
//! when it ends) → [`compress`] (zstd inside the transport, for the `+zstd`
//! schemes).

pub mod backoff;
pub mod compress;
pub mod connect;
pub(crate) mod poll;
pub mod tls;
