//! The consumer side, driven by Zeek's main loop through the shim: open the
//! source (wait for the stream's header), take packets one at a time, count
//! them, close. Nothing here blocks once `open` has returned.

use std::net::{Shutdown, TcpStream};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;
use crate::counters::{Counters, Snapshot};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::reader;
use crate::ring::{Batch, Pop, Ring};
use crate::sync::lock;

#[derive(Debug)]
enum Status {
    Starting,
    Open { link_type: i32 },
    Failed(Error),
}

/// State shared by the reader thread and the consumer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub endpoint: Endpoint,
    pub config: Config,
    pub ring: Ring,
    pub counters: Counters,
    status: Mutex<Status>,
    status_changed: Condvar,
    open: AtomicBool,
    stop: AtomicBool,
    /// Signalled when `stop` is set, to cut a backoff pause short.
    stop_lock: Mutex<()>,
    stopped: Condvar,
    socket: Mutex<Option<TcpStream>>,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn opened(&self, link_type: i32) {
        let mut st = lock(&self.status);
        *st = Status::Open { link_type };
        self.open.store(true, Ordering::Release);
        self.status_changed.notify_all();
    }

    /// Records why the reader stopped; before `open` returned, that is the
    /// error `open` reports.
    pub fn fail(&self, e: Error) {
        let mut st = lock(&self.status);
        if matches!(*st, Status::Starting) {
            *st = Status::Failed(e);
            self.status_changed.notify_all();
        }
    }

    pub fn set_socket(&self, stream: TcpStream) {
        *lock(&self.socket) = Some(stream);
    }

    /// Pauses the reader; false when the source is closing.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = lock(&self.stop_lock);
        let (_guard, _) = self
            .stopped
            .wait_timeout_while(guard, d, |_| !self.stopping())
            .unwrap_or_else(|e| e.into_inner());
        !self.stopping()
    }

    fn stop(&self) {
        {
            let _guard = lock(&self.stop_lock);
            self.stop.store(true, Ordering::Release);
            self.stopped.notify_all();
        }
        if let Some(s) = lock(&self.socket).take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.ring.close();
    }
}

/// One packet, valid until the next call to `Source::next_packet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub data: &'a [u8],
    pub wirelen: u32,
    pub ts_sec: i64,
    pub ts_usec: u32,
    pub dlt: i32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Packet(Packet<'a>),
    /// Nothing waiting; the selectable fd turns readable when that changes.
    Empty,
    /// The stream is over and every packet was delivered.
    Ended,
}

/// Statistics in Zeek's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handed to Zeek and accepted by its filter.
    pub received: u64,
    /// Packets lost by the source: dropped while the buffer was full
    /// (`drop_when_full`) or cut off by the end of a connection.
    pub dropped: u64,
    /// Records read from the stream.
    pub link: u64,
    /// Wire bytes of the received packets.
    pub bytes_received: u64,
    /// Packets rejected by the BPF filter.
    pub filtered: u64,
}

pub struct Source {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    link_type: i32,
    current: Option<Batch>,
    next_record: usize,
    last_wirelen: u32,
    stats: Stats,
}

impl Source {
    /// Connects and waits for the stream's header. `path` is `host:port`.
    pub fn open(path: &str, config: Config) -> Result<Source, Error> {
        let endpoint = Endpoint::parse(path)?;
        let config = config.normalized();
        let setup = |source| Error::Setup {
            endpoint: endpoint.to_string(),
            source,
        };
        let ring = Ring::new(config.buffer_size).map_err(setup)?;
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            config,
            ring,
            counters: Counters::default(),
            status: Mutex::new(Status::Starting),
            status_changed: Condvar::new(),
            open: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stopped: Condvar::new(),
            socket: Mutex::new(None),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("pcapovertcp {endpoint}"))
                .spawn(move || reader::run(shared))
                .map_err(setup)?
        };
        let mut source = Source {
            shared,
            thread: Some(thread),
            link_type: -1,
            current: None,
            next_record: 0,
            last_wirelen: 0,
            stats: Stats::default(),
        };
        let outcome = {
            let mut st = lock(&source.shared.status);
            while matches!(*st, Status::Starting) {
                st = source
                    .shared
                    .status_changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            }
            match std::mem::replace(&mut *st, Status::Starting) {
                Status::Open { link_type } => {
                    *st = Status::Open { link_type };
                    Ok(link_type)
                }
                Status::Failed(e) => Err(e),
                Status::Starting => unreachable!("waited for a change"),
            }
        };
        match outcome {
            Ok(link_type) => {
                source.link_type = link_type;
                Ok(source)
            }
            Err(e) => {
                source.close();
                Err(e)
            }
        }
    }

    /// The DLT_ value of the stream, for compiling BPF filters.
    pub fn link_type(&self) -> i32 {
        self.link_type
    }

    /// The fd Zeek polls after `Next::Empty`; it turns readable when packets
    /// or the end arrive. After a packet, ask again without waiting for it.
    pub fn selectable_fd(&self) -> RawFd {
        self.shared.ring.wake_fd()
    }

    /// For consumers outside Zeek: after `Next::Empty`, waits on the
    /// selectable fd as Zeek's loop does, at most `limit`; whether it turned
    /// readable.
    pub fn wait(&self, limit: Duration) -> bool {
        self.shared.ring.wait(limit)
    }

    /// The next packet, if one is waiting. Never blocks. The previous packet's
    /// bytes are released here, which is what makes them valid until Zeek's
    /// `DoneWithPacket()`.
    pub fn next_packet(&mut self) -> Next<'_> {
        while self
            .current
            .as_ref()
            .is_none_or(|b| self.next_record >= b.records.len())
        {
            let done = self.current.take().map_or(0, |b| b.cost());
            self.next_record = 0;
            match self.shared.ring.pop(done) {
                Pop::Batch(b) => self.current = Some(b),
                Pop::Empty => return Next::Empty,
                Pop::Finished => return Next::Ended,
            }
        }
        let Some((batch, r)) = self
            .current
            .as_ref()
            .and_then(|b| Some((b, *b.records.get(self.next_record)?)))
        else {
            return Next::Empty; // unreachable: the loop above ensured a record
        };
        self.next_record += 1;
        self.stats.received += 1;
        self.stats.bytes_received += u64::from(r.wirelen);
        self.last_wirelen = r.wirelen;
        Next::Packet(Packet {
            // The parser only describes bytes it consumed; `get` keeps a
            // violation of that from becoming a panic in Zeek's process.
            data: batch
                .chunk
                .get(r.offset..r.offset + r.caplen as usize)
                .unwrap_or_default(),
            wirelen: r.wirelen,
            ts_sec: r.ts_sec,
            ts_usec: r.ts_usec,
            dlt: r.dlt,
        })
    }

    /// The packet last returned did not reach Zeek's analysis: it was
    /// rejected by the BPF filter (`filtered`) or dropped as empty.
    pub fn not_delivered(&mut self, filtered: bool) {
        self.stats.received = self.stats.received.saturating_sub(1);
        self.stats.bytes_received = self
            .stats
            .bytes_received
            .saturating_sub(u64::from(self.last_wirelen));
        if filtered {
            self.stats.filtered += 1;
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            link: self.shared.counters.records(),
            dropped: self.shared.counters.lost(),
            ..self.stats
        }
    }

    /// The reader's counters (connections, bytes, drops, ...).
    pub fn counters(&self) -> Snapshot {
        self.shared.counters.snapshot()
    }

    /// Stops the reader thread and releases the buffer. Idempotent.
    pub fn close(&mut self) {
        self.shared.stop();
        self.current = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.close();
    }
}
