//! Compression for thin links: the `+zstd` schemes (`tcp+zstd://`,
//! `tls+zstd-listen://`, ...), between this project's own ends only.
//!
//! The stream inside is ordinary PCAP-over-IP (pcap or pcapng bytes),
//! compressed as one zstd stream over the plain socket or TLS. The sender
//! flushes a zstd block at the end of every write (a batch of whatever it
//! had ready), so a live `tcpdump -U` stream is not held back waiting for
//! a block to fill; the frame's history spans the flushes, so small blocks
//! still find their matches in what was sent before.
//!
//! Memory stays bounded whatever a peer sends: decompressed bytes go into
//! the caller's buffer, never more than its free room (the reader's own
//! bounded buffers); compressed bytes wait in one buffer of [`INPUT`]
//! bytes; and the decoder refuses a frame whose window is larger than
//! 2^[`WINDOW_LOG_MAX`] bytes (8 MiB), so that a "zstd bomb" cannot make
//! it allocate more. zstd's own encoder stays well below it at every
//! level up to 19 for a stream (level 3, used here, has a 2 MiB window).

use std::io::{self, Read, Write};

use bytes::BytesMut;
use zstd::stream::raw::{DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

use crate::net::tls::{is_tls_hello, Transport};

/// The largest decoder window accepted, as a power of two: 2^23 = 8 MiB.
pub const WINDOW_LOG_MAX: u32 = 23;
/// The sender's compression level: zstd's default, fast enough for a
/// capture host's spare core at the rates a thin link carries.
pub const LEVEL: i32 = 3;
/// Compressed bytes read from the connection at once.
const INPUT: usize = 128 * 1024;
/// The most decompressed bytes one `read_into` appends.
const OUTPUT: usize = 256 * 1024;
/// The encoder's output, written to the connection as it fills.
const SCRATCH: usize = 128 * 1024;

/// A zstd stream's first four bytes (a frame's magic number, little-endian).
const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Whether `first` (the first bytes of a connection) starts a zstd frame:
/// a `+zstd` sender on a plain endpoint.
pub fn is_zstd_frame(first: &[u8]) -> bool {
    first.starts_with(&MAGIC)
}

/// Why a compressed stream could not be read, in an operator's words
/// (without the endpoint, which the caller adds).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompressError(pub String);

/// A transport whose bytes are zstd-compressed in both directions (only
/// one is used: a sender writes, a receiver reads).
pub struct ZstdStream {
    pub(crate) inner: Transport,
    /// Made at the first read or write, so that the side that does not use
    /// it has none.
    decoder: Option<Decoder<'static>>,
    encoder: Option<Encoder<'static>>,
    /// Compressed bytes read and not yet decoded: `input[pos..]`.
    input: BytesMut,
    pos: usize,
    /// The decoder's last call filled its output: it may hold more.
    pending: bool,
    /// The first bytes the peer sent, to recognise one that does not
    /// compress.
    first: Vec<u8>,
    /// The encoder's output.
    scratch: Vec<u8>,
}

impl Transport {
    /// This transport with zstd inside it (after its TLS handshake, if any).
    pub fn zstd(self) -> Transport {
        Transport::Zstd(Box::new(ZstdStream {
            inner: self,
            decoder: None,
            encoder: None,
            input: BytesMut::new(),
            pos: 0,
            pending: false,
            first: Vec::new(),
            scratch: Vec::new(),
        }))
    }
}

impl ZstdStream {
    /// Appends decompressed bytes to `buf`, at most its free room (and
    /// [`OUTPUT`]); 0 at the end of the stream. The inner transport's
    /// receive timeout surfaces as `WouldBlock`, as without compression.
    pub(crate) fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let old = buf.len();
        let room = (buf.capacity() - old).min(OUTPUT);
        // Zero-filled first: zstd writes into initialised memory only here.
        buf.resize(old + room.max(1), 0);
        let read = self.read_slice(&mut buf[old..]);
        buf.truncate(old + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Decompressed bytes into `out`: at least one unless the stream ended
    /// (0) or the inner transport had nothing (its error).
    fn read_slice(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.input.len() || self.pending {
                let n = self.decode(out)?;
                if n > 0 {
                    return Ok(n);
                }
            }
            // Everything read is decoded: read more.
            self.input.clear();
            self.pos = 0;
            if self.input.capacity() < INPUT {
                self.input.reserve(INPUT);
            }
            let n = self.inner.read_into(&mut self.input)?;
            if n == 0 {
                // The end of the connection; a frame cut short loses only
                // its last block, which the pcap layer accounts for.
                return Ok(0);
            }
            if self.first.len() < 8 {
                let take = (8 - self.first.len()).min(n);
                self.first.extend_from_slice(&self.input[..take]);
            }
        }
    }

    fn decode(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.decoder.is_none() {
            let mut d = Decoder::new()?;
            d.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))?;
            self.decoder = Some(d);
        }
        let Some(decoder) = &mut self.decoder else {
            return Ok(0);
        };
        let had = self.input.len() - self.pos;
        let mut input = InBuffer::around(&self.input[self.pos..]);
        let mut output = OutBuffer::around(out);
        let run = decoder.run(&mut input, &mut output);
        let (read, written) = (input.pos(), output.pos());
        if let Err(e) = run {
            return Err(self.fail(&e));
        }
        self.pos += read;
        self.pending = written == out.len();
        if written == 0 && read == 0 && had > 0 {
            // zstd always progresses while it has room; never spin.
            return Err(io::Error::other(CompressError(
                "the zstd decoder made no progress".into(),
            )));
        }
        Ok(written)
    }

    /// A decoding error in an operator's words.
    fn fail(&self, e: &io::Error) -> io::Error {
        let why = e.to_string();
        let pcap = matches!(
            self.first.get(..4),
            Some(
                [0xd4, 0xc3, 0xb2, 0xa1]
                    | [0xa1, 0xb2, 0xc3, 0xd4]
                    | [0x4d, 0x3c, 0xb2, 0xa1]
                    | [0xa1, 0xb2, 0x3c, 0x4d]
                    | [0x0a, 0x0d, 0x0d, 0x0a]
            )
        );
        let what = if pcap {
            "the peer sends uncompressed PCAP-over-IP, not zstd: drop the +zstd from this end's scheme (tcp://, tls://, or their -listen forms), or have the peer send with +zstd".to_string()
        } else if is_tls_hello(&self.first) {
            "the peer speaks TLS: use tls+zstd:// (or tls+zstd-listen://) for it".to_string()
        } else if why.contains("too much memory") {
            format!(
                "the peer's zstd frames need a window larger than {} MiB, the most this end allows: have it compress with a smaller window (a lower level, no long-distance mode)",
                (1u32 << WINDOW_LOG_MAX) >> 20
            )
        } else if self.decoder.is_some() && self.first.len() >= 4 && !is_zstd_frame(&self.first) {
            format!(
                "the peer does not send a zstd stream (first bytes: \"{}\"); is it a +zstd sender?",
                printable(&self.first)
            )
        } else {
            format!("the zstd stream is corrupt ({why})")
        };
        io::Error::new(io::ErrorKind::InvalidData, CompressError(what))
    }

    /// Compresses `parts` in order and sends them, then flushes a block so
    /// that the peer can decode all of them now.
    pub fn write_parts<'p>(&mut self, parts: impl IntoIterator<Item = &'p [u8]>) -> io::Result<()> {
        for part in parts {
            self.compress(part)?;
        }
        self.drain(|e, out| e.flush(out))
    }

    /// Makes the encoder and its output buffer, the first time.
    fn encoder(&mut self) -> io::Result<()> {
        if self.scratch.capacity() < SCRATCH {
            self.scratch.reserve(SCRATCH);
        }
        if self.encoder.is_none() {
            self.encoder = Some(Encoder::new(LEVEL)?);
        }
        Ok(())
    }

    fn compress(&mut self, data: &[u8]) -> io::Result<()> {
        let mut input = InBuffer::around(data);
        while input.pos() < data.len() {
            self.encoder()?;
            let Some(encoder) = &mut self.encoder else {
                return Ok(());
            };
            self.scratch.clear();
            let mut output = OutBuffer::around(&mut self.scratch);
            encoder.run(&mut input, &mut output)?;
            self.inner.write_all(&self.scratch)?;
        }
        Ok(())
    }

    /// Calls `step` (flush or end the frame) until it has nothing left,
    /// sending what it gives.
    fn drain(
        &mut self,
        step: impl Fn(&mut Encoder<'static>, &mut OutBuffer<'_, Vec<u8>>) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.encoder()?;
        let Some(encoder) = &mut self.encoder else {
            return Ok(());
        };
        loop {
            self.scratch.clear();
            let mut output = OutBuffer::around(&mut self.scratch);
            let left = step(encoder, &mut output)?;
            self.inner.write_all(&self.scratch)?;
            if left == 0 {
                return self.inner.flush();
            }
        }
    }

    /// Ends the frame (a reader then sees a whole one), when anything was
    /// written.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if self.encoder.is_none() {
            return Ok(());
        }
        self.drain(|e, out| e.finish(out, true))
    }

    /// Decompressed bytes, for callers that copy them on (the tool's
    /// relay). 0 at the end of the stream.
    pub(crate) fn read_plain(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.read_slice(out) {
                // A TLS record not yet whole.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                done => return done,
            }
        }
    }
}

