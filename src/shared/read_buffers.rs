//! The read buffers of a source's connections, reused instead of freed and
//! allocated again.
//!
//! Packets reach Zeek as chunks split off a read buffer, so a full buffer
//! cannot be taken back while Zeek still holds some of them: the reader
//! moves on to another. A buffer allocated afresh costs the kernel a page
//! fault and a zeroed page for every 4 KiB read into it, and the allocator
//! gives freed buffers back to the kernel. When each connection kept only
//! two buffers for reuse and more than that waited for Zeek, that was most
//! of the readers' extra CPU with many senders (`perf record` of
//! bench/run.py's merge section): Zeek's page faults were 83,000 with 16
//! interleaved senders against 47,000 with one (docs/performance.md).
//!
//! So the buffers a connection moves away from are parked here, for any
//! of the source's connections to take back once Zeek has released every
//! packet in them: as many as can hold packets not yet released
//! (`buffer_size`'s worth, and two for each connection: the one it fills
//! and one Zeek is part way through), whichever senders they came from.
//! Too few, and every buffer beyond them is freed and allocated again.
//!
//! What is parked is freed once it has been free for [`KEEP`]: a source
//! that goes quiet gives its memory back. Parking never raises the peak:
//! a buffer is parked only after it was in use.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::shared::sync::lock;

/// A read buffer's size (reads are at most this large), with few
/// connections.
pub const BUFFER: usize = 1 << 20;
/// The smallest, with many: a quarter of a connection's share of
/// `buffer_size`, so that a share spans several buffers, and fewer bytes
/// are spread over buffers that connections are part way through.
pub const SMALLEST: usize = 256 << 10;
/// Buffers parked besides `buffer_size`'s worth and two per connection.
pub const EXTRA: usize = 16;
/// A parked buffer that has been free this long is let go.
pub const KEEP: Duration = Duration::from_secs(1);

pub struct ReadBuffers {
    /// Oldest first: each empty, its allocation shared with chunks Zeek
    /// may still hold.
    parked: Mutex<VecDeque<Parked>>,
    buffer_size: usize,
    /// Connections reading now (between `first` and `last`).
    connections: AtomicUsize,
    /// Buffers allocated (for tests and the mutation check).
    #[cfg(test)]
    pub allocated: AtomicUsize,
}

struct Parked {
    buf: BytesMut,
    /// When it was first found free (every chunk cut from it dropped).
    free_since: Option<Instant>,
}

impl ReadBuffers {
    /// Parks at most `buffer_size`'s worth of buffers, two for each
    /// connection, and [`EXTRA`].
    pub fn new(buffer_size: usize) -> ReadBuffers {
        ReadBuffers {
            parked: Mutex::new(VecDeque::new()),
            buffer_size,
            connections: AtomicUsize::new(0),
            #[cfg(test)]
            allocated: Default::default(),
        }
    }

    /// Makes room for a read of at least `min_read` bytes after `buf`'s
    /// contents (an unfinished record), in a buffer at least the size new
    /// buffers have now: `buf` itself when Zeek has released what was cut
    /// from it, else a parked one Zeek has released (the contents copied
    /// there), else a new one. `buf` is parked when it is replaced.
    pub fn make_room(&self, buf: &mut BytesMut, min_read: usize) {
        if buf.capacity() - buf.len() >= min_read {
            return;
        }
        let want = self.size().max(buf.len() + min_read);
        if buf.try_reclaim(want - buf.len()) {
            return;
        }
        let fresh = self.take(want);
        let old = std::mem::replace(buf, fresh);
        buf.extend_from_slice(&old);
        self.park(old);
    }

    /// Parks a buffer moved away from (its contents are dropped), or a
    /// connection's last.
    fn park(&self, mut buf: BytesMut) {
        buf.clear();
        let mut parked = lock(&self.parked);
        parked.push_back(Parked {
            buf,
            free_since: None,
        });
        let most = self.most();
        while parked.len() > most {
            // The oldest goes: its memory is freed once Zeek releases it.
            parked.pop_front();
        }
    }

