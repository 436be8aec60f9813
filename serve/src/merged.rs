//! --upstream with several servers (or a listening endpoint): merged in
//! timestamp order by the plugin's own core and relayed as pcapng.
//!
//! The clients get one section with one interface block per input
//! interface: each (server, interface of its stream, link type) seen gets
//! its own, in the order first seen, named after the server
//! (`if_name` "tcp://a:57012 #0") with nanosecond timestamps, so that a
//! server's own interfaces stay apart and no resolution is lost. A server
//! that reconnects with the same interfaces reuses its blocks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pcapovertcp::linktype::dlt_to_linktype;
use pcapovertcp::parse::{Limits, Record};
use pcapovertcp::{Config, Next, Opening, Packet, Source};

use crate::input::{Fanout, Unit};
use crate::stats::{Registry, UpstreamStats};
use crate::words;

/// At most this many bytes of packets are handed on at once.
const BATCH: usize = 256 << 10;

/// pcapng block types and options used here.
const SECTION_HEADER: u32 = 0x0a0d_0d0a;
const INTERFACE_DESCRIPTION: u32 = 1;
const ENHANCED_PACKET: u32 = 6;
const OPT_END: u16 = 0;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

/// A pcapng block (little-endian): type, length, body padded to 4 bytes,
/// length.
fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let padded = body.len().div_ceil(4) * 4;
    let len = (12 + padded) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + padded - body.len(), 0);
    out.extend_from_slice(&len.to_le_bytes());
}

/// A pcapng option: code, length, value padded to 4 bytes.
fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    body.resize(body.len() + value.len().div_ceil(4) * 4 - value.len(), 0);
}

/// Where a packet was captured: its input (server), the interface within
/// that server's stream, and the interface's link type.
type InputInterface = (u32, u32, i32);

/// Writes the merged stream as pcapng.
#[derive(Default)]
struct NgWriter {
    started: bool,
    /// Each input interface's interface id in the output.
    interfaces: HashMap<InputInterface, u32>,
    /// The inputs' names (the core's senders), by input index.
    names: Vec<String>,
}

impl NgWriter {
    /// Learns the names of inputs that appeared since the last call.
    fn learn_names(&mut self, source: &Source) {
        if source.sender_count() != self.names.len() {
            self.names = source.senders().into_iter().map(|(n, _)| n).collect();
        }
    }

    /// Appends the packet (and the blocks it needs first) to `out`, a unit
    /// each, to `units`.
    fn packet(&mut self, out: &mut Vec<u8>, units: &mut Vec<Unit>, p: &Packet<'_>) {
        if !self.started {
            self.started = true;
            let start = out.len();
            let mut body = Vec::with_capacity(16);
            body.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(&0u16.to_le_bytes());
            body.extend_from_slice(&(-1i64).to_le_bytes());
            block(out, SECTION_HEADER, &body);
            units.push((start..out.len(), None));
        }
        let key = (p.input, p.interface, p.dlt);
        let id = match self.interfaces.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.interfaces.len() as u32;
                let start = out.len();
                self.describe(out, key);
                units.push((start..out.len(), None));
                self.interfaces.insert(key, id);
                id
            }
        };
        let start = out.len();
        // Nanoseconds since the epoch; a time before it wraps, as the
        // format has no sign.
        let ts = (p.ts_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(u64::from(p.ts_nsec));
        let mut body = Vec::with_capacity(20 + p.data.len());
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        body.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        body.extend_from_slice(&p.wirelen.to_le_bytes());
        body.extend_from_slice(p.data);
        block(out, ENHANCED_PACKET, &body);
        let record = Record {
            offset: start + 28,
            caplen: p.data.len() as u32,
            wirelen: p.wirelen,
            ts_sec: p.ts_sec,
            ts_nsec: p.ts_nsec,
            dlt: p.dlt,
            interface: id,
        };
        units.push((start..out.len(), Some(record)));
    }

    /// The interface description block of one input interface.
    fn describe(&self, out: &mut Vec<u8>, (input, interface, dlt): InputInterface) {
        let name = match self.names.get(input as usize) {
            Some(name) => format!("{name} #{interface}"),
            None => format!("input {input} #{interface}"),
        };
        let mut body = Vec::with_capacity(32 + name.len());
        // pcapng carries LINKTYPE_ values, not this platform's DLT_ ones
        // (raw IP is 101 in the file, DLT 12 on Linux).
        let linktype = u16::try_from(dlt_to_linktype(dlt)).unwrap_or(u16::MAX);
        body.extend_from_slice(&linktype.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&Limits::default().max_caplen.to_le_bytes());
        option(&mut body, IF_NAME, name.as_bytes());
        option(&mut body, IF_TSRESOL, &[9]);
        option(&mut body, OPT_END, &[]);
        block(out, INTERFACE_DESCRIPTION, &body);
    }
}

