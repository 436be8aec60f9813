//! zeek-pcapovertcp: a Zeek packet source that reads PCAP-over-IP.
//!
//! The data path, in order:
//! [`endpoint`] (where to connect) → [`connect`] (resolve, connect, socket
//! options) → [`reader`] (the thread that owns the socket) → [`parse`]
//! (pcap/pcapng records out of a byte stream, with [`linktype`] for link
//! types) → [`ring`] (the bounded, zero-copy hand-over, with [`wake`] for
//! Zeek's poll loop) → [`source`] (what Zeek's main loop calls) → [`ffi`]
//! (the one `cxx` bridge the C++ shim uses).
//!
//! Beside it: [`control`] (what the reader and the consumer share),
//! [`messages`] and [`logger`] (the operator's messages, per source),
//! [`counters`], [`config`], [`threads`].

pub mod config;
mod connect;
mod control;
pub mod counters;
pub mod endpoint;
pub mod error;
pub mod ffi;
pub mod linktype;
pub mod logger;
pub mod messages;
pub mod parse;
mod reader;
pub mod ring;
pub mod source;
mod sync;
mod threads;
pub mod wake;

pub use config::{Config, Keepalive};
pub use error::Error;
pub use source::{Next, Opening, Packet, Source, Stats};