    /// A connection's first buffer; it counts as reading until `last`.
    pub fn first(&self) -> BytesMut {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.take(self.size())
    }

    /// How many buffers may be parked: `buffer_size`'s worth, two for each
    /// connection, and [`EXTRA`].
    fn most(&self) -> usize {
        let connections = self.connections.load(Ordering::Relaxed);
        self.buffer_size / self.size() + 2 * connections + EXTRA
    }

    /// The size of a new buffer: [`BUFFER`], or with many connections a
    /// quarter of each one's share of `buffer_size`, at least [`SMALLEST`].
    fn size(&self) -> usize {
        let connections = self.connections.load(Ordering::Relaxed).max(1);
        (self.buffer_size / connections / 4).clamp(SMALLEST, BUFFER)
    }

    /// A connection's last buffer, parked as it ends.
    pub fn last(&self, buf: BytesMut) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.park(buf);
    }

    /// A buffer of at least `want` bytes: a parked one Zeek has released,
    /// else a new one. A connection's first buffer comes from here too.
    fn take(&self, want: usize) -> BytesMut {
        let reused = {
            let mut parked = lock(&self.parked);
            Self::let_go(&mut parked, Instant::now());
            // An empty parked view is the end of its allocation; reclaiming
            // takes the whole allocation back, if nothing else holds it.
            let found = parked.iter_mut().position(|p| p.buf.try_reclaim(want));
            found.and_then(|i| parked.remove(i))
        };
        match reused {
            Some(p) => p.buf,
            None => {
                #[cfg(test)]
                self.allocated.fetch_add(1, Ordering::Relaxed);
                BytesMut::with_capacity(want)
            }
        }
    }

    /// A connection found its socket quiet: lets go of the buffers that
    /// have been free for [`KEEP`].
    pub fn quiet(&self) {
        self.quiet_at(Instant::now());
    }

    /// Lets go of the parked buffers free since `now - KEEP`; notes when
    /// the others were first found free. One look at each: a few atomic
    /// loads, once per buffer filled or quiet tick.
    fn let_go(parked: &mut VecDeque<Parked>, now: Instant) {
        parked.retain_mut(|p| {
            if p.free_since.is_none() && p.buf.try_reclaim(1) {
                p.free_since = Some(now);
            }
            p.free_since
                .is_none_or(|since| now.saturating_duration_since(since) < KEEP)
        });
    }

    /// Buffers parked now.
    #[cfg(test)]
    pub fn parked(&self) -> usize {
        lock(&self.parked).len()
    }

    /// As `quiet`, at a given instant (tests pass one past [`KEEP`]).
    fn quiet_at(&self, now: Instant) {
        Self::let_go(&mut lock(&self.parked), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn allocated(pool: &ReadBuffers) -> usize {
        pool.allocated.load(Ordering::Relaxed)
    }

    #[test]
    fn a_connection_reads_into_the_same_buffers_while_zeek_holds_many() {
        let pool = ReadBuffers::new(128 << 20);
        // 1 GiB in reads of 60 KiB while Zeek holds 64 MiB of them: the
        // buffers those lie in, the one being filled, and one just parked.
        stream(&pool, 1, 1 << 30, 60 * 1024, 64 << 20);
        let n = allocated(&pool);
        assert!(n <= 64 + 3, "{n} buffers allocated for 1 GiB");
    }

    /// `connections` reading in turn, `read` bytes each, each read held
    /// "by Zeek" until `held` bytes are queued behind it (as the merge
    /// holds interleaved senders' reads); `total` bytes in all.
    fn stream(pool: &ReadBuffers, connections: usize, total: usize, read: usize, held: usize) {
        let mut bufs: Vec<BytesMut> = (0..connections).map(|_| pool.first()).collect();
        let mut queue: VecDeque<bytes::Bytes> = VecDeque::new();
        let (mut queued, mut done) = (0, 0);
        while done < total {
            for buf in &mut bufs {
                pool.make_room(buf, 64 * 1024);
                let n = read.min(buf.capacity() - buf.len());
                buf.extend_from_slice(&vec![7u8; n]);
                done += n;
                let chunk = buf.split().freeze();
                queued += chunk.len();
                queue.push_back(chunk);
                while queued > held {
                    queued -= queue.pop_front().map_or(0, |c| c.len());
                }
            }
        }
        for buf in bufs {
            pool.last(buf);
        }
    }

    #[test]
    fn interleaved_connections_reuse_the_buffers_zeek_released() {
        // 64 connections and 64 MiB of buffer_size: buffers of 256 KiB (a
        // quarter of a 1 MiB share). Zeek holds the budget and one read
        // over it for each connection (as the budget allows): 320 buffers'
        // worth, and each connection's own two. Parking fewer (without the
        // two per connection: 2,120 allocated) frees and allocates buffers
        // all along.
        let pool = ReadBuffers::new(64 << 20);
        stream(&pool, 64, 512 << 20, 60 * 1024, 80 << 20);
        let n = allocated(&pool);
        assert!(
            n <= 320 + 2 * 64 + EXTRA,
            "{n} buffers allocated for 512 MiB"
        );
    }

    #[test]
    fn with_many_connections_buffers_are_smaller() {
        let pool = ReadBuffers::new(128 << 20);
        assert_eq!(pool.first().capacity(), BUFFER);
        let many: Vec<_> = (1..64).map(|_| pool.first()).collect();
        // The 64th: a quarter of its 2 MiB share.
        assert_eq!(many.last().map(BytesMut::capacity), Some(512 << 10));
        let more: Vec<_> = (64..1000).map(|_| pool.first()).collect();
        assert_eq!(more.last().map(BytesMut::capacity), Some(SMALLEST));
    }

    #[test]
    fn a_new_connection_reuses_the_buffers_others_left() {
        let pool = ReadBuffers::new(128 << 20);
        stream(&pool, 1, 256 << 20, 60 * 1024, 16 << 20);
        let first = allocated(&pool);
        for _ in 0..4 {
            stream(&pool, 1, 256 << 20, 60 * 1024, 16 << 20);
        }
        assert_eq!(allocated(&pool), first);
    }

    #[test]
    fn parking_is_bounded_by_buffer_size() {
        let pool = ReadBuffers::new(8 << 20);
        // Zeek holds more than buffer_size (as it may, briefly): the
        // oldest parked buffers go.
        stream(&pool, 1, 256 << 20, 60 * 1024, 64 << 20);
        assert_eq!(pool.parked(), 8 + EXTRA);
    }

    #[test]
    fn free_buffers_are_let_go_after_keep_held_ones_are_not() {
        let pool = ReadBuffers::new(128 << 20);
        let mut buf = pool.take(BUFFER);
        let mut held = Vec::new();
        for _ in 0..4 {
            pool.make_room(&mut buf, 64 * 1024);
            buf.extend_from_slice(&vec![1u8; BUFFER]);
            held.push(buf.split().freeze());
        }
        // Three parked; Zeek releases the first two.
        assert_eq!(pool.parked(), 3);
        held.drain(..2);
        let now = Instant::now();
        pool.quiet_at(now); // found free now
        assert_eq!(pool.parked(), 3);
        pool.quiet_at(now + KEEP);
        assert_eq!(pool.parked(), 1, "the buffer Zeek holds stays");
        drop(held);
        pool.quiet_at(now + KEEP * 2);
        pool.quiet_at(now + KEEP * 4);
        assert_eq!(pool.parked(), 0);
    }

    #[test]
    fn an_unfinished_record_moves_with_the_buffer() {
        let pool = ReadBuffers::new(0);
        let mut buf = BytesMut::with_capacity(100);
        buf.extend_from_slice(&[1; 90]);
        let held = buf.split_to(80).freeze();
        pool.make_room(&mut buf, 64);
        assert_eq!(&buf[..], &[1; 10]);
        assert!(buf.capacity() - buf.len() >= 64);
        drop(held);
    }
}