/// How often at most the servers' counters are copied from the core for
/// --metrics (at least once per wait: 200 ms for packets, 500 ms for the
/// source to open).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Copies each server's counters from the core (its senders, in the order
/// first seen) into the registry, where a metrics scrape finds them: the
/// core's counters belong to the source, which this thread alone reads.
struct Publisher<'a> {
    registry: &'a Registry,
    /// The registry's entry of each of the core's senders, by index.
    upstreams: Vec<Arc<UpstreamStats>>,
    last: Option<Instant>,
}

impl Publisher<'_> {
    fn publish(&mut self, source: &Source) {
        if self.last.is_some_and(|t| t.elapsed() < PUBLISH_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        for i in self.upstreams.len()..source.sender_count() {
            let name = source
                .sender_address(i as u32)
                .unwrap_or_else(|| format!("input {i}"));
            self.upstreams.push(self.registry.upstream(&name));
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            if let Some(c) = source.sender_at(i) {
                // The core counts an outage when a server that was never
                // up fails once the source is open (another server is up);
                // an outage here is a connection lost, so no more of them
                // than connections that ended.
                let outages = c.outages.min(c.disconnects);
                u.copy(c.records, c.bytes, c.connects, outages, c.open > 0);
            }
        }
    }
}

/// Passes the core's messages (in the tool's words: the source was
/// started with them) on to the tool's log, naming --upstream.
fn forward_messages(source: &Source, spec: &str) {
    if source.has_messages() {
        for (level, message) in source.take_messages() {
            log::log!(level, "--upstream {spec}: {message}");
        }
    }
}

/// --upstream: reads `spec` with the plugin's core (several servers merged
/// in timestamp order; reconnecting as `config` says) and relays it as
/// pcapng. Returns when the core's stream ends (only without reconnect):
/// whether it opened.
pub fn run_upstream(fanout: &mut Fanout, spec: &str, config: Config, registry: &Registry) -> bool {
    let mut source = match Source::start_with_names(spec, config, words::upstream) {
        Ok(s) => s,
        Err(e) => {
            log::error!("--upstream {spec}: {}", e.render(words::upstream));
            return false;
        }
    };
    let mut publisher = Publisher {
        registry,
        upstreams: Vec::new(),
        last: None,
    };
    loop {
        publisher.publish(&source);
        forward_messages(&source, spec);
        match source.wait_open(Duration::from_millis(500)) {
            Opening::Open(dlt) => {
                log::info!("--upstream {spec}: open (link type {dlt})");
                break;
            }
            Opening::Waiting => {}
            Opening::Failed(e) => {
                forward_messages(&source, spec);
                log::error!("--upstream {spec}: {}", e.render(words::upstream));
                return false;
            }
        }
    }
    let mut writer = NgWriter::default();
    loop {
        publisher.publish(&source);
        forward_messages(&source, spec);
        writer.learn_names(&source);
        let (mut out, mut units) = (Vec::new(), Vec::new());
        let mut ended = false;
        while out.len() < BATCH {
            match source.next_packet() {
                Next::Packet(p) => writer.packet(&mut out, &mut units, &p),
                Next::Empty => break,
                Next::Ended => {
                    ended = true;
                    break;
                }
            }
        }
        if !units.is_empty() {
            fanout.send(&Bytes::from(out), &units);
        }
        if ended {
            publisher.last = None;
            publisher.publish(&source);
            forward_messages(&source, spec);
            log::info!("--upstream {spec}: the stream ended");
            source.close();
            return true;
        }
        if units.is_empty() {
            source.wait(Duration::from_millis(200));
        }
    }
}
