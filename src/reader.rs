//! The reader thread: connects, reads the socket in large chunks, parses whole
//! records out of them and hands each read's records to the ring as one batch.
//!
//! Bytes go from the socket straight into a `BytesMut`; the parsed prefix is
//! split off and frozen, so packets reach Zeek without a copy. Only a record
//! cut by the end of a read is copied, once, into the next buffer.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::error::Error;
use crate::parse::{Record, StreamParser};
use crate::ring::Batch;
use crate::source::Shared;

/// Reads are at most this large; a fresh buffer is this large.
pub const READ_SIZE: usize = 1 << 20;
/// A buffer with less room than this left is replaced before the next read.
const MIN_READ: usize = 64 * 1024;

/// Runs the reader until the stream ends, fails, or the source is closed.
pub(crate) fn run(shared: Arc<Shared>) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_stream(&shared)));
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(panic) => Some(Error::Internal {
            endpoint: shared.endpoint.to_string(),
            message: panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into()),
        }),
    };
    if let Some(e) = failure {
        if shared.is_open() {
            log::error!("{e}");
        }
        shared.fail(e);
    }
    shared.ring.finish();
}

fn read_stream(shared: &Shared) -> Result<(), Error> {
    let endpoint = shared.endpoint.to_string();
    let mut stream = connect(shared)?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| endpoint.clone(), |a| a.to_string());
    log::debug!("connected to {endpoint} ({peer})");
    shared.counters.connects.fetch_add(1, Ordering::Relaxed);

    let mut parser = StreamParser::new(shared.config.limits);
    let mut buf = BytesMut::zeroed(READ_SIZE);
    let mut filled = 0;
    let mut records: Vec<Record> = Vec::new();
    loop {
        if shared.stopping() {
            return Ok(());
        }
        if buf.len() - filled < MIN_READ {
            // Carry the unparsed tail (at most one partial record, bounded by
            // the parser's limits) into a fresh buffer.
            let mut fresh = BytesMut::zeroed(READ_SIZE.max(filled + MIN_READ));
            fresh[..filled].copy_from_slice(&buf[..filled]);
            buf = fresh;
        }
        let n = match stream.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) if shared.stopping() => return Ok(()),
            Err(source) => return Err(Error::Read { endpoint, source }),
        };
        if n == 0 {
            return end_of_stream(shared, &parser, filled);
        }
        filled += n;
        shared.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let consumed = parser
            .parse(&buf[..filled], &mut records)
            .map_err(|source| Error::Stream {
                endpoint: endpoint.clone(),
                source,
            })?;
        if !shared.is_open() {
            if let Some(link_type) = parser.link_type() {
                log::debug!(
                    "{endpoint}: {} stream, link type {link_type}",
                    parser.format_name().unwrap_or("?")
                );
                shared.opened(link_type);
            }
        }
        if consumed == 0 {
            continue;
        }
        let chunk = buf.split_to(consumed).freeze();
        filled -= consumed;
        if records.is_empty() {
            continue;
        }
        shared
            .counters
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let batch = Batch {
            chunk,
            records: std::mem::take(&mut records),
        };
        if !shared.ring.push(batch) {
            return Ok(());
        }
    }
}

fn end_of_stream(shared: &Shared, parser: &StreamParser, leftover: usize) -> Result<(), Error> {
    let endpoint = shared.endpoint.to_string();
    if parser.link_type().is_none() {
        return Err(Error::NoHeader { endpoint });
    }
    if leftover > 0 {
        log::warn!(
            "{endpoint} closed the connection in the middle of a record; its {leftover} bytes were discarded"
        );
    }
    log::debug!("{endpoint}: end of stream");
    Ok(())
}

/// Tries every resolved address in order; the first that accepts wins.
fn connect(shared: &Shared) -> Result<TcpStream, Error> {
    let endpoint = shared.endpoint.to_string();
    let addrs = shared.endpoint.resolve().map_err(|source| Error::Resolve {
        endpoint: endpoint.clone(),
        source,
    })?;
    let mut last: Option<(SocketAddr, std::io::Error)> = None;
    for addr in &addrs {
        if shared.stopping() {
            break;
        }
        let started = Instant::now();
        match TcpStream::connect_timeout(addr, shared.config.connect_timeout) {
            Ok(stream) => {
                // Kept so that closing the source can interrupt a blocking read.
                if let Ok(clone) = stream.try_clone() {
                    shared.set_socket(clone);
                }
                if shared.stopping() {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                return Ok(stream);
            }
            Err(e) => {
                log::debug!(
                    "{endpoint}: connecting to {addr} failed after {:?}: {e}",
                    started.elapsed()
                );
                last = Some((*addr, e));
            }
        }
    }
    match last {
        None => Err(Error::NoAddress { endpoint }),
        Some((addr, source)) => Err(Error::Connect {
            tried: if addrs.len() == 1 {
                addr.to_string()
            } else {
                format!("{} addresses, last {addr}", addrs.len())
            },
            endpoint,
            source,
        }),
    }
}

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