/// The first bytes as text, others as '.'.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

impl Read for ZstdStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.read_plain(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::Duration;

    /// A connected pair: (the sender's end, the receiver's end), the
    /// receiver's with a receive timeout so that a failing test ends.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (a, b)
    }

    fn read_all(t: &mut Transport, cap: usize) -> io::Result<(Vec<u8>, usize)> {
        let mut got = Vec::new();
        let mut most = 0;
        let mut buf = BytesMut::with_capacity(cap);
        loop {
            buf.clear();
            let n = t.read_into(&mut buf)?;
            if n == 0 {
                return Ok((got, most));
            }
            assert!(
                buf.capacity() <= cap,
                "the buffer grew to {}",
                buf.capacity()
            );
            most = most.max(n);
            got.extend_from_slice(&buf);
        }
    }

    #[test]
    fn what_is_written_in_flushed_batches_reads_back_unchanged() {
        let (a, b) = pair();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| ((i % 251) ^ (i / 7)) as u8)
            .collect();
        let sent = data.clone();
        let writer = thread::spawn(move || {
            let mut t = Transport::plain(a).zstd();
            for chunk in sent.chunks(70_000) {
                let parts: Vec<&[u8]> = chunk.chunks(1500).collect();
                let Transport::Zstd(z) = &mut t else { panic!() };
                z.write_parts(parts).unwrap();
            }
            t.end().unwrap();
        });
        let mut r = Transport::plain(b).zstd();
        let (got, _) = read_all(&mut r, 64 * 1024).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    }

    #[test]
    fn each_write_is_readable_before_the_next() {
        // A live stream: the receiver gets each write without the sender
        // writing more or closing.
        let (a, b) = pair();
        let mut w = Transport::plain(a).zstd();
        let mut r = Transport::plain(b).zstd();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        for i in 0..20u8 {
            w.write_all(&[i; 100]).unwrap();
            buf.clear();
            while buf.len() < 100 {
                r.read_into(&mut buf).unwrap();
            }
            assert_eq!(&buf[..], &[i; 100][..]);
        }
    }

    #[test]
    fn a_bomb_fills_only_the_readers_buffer() {
        // 512 MiB of zeros compress to a few KiB: the reader gets them in
        // pieces no larger than its buffer's room, which never grows.
        let (a, b) = pair();
        let total: usize = 512 << 20;
        let writer = thread::spawn(move || {
            let mut t = Transport::plain(a).zstd();
            let zeros = vec![0u8; 1 << 20];
            let Transport::Zstd(z) = &mut t else { panic!() };
            for _ in 0..(total >> 20) {
                z.compress(&zeros).unwrap();
            }
            z.finish().unwrap();
            t.end().unwrap();
        });
        let mut r = Transport::plain(b).zstd();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let (mut got, mut wire) = (0usize, 0);
        loop {
            buf.clear();
            let n = r.read_into(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= 64 * 1024 && buf.capacity() <= 64 * 1024);
            assert!(buf.iter().all(|&b| b == 0));
            got += n;
            if let Transport::Zstd(z) = &r {
                wire = wire.max(z.input.capacity());
            }
        }
        writer.join().unwrap();
        assert_eq!(got, total);
        assert!(wire <= 2 * INPUT, "{wire}");
    }

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused_in_words() {
        let (mut a, b) = pair();
        // A frame header: magic, a descriptor with a window descriptor
        // (single segment off), window log 10 + 14 = 24 (16 MiB): within
        // zstd's own default limit (2^27), beyond ours.
        a.write_all(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 14 << 3, 0, 0, 0])
            .unwrap();
        let mut r = Transport::plain(b).zstd();
        let e = read_all(&mut r, 64 * 1024).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("window larger than 8 MiB"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn a_plain_sender_is_named_as_such() {
        let (mut a, b) = pair();
        a.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0])
            .unwrap();
        drop(a);
        let mut r = Transport::plain(b).zstd();
        let msg = read_all(&mut r, 64 * 1024).unwrap_err().to_string();
        assert!(msg.contains("uncompressed PCAP-over-IP"), "{msg}");
        let (mut a, b) = pair();
        a.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
        drop(a);
        let mut r = Transport::plain(b).zstd();
        let msg = read_all(&mut r, 64 * 1024).unwrap_err().to_string();
        assert!(msg.contains("SSH-2.0"), "{msg}");
    }

    #[test]
    fn zstd_frames_are_recognised() {
        assert!(is_zstd_frame(&[0x28, 0xb5, 0x2f, 0xfd, 0x04]));
        assert!(!is_zstd_frame(&[0xd4, 0xc3, 0xb2, 0xa1]));
        assert!(!is_zstd_frame(&[0x28, 0xb5]));
    }
}
