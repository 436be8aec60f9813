//! A connection's read buffers, reused instead of freed and allocated again.
//!
//! Packets reach Zeek as chunks split off the read buffer, so a full buffer
//! cannot be taken back while Zeek still holds some of them: the reader
//! moves on to another. Allocating that one afresh cost the reader a page
//! fault and a zeroed page for every 4 KiB it read (the allocator gives
//! the freed buffer's pages back to the kernel): with 64 senders, a third
//! of the readers' time (`perf record` of bench/run.py's merge section).
//! Instead a connection keeps the buffers it moved away from, up to
//! [`SPARES`], and takes one back as soon as Zeek has released every packet
//! in it. A connection that has gone quiet for a tick lets its spares go,
//! so an idle connection holds one buffer.

use bytes::BytesMut;

/// Buffers a streaming connection keeps besides the one it reads into.
/// Zeek holds at most the connection's share of `buffer_size` (and one
/// read), so a few suffice to find one released.
pub const SPARES: usize = 2;

#[derive(Default)]
pub struct SpareBuffers {
    /// Buffers moved away from, oldest first; each empty, its allocation
    /// shared with chunks that Zeek may still hold.
    spares: Vec<BytesMut>,
    /// Buffers allocated (for tests and the mutation check).
    #[cfg(test)]
    pub allocated: usize,
}

impl SpareBuffers {
    /// Makes room for a read of at least `min_read` bytes after `buf`'s
    /// contents (an unfinished record), in a buffer of at least `size`:
    /// `buf` itself when Zeek has released what was cut from it, else a
    /// spare it has released (the contents copied there), else a new one.
    pub fn make_room(&mut self, buf: &mut BytesMut, size: usize, min_read: usize) {
        if buf.capacity() - buf.len() >= min_read {
            return;
        }
        let want = size.max(buf.len() + min_read);
        if buf.try_reclaim(want - buf.len()) {
            return;
        }
        // An empty spare's view is the end of its allocation; reclaiming
        // takes the whole allocation back, if nothing else holds it.
        let fresh = match self.spares.iter_mut().position(|s| s.try_reclaim(want)) {
            Some(i) => self.spares.remove(i),
            None => {
                #[cfg(test)]
                {
                    self.allocated += 1;
                }
                BytesMut::with_capacity(want)
            }
        };
        let mut old = std::mem::replace(buf, fresh);
        buf.extend_from_slice(&old);
        old.clear();
        if self.spares.len() == SPARES {
            // The oldest goes: its memory is freed once Zeek releases it.
            self.spares.remove(0);
        }
        self.spares.push(old);
    }

    /// Lets the spares go (the connection went quiet).
    pub fn release(&mut self) {
        self.spares = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A reader's pattern: reads of `read` bytes, each split off and held
    /// "by Zeek" until `held` bytes are queued behind it.
    fn stream(spares: &mut SpareBuffers, total: usize, read: usize, held: usize) -> usize {
        const SIZE: usize = 1 << 20;
        let mut buf = BytesMut::with_capacity(SIZE);
        let mut queue: VecDeque<bytes::Bytes> = VecDeque::new();
        let mut queued = 0;
        let mut starts = std::collections::HashSet::new();
        let mut done = 0;
        while done < total {
            spares.make_room(&mut buf, SIZE, 64 * 1024);
            starts.insert(buf.as_ptr() as usize);
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
        starts.len()
    }

    #[test]
    fn a_streaming_connection_reads_into_the_same_few_buffers() {
        let mut spares = SpareBuffers::default();
        // 256 MiB in reads of 60 KiB while Zeek holds 2 MiB (the share of
        // one of 64 senders in the default 128 MiB).
        stream(&mut spares, 256 << 20, 60 * 1024, 2 << 20);
        assert!(
            spares.allocated <= 1 + SPARES + 1,
            "{} buffers allocated for 256 MiB",
            spares.allocated
        );
    }

    #[test]
    fn a_quiet_connection_keeps_one_buffer() {
        let mut spares = SpareBuffers::default();
        stream(&mut spares, 8 << 20, 60 * 1024, 2 << 20);
        assert!(!spares.spares.is_empty());
        spares.release();
        assert!(spares.spares.is_empty());
    }

    #[test]
    fn an_unfinished_record_moves_with_the_buffer() {
        let mut spares = SpareBuffers::default();
        let mut buf = BytesMut::with_capacity(100);
        buf.extend_from_slice(&[1; 90]);
        let held = buf.split_to(80).freeze();
        spares.make_room(&mut buf, 100, 64);
        assert_eq!(&buf[..], &[1; 10]);
        assert!(buf.capacity() - buf.len() >= 64);
        drop(held);
    }
}
