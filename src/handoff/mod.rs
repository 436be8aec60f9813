//! The hand-off to Zeek's main loop: [`queue`] (the bounded queue of
//! batches the reader or the merge pushes and the consumer pops, without
//! copying a packet) and [`wake`] (the fd Zeek polls, readable when an
//! idle consumer has something to take).

pub mod queue;
pub mod wake;
