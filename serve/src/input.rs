//! The live inputs of the relay and how they reach the clients: standard
//! input and a capture command (--exec) relayed here, upstream servers
//! through [`crate::upstream`] (one, relayed here too) or
//! [`crate::merged`] (several); each cut into whole units and handed to the
//! hubs — one hub, or with --shards one per share, each packet to the hub
//! of its flow's share.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pcapovertcp::net::backoff::Outage;
use pcapovertcp::parse::{Limits, Record, StreamError, StreamParser};
use pcapovertcp::share::{ShareBy, Sharer, Verdict};

use crate::conn;
use crate::hub::Hub;

/// The input's read buffer: the largest unit (a pcapng block of a maximal
/// packet) fits in it several times.
const READ_BUF: usize = 1 << 20;
/// What one read takes at least (if the buffer has room): a pipe's worth.
const READ_MIN: usize = 64 << 10;

/// One unit of a read: its bytes, and the packet when it is one.
pub type Unit = (Range<usize>, Option<Record>);

/// One share's part of a read: its units' bytes, and the units in them.
type Part = (Vec<u8>, Vec<(Range<usize>, bool)>);

/// Why a stream could not be relayed to its end.
#[derive(Debug)]
pub enum Failure {
    Io(io::Error),
    Stream(StreamError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Stream(StreamError::NotPcap(first)) => {
                write!(f, "not a pcap stream: first bytes \"{first}\"")
            }
            Failure::Stream(e) => write!(f, "{e}"),
        }
    }
}

/// The hubs, one per share, and how packets are assigned to them.
pub struct Fanout {
    hubs: Vec<Arc<Hub>>,
    sharer: Option<Sharer>,
    /// Link types whose packets cannot be hashed (reported once each).
    unhashable: HashSet<i32>,
}

impl Fanout {
    /// `hubs`: one per share (one: no sharing).
    pub fn new(hubs: Vec<Arc<Hub>>, by: ShareBy) -> Fanout {
        let sharer = (hubs.len() > 1).then(|| Sharer::new(by, hubs.len() as u32));
        Fanout {
            hubs,
            sharer,
            unhashable: HashSet::new(),
        }
    }

