//! One stream, from its socket to its batches of parsed records:
//! [`dialler`] (a connect endpoint's life: connect through [`crate::net`],
//! read, reconnect with backoff) or [`listener`] (a listen endpoint: accept
//! and admit senders) → [`reader`] (reads one connection's transport in
//! large chunks, into buffers the source's connections share:
//! [`crate::shared::read_buffers`]) → its own [`parse`]r (pcap or
//! pcapng, with [`linktype`]) → [`share`] (`?share=I/N`: this worker's
//! packets only) → one batch per read, for the merge or the hand-off.

pub(crate) mod dialler;
pub mod linktype;
pub(crate) mod listener;
pub mod parse;
pub(crate) mod reader;
pub mod share;
