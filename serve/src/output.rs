//! Where a relay client's writer writes: a connection (a client, a
//! --connect target) or standard output (--stdout).

use std::fs::File;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conn::{self, Conn, Cut};
use crate::inflight;

/// A client's stream, written by its writer thread.
pub trait Output {
    /// Writes `segments` whole, in order.
    fn write_segments(&mut self, segments: &[Bytes]) -> Result<(), Cut>;
    /// Ends the stream (the input ended, or a new one began).
    fn end(&mut self) -> io::Result<()>;
    /// Its TCP connection, if it has one (to ask the kernel what the peer
    /// acknowledged).
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
    /// Whether the stream's bytes are the connection's (false over TLS and
    /// zstd).
    fn stream_is_wire(&self) -> bool {
        true
    }
    /// Over TLS: the bytes handed to the kernel so far (acknowledged or
    /// queued), which are not the stream's own.
    fn wire_position(&self) -> Option<u64> {
        None
    }
}

impl Output for Conn {
    fn write_segments(&mut self, segments: &[Bytes]) -> Result<(), Cut> {
        conn::write_segments(self, segments)
    }

    fn end(&mut self) -> io::Result<()> {
        Conn::end(self)
    }

    fn tcp(&self) -> Option<&TcpStream> {
        Some(Conn::tcp(self))
    }

    fn stream_is_wire(&self) -> bool {
        matches!(self, Conn::Plain(_))
    }

    fn wire_position(&self) -> Option<u64> {
        match self {
            Conn::Plain(_) => None,
            // TLS and zstd: the wire's bytes are not the stream's.
            Conn::Tls(_) | Conn::Zstd(_) => {
                let tcp = Conn::tcp(self);
                Some(inflight::bytes_acked(tcp)? + inflight::unacknowledged(tcp)?)
            }
        }
    }
}

/// Held while a segment is written to standard output, so that the tool,
/// ending on a signal, ends the stream after whole records, not within one.
static WRITING: Mutex<()> = Mutex::new(());

/// Set once the tool is ending on a signal: no segment starts after it.
/// (The lock alone is not enough: a writer that takes it again as soon as
/// it let it go, blocked on a slow reader, would keep it from the signal
/// thread for ever; std's Mutex is not fair.)
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Waits (at most `limit`) until no segment is being written to standard
/// output, and keeps any other from starting while the guard lives (until
/// the process exits). None when the writer held on for `limit` (a reader
/// that takes nothing): the stream may then end within a record.
pub fn stop_writing(limit: Duration) -> Option<MutexGuard<'static, ()>> {
    STOPPING.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + limit;
    loop {
        match WRITING.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() >= deadline => return None,
            Err(TryLockError::WouldBlock) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Standard output, unbuffered: each batch goes out as it is written, so a
/// reader (`tcpdump -r -`) gets each packet without waiting for a buffer to
/// fill. A duplicate of descriptor 1, so that nothing else writes to it
/// through std's line buffer.
pub struct Stdout(File);

impl Stdout {
    pub fn open() -> io::Result<Stdout> {
        Ok(Stdout(File::from(
            io::stdout().as_fd().try_clone_to_owned()?,
        )))
    }
}

impl Output for Stdout {
    /// A segment is whole units (records, blocks): a signal waits for the
    /// end of the one being written.
    fn write_segments(&mut self, segments: &[Bytes]) -> Result<(), Cut> {
        let mut taken = 0;
        for s in segments {
            let _whole = WRITING.lock().unwrap_or_else(|e| e.into_inner());
            if STOPPING.load(Ordering::SeqCst) {
                // The tool is exiting after the segment written last.
                drop(_whole);
                loop {
                    thread::park();
                }
            }
            taken += s.len();
            self.0.write_all(s).map_err(|error| Cut { error, taken })?;
        }
        Ok(())
    }

    /// The tool ends after the stream: the reader sees the end of the file
    /// when the process exits.
    fn end(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
