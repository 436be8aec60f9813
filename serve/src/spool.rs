//! --spool: a kept receiver's queue overflows to disk instead of dropping.
//!
//! While a --connect target or a shard's consumer is away (or catching up)
//! and its queue in memory is full (--client-buffer), what the relay has
//! for it is appended to its own file in the spool directory, in order,
//! within one cap for all files together (--spool-max); beyond the cap,
//! whole packets are dropped and counted as before. Once a spool has
//! begun, everything for that receiver goes through it until its writer has
//! read it to its end, so the order is kept; the file is then removed.
//!
//! A file is a run of records: the length of the piece and how many
//! packets it holds (two little-endian u32), whether it is packets only
//! (one byte), then the piece. The lengths read back were written by this
//! process into a file it created: still, a record longer than what a
//! writer takes at once is an error, not an allocation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;

/// One piece is at most this long (a read of the input is at most 1 MiB).
const MAX_PIECE: usize = 4 << 20;
const RECORD_HEADER: usize = 9;

/// The spool directory and its cap, shared by every kept receiver.
pub struct SpoolDir {
    dir: PathBuf,
    max: u64,
    /// Bytes in all files together (records included).
    used: AtomicU64,
    next: AtomicUsize,
}

impl SpoolDir {
    pub fn new(dir: &Path, max: u64) -> Arc<SpoolDir> {
        Arc::new(SpoolDir {
            dir: dir.to_path_buf(),
            max,
            used: AtomicU64::new(0),
            next: AtomicUsize::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes spooled now, over every receiver.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// Takes room for `n` bytes, if the cap allows.
    fn reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |u| (u + n <= self.max).then_some(u + n))
            .is_ok()
    }

    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(n)));
    }
}

/// One receiver's spool file.
pub struct Spool {
    dir: Arc<SpoolDir>,
    path: PathBuf,
    file: File,
    /// Where the next record is appended, and read.
    end: u64,
    at: u64,
    /// Packets and bytes (pieces only) in the file not yet read back.
    pub packets: u64,
    pub bytes: u64,
    /// Pieces that are no packets before this point are skipped when read
    /// back: the receiver came back after them, and the header it got
    /// first carries them.
    skip_blocks_before: u64,
}

/// A piece read back: its bytes, its packets, whether it is packets only.
pub type Piece = (Bytes, u64, bool);

impl Spool {
    /// A new file in the directory (the name says which process and which
    /// receiver; the directory is the operator's).
    pub fn create(dir: &Arc<SpoolDir>) -> io::Result<Spool> {
        let n = dir.next.fetch_add(1, Relaxed);
        let path = dir.dir.join(format!(
            "pcapovertcp-serve-{}-{n}.spool",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Spool {
            dir: dir.clone(),
            path,
            file,
            end: 0,
            at: 0,
            packets: 0,
            bytes: 0,
            skip_blocks_before: 0,
        })
    }

    /// The receiver is back with a new stream header: the blocks spooled
    /// so far are in it.
    pub fn skip_blocks_before_now(&mut self) {
        self.skip_blocks_before = self.end;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a piece; Ok(false) when the cap leaves no room for it.
    pub fn append(&mut self, piece: &[u8], packets: u64, only_packets: bool) -> io::Result<bool> {
        let len = (RECORD_HEADER + piece.len()) as u64;
        if piece.len() > MAX_PIECE || !self.dir.reserve(len) {
            return Ok(false);
        }
        let mut head = [0u8; RECORD_HEADER];
        head[..4].copy_from_slice(&(piece.len() as u32).to_le_bytes());
        head[4..8].copy_from_slice(&(packets.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        head[8] = u8::from(only_packets);
        let written = self
            .file
            .seek(SeekFrom::Start(self.end))
            .and_then(|_| self.file.write_all(&head))
            .and_then(|_| self.file.write_all(piece));
        if let Err(e) = written {
            self.dir.release(len);
            return Err(e);
        }
        self.end += len;
        self.packets += packets;
        self.bytes += piece.len() as u64;
        Ok(true)
    }

    /// Whether everything appended was read back.
    pub fn is_empty(&self) -> bool {
        self.at >= self.end
    }

    /// Reads back pieces, in order, up to about `want` bytes (one at
    /// least).
    pub fn read(&mut self, want: usize) -> io::Result<Vec<Piece>> {
        let mut pieces = Vec::new();
        let mut taken = 0;
        while !self.is_empty() && (pieces.is_empty() || taken < want) {
            let mut head = [0u8; RECORD_HEADER];
            self.file.seek(SeekFrom::Start(self.at))?;
            self.file.read_exact(&mut head)?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let packets = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
            if len > MAX_PIECE || self.at + (RECORD_HEADER + len) as u64 > self.end {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: a record runs past what was written",
                        self.path.display()
                    ),
                ));
            }
            let mut piece = vec![0u8; len];
            self.file.read_exact(&mut piece)?;
            let record = (RECORD_HEADER + len) as u64;
            let skip = head[8] == 0 && packets == 0 && self.at < self.skip_blocks_before;
            self.at += record;
            self.dir.release(record);
            self.packets = self.packets.saturating_sub(packets);
            self.bytes = self.bytes.saturating_sub(len as u64);
            if skip {
                continue;
            }
            taken += len;
            pieces.push((Bytes::from(piece), packets, head[8] == 1));
        }
        Ok(pieces)
    }
}

impl Drop for Spool {
    /// What was not read back is given up (its room in the cap with it).
    fn drop(&mut self) {
        self.dir.release(self.end.saturating_sub(self.at));
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-test-{}-{name}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pieces_come_back_in_order_and_the_file_goes_with_the_spool() {
        let d = dir("order");
        let sd = SpoolDir::new(&d, 1 << 20);
        let mut s = Spool::create(&sd).unwrap();
        assert!(s.append(b"abc", 1, true).unwrap());
        assert!(s.append(b"defgh", 2, false).unwrap());
        assert_eq!((s.packets, s.bytes, sd.used()), (3, 8, 8 + 18));
        let got = s.read(1).unwrap();
        assert_eq!(got, vec![(Bytes::from_static(b"abc"), 1, true)]);
        let got = s.read(1 << 20).unwrap();
        assert_eq!(got, vec![(Bytes::from_static(b"defgh"), 2, false)]);
        assert!(s.is_empty());
        assert_eq!(sd.used(), 0);
        let path = s.path().to_path_buf();
        assert!(path.exists());
        drop(s);
        assert!(!path.exists());
    }

    #[test]
    fn the_cap_holds_over_every_file() {
        let d = dir("cap");
        let sd = SpoolDir::new(&d, 100);
        let mut a = Spool::create(&sd).unwrap();
        let mut b = Spool::create(&sd).unwrap();
        assert!(a.append(&[0; 60], 1, true).unwrap());
        // 60 + 9 used: 40 + 9 does not fit.
        assert!(!b.append(&[0; 40], 1, true).unwrap());
        assert!(b.append(&[0; 20], 1, true).unwrap());
        drop(a);
        assert_eq!(sd.used(), 29);
        assert!(b.append(&[0; 40], 1, true).unwrap());
    }
}
