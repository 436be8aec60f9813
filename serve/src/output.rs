//! Where a relay client's writer writes: a connection (a client, a
//! --connect target) or standard output (--stdout).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use bytes::Bytes;

use crate::conn::{self, Conn};

/// A client's stream, written by its writer thread.
pub trait Output {
    /// Writes `segments` whole, in order.
    fn write_segments(&mut self, segments: &[Bytes]) -> io::Result<()>;
    /// Ends the stream (the input ended, or a new one began).
    fn end(&mut self) -> io::Result<()>;
}

impl Output for Conn {
    fn write_segments(&mut self, segments: &[Bytes]) -> io::Result<()> {
        conn::write_segments(self, segments)
    }

    fn end(&mut self) -> io::Result<()> {
        Conn::end(self)
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
    fn write_segments(&mut self, segments: &[Bytes]) -> io::Result<()> {
        for s in segments {
            self.0.write_all(s)?;
        }
        Ok(())
    }

    /// The tool ends after the stream: the reader sees the end of the file
    /// when the process exits.
    fn end(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