    /// Waits until `n` clients are connected at once, over all shares.
    pub fn wait_for_clients(&self, n: usize) {
        if let [hub] = self.hubs.as_slice() {
            return hub.wait_for_clients(n);
        }
        while self.hubs.iter().map(|h| h.clients()).sum::<usize>() < n {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The input ended: every hub's clients get what is queued for them.
    pub fn end(&self) {
        for h in &self.hubs {
            h.end();
        }
    }

    /// After `end`: waits until every client has its stream.
    pub fn drain(&self) {
        for h in &self.hubs {
            h.drain();
        }
    }

    /// Hands one read's units on: units that are no packets to every hub,
    /// each packet to the hub of its share (not IP: share 0).
    pub fn send(&mut self, chunk: &Bytes, units: &[Unit]) {
        let Some(sharer) = &mut self.sharer else {
            // The hub queues the chunk whole: just the units' bytes (they
            // are contiguous).
            let (Some(first), Some(last)) = (units.first(), units.last()) else {
                return;
            };
            let (start, end) = (first.0.start, last.0.end);
            let units: Vec<_> = units
                .iter()
                .map(|(r, p)| (r.start - start..r.end - start, p.is_some()))
                .collect();
            self.hubs[0].broadcast(&chunk.slice(start..end), &units);
            return;
        };
        // Each share's units, copied together (each packet once).
        let mut parts: Vec<Part> = vec![(Vec::new(), Vec::new()); self.hubs.len()];
        let put = |part: &mut Part, range: &Range<usize>, packet| {
            let start = part.0.len();
            part.0.extend_from_slice(&chunk[range.clone()]);
            part.1.push((start..part.0.len(), packet));
        };
        for (range, record) in units {
            let Some(r) = record else {
                for part in &mut parts {
                    put(part, range, false);
                }
                continue;
            };
            let verdict = sharer.share_of(r.data(chunk), r.dlt, r.ts_sec);
            if let Verdict::NotIp {
                unhashable_link_type: Some(dlt),
            } = verdict
            {
                if self.unhashable.insert(dlt) {
                    log::warn!(
                        "--shards: packets of link type {dlt} cannot be hashed by flow: all of them go to shard 0"
                    );
                }
            }
            put(&mut parts[verdict.share() as usize], range, true);
        }
        for (hub, (bytes, units)) in self.hubs.iter().zip(parts) {
            if !units.is_empty() {
                hub.broadcast(&Bytes::from(bytes), &units);
            }
        }
    }

    /// A restarted input's header (its units before its first packet):
    /// the same as the clients': they go on, the new header is skipped;
    /// otherwise every client's stream ends (it reconnects for the new
    /// one) and the new header is the one joining clients get.
    fn new_header(&mut self, header: Vec<Bytes>, what: &str) {
        let old = self.hubs[0].header_units();
        if old == header {
            log::debug!("{what}: the same header as before: the clients' streams go on");
            return;
        }
        let why = format!("{what} restarted with a different header (link type, timestamp resolution or interfaces)");
        for hub in &self.hubs {
            hub.new_stream(&why);
        }
        log::warn!("{why}: the clients' streams end; they get the new one when they reconnect");
        for unit in header {
            let chunk = unit.clone();
            let units = [(0..chunk.len(), None)];
            self.send(&chunk, &units);
        }
    }

    /// Relays one stream (`what`, for messages) until it ends; the number
    /// of packets it brought. A stream after the first (the hubs have a
    /// header already) goes on from the clients' stream if its header is
    /// the same (see `new_header`).
    pub fn relay(&mut self, input: impl Read, what: &str) -> Result<u64, Failure> {
        self.relay_with(input, what, || {}, |_, _| {})
    }

    /// `relay`, calling `started` once the stream's first unit (its
    /// header) has been recognised: from then on it is a pcap stream; and
    /// `read` with each read's bytes and the packets completed by it.
    pub fn relay_with(
        &mut self,
        mut input: impl Read,
        what: &str,
        mut started: impl FnMut(),
        mut read: impl FnMut(u64, u64),
    ) -> Result<u64, Failure> {
        let mut recognised = false;
        let mut parser = StreamParser::new(Limits::default());
        let mut buf = vec![0u8; READ_BUF];
        let mut filled = 0;
        let mut units = Vec::new();
        let mut packets = 0u64;
        // A restarted input: its header, held back until its first packet.
        let mut pending = (!self.hubs[0].header_units().is_empty()).then(Vec::new);
        // One read brings at most half a client's buffer (unless a unit is
        // larger), so that a client that keeps up always has room for it,
        // even when the input is a file that is all there at once.
        let want = (self.hubs[0].limit() / 2).clamp(READ_MIN, READ_BUF);
        loop {
            if filled == buf.len() {
                return Err(Failure::Io(io::Error::other(
                    "a unit larger than the relay buffer",
                )));
            }
            let end = if filled < want { want } else { buf.len() };
            let n = match input.read(&mut buf[filled..end]) {
                Ok(0) => {
                    if filled > 0 {
                        log::warn!(
                            "{what} ended within a record: its last {filled} bytes are not sent"
                        );
                    }
                    if let Some(header) = pending.take() {
                        if !header.is_empty() {
                            self.new_header(header, what);
                        }
                    }
                    return Ok(packets);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            };
            filled += n;
            units.clear();
            let consumed = parser
                .parse_units(&buf[..filled], |range, record| units.push((range, record)))
                .map_err(Failure::Stream)?;
            if consumed == 0 {
                read(n as u64, 0);
            }
            if consumed > 0 && !recognised {
                recognised = true;
                started();
            }
            if consumed > 0 {
                // One copy, shared by every client's queue.
                let chunk = Bytes::copy_from_slice(&buf[..consumed]);
                let mut first = 0;
                if let Some(header) = &mut pending {
                    while first < units.len() && units[first].1.is_none() {
                        header.push(chunk.slice(units[first].0.clone()));
                        first += 1;
                    }
                    if first < units.len() {
                        let header = pending.take().unwrap_or_default();
                        self.new_header(header, what);
                    }
                }
                let new = units[first..].iter().filter(|u| u.1.is_some()).count() as u64;
                packets += new;
                read(n as u64, new);
                if first < units.len() {
                    self.send(&chunk, &units[first..]);
                }
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
    }
}

/// --exec: runs `cmd` through `sh -c` and relays its standard output; when
/// it ends (or writes what is no pcap stream), reports it and runs it
/// again, after 100 ms doubling to 5 s (reset by a run of 5 s or more).
/// With `once`, returns when it first ends: whether it succeeded.
pub fn run_exec(fanout: &mut Fanout, cmd: &str, once: bool) -> bool {
    let mut backoff = conn::backoff();
    // What was reported in this outage: the same again is not repeated.
    let mut outage = Outage::default();
    let mut runs = 0u64;
    loop {
        let started = Instant::now();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // The command ends with the tool (best effort: sh, or what it
            // execs).
            // SAFETY: prctl is async-signal-safe; nothing else runs here.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                log::error!("--exec: cannot run sh -c {cmd:?}: {e}");
                return false;
            }
        };
        if runs == 0 {
            log::info!("--exec: command started (pid {}): {cmd}", child.id());
        } else {
            log::debug!("--exec: command started (pid {}): {cmd}", child.id());
        }
        runs += 1;
        // Its standard error: each line at debug level, the last one kept
        // for the report.
        let (last_tx, last_rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            thread::spawn(move || {
                let mut last = None;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log::debug!("--exec stderr: {line}");
                    if !line.trim().is_empty() {
                        last = Some(line);
                    }
                }
                let _ = last_tx.send(last);
            });
        }
        let stdout = child.stdout.take().expect("a piped stdout");
        let result = fanout.relay(stdout, "the command's output");
        if result.is_err() {
            // It is still running: its output is of no use.
            let _ = child.kill();
        }
        let exit = child.wait();
        let succeeded = result.is_ok() && exit.as_ref().is_ok_and(|s| s.success());
        let status = match exit {
            Ok(s) => s.to_string(),
            Err(e) => format!("status unknown: {e}"),
        };
        // Bounded: a background process of the command may hold its stderr.
        let last = last_rx
            .recv_timeout(Duration::from_millis(500))
            .ok()
            .flatten()
            .map(|l| format!("; last line on its stderr: {l:?}"))
            .unwrap_or_default();
        let (what, packets) = match &result {
            Ok(p) => ("the command ended".to_string(), *p),
            Err(e) => (
                format!("the command's output is unusable: {e}; stopped it"),
                0,
            ),
        };
        // What is reported once: neither the status nor standard error
        // is part of it (a command stopped for its output may or may not
        // have ended, or written its error, by then).
        let report = what.clone();
        let line = format!("{what} ({status}) after {packets} packets{last}");
        if once {
            if succeeded {
                log::info!("--exec: {line}; ending (--once)");
            } else {
                log::warn!("--exec: {line}; ending (--once)");
            }
            return succeeded;
        }
        backoff.reset_after(started.elapsed());
        if !outage.down(&report) {
            log::debug!(
                "--exec: {line} (again); restarting it in {} ms",
                backoff.peek().as_millis()
            );
        } else {
            log::warn!(
                "--exec: {line}; restarting it in {} ms (100 ms doubling to 5 s; the same again is logged at debug level)",
                backoff.peek().as_millis()
            );
        }
        backoff.wait();
    }
}
