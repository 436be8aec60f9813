//! A listen endpoint (`tcp-listen://HOST:PORT`): binds at start-up, then
//! accepts senders for as long as the source runs. Each sender gets its own
//! thread, parser and lane of the merge; its arrival and departure are
//! reported once, with its packet count. A sender outside
//! `allowed_senders`, or one over `max_senders`, is closed at once and
//! reported (at most once per address every [`REPORT_EVERY`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::connect::{self, TICK};
use crate::connection::{read_error, Connection, End, Outlet};
use crate::control::Control;
use crate::counters::Counters;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::merge::{Lane, Merge};
use crate::poll;
use crate::tls::{ServerTls, Transport};

/// Refusals of one address are reported at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Addresses remembered for rate-limiting refusals; beyond, forgotten.
const REFUSALS_KEPT: usize = 4096;

/// The bound sockets of one listen endpoint.
pub(crate) struct Bound {
    endpoint: Endpoint,
    listeners: Vec<TcpListener>,
}

impl Bound {
    /// The local addresses, as bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds every address of `endpoint` (one dual-stack socket for an empty
/// host), so that a port in use is an error at start-up.
pub(crate) fn bind(endpoint: &Endpoint) -> Result<Bound, Error> {
    let failed = |source: io::Error| Error::Listen {
        endpoint: endpoint.to_string(),
        source,
    };
    let addrs = endpoint.bind_addrs().map_err(failed)?;
    let mut listeners = Vec::new();
    if endpoint.host().is_empty() {
        // Every address: [::] taking IPv4 too, or 0.0.0.0 without IPv6.
        let mut last = None;
        for addr in &addrs {
            match bind_one(addr, false) {
                Ok(l) => {
                    listeners.push(l);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(failed(e)),
                Err(e) => last = Some(e),
            }
        }
        if listeners.is_empty() {
            return Err(failed(
                last.unwrap_or_else(|| io::Error::other("no address")),
            ));
        }
    } else {
        for addr in &addrs {
            listeners.push(bind_one(addr, true).map_err(failed)?);
        }
    }
    if listeners.is_empty() {
        return Err(failed(io::Error::other("the host resolves to no address")));
    }
    Ok(Bound {
        endpoint: endpoint.clone(),
        listeners,
    })
}

fn bind_one(addr: &SocketAddr, only_v6: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.bind(&(*addr).into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts senders until the source closes.
pub(crate) fn run(
    control: &Arc<Control>,
    merge: &Arc<Merge>,
    bound: Bound,
    tls: Option<ServerTls>,
) {
    let endpoint = bound.endpoint.to_string();
    let _holds: Vec<_> = bound
        .listeners
        .iter()
        .filter_map(|l| Some(control.hold_socket(Socket::from(l.try_clone().ok()?))))
        .collect();
    let active = Arc::new(AtomicUsize::new(0));
    let mut refusals = Refusals::default();
    let mut polls: Vec<libc::pollfd> = bound
        .listeners
        .iter()
        .map(|l| poll::fd(l.as_raw_fd(), libc::POLLIN))
        .collect();
    while !control.stopping() {
        // A failing poll is retried at the next tick, as a quiet one is.
        if !poll::wait(&mut polls, TICK).unwrap_or(false) {
            continue;
        }
        for listener in &bound.listeners {
            loop {
                let (stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) if control.stopping() => return,
                    Err(e) => {
                        // Out of fds, say: report, pause, carry on.
                        log::warn!("{endpoint}: accepting a sender failed: {e}");
                        control.sleep(TICK);
                        break;
                    }
                };
                let ip = peer.ip().to_canonical();
                let allowed = &control.config.allowed_senders;
                if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(&ip)) {
                    refusals.report(&endpoint, peer, "it is not in PcapOverTcp::allowed_senders");
                    continue;
                }
                let max = control.config.max_senders;
                if active.load(Ordering::Acquire) >= max {
                    refusals.report(
                        &endpoint,
                        peer,
                        &format!("PcapOverTcp::max_senders ({max}) senders are connected"),
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let slot = Slot(active.clone());
                // The lane opens here, in accept order, before the sender's
                // thread runs: a sender accepted later must not have its
                // packets released before this one is waited for.
                let (input, counters) = control.counters.sender_indexed(&ip.to_string());
                let lane = merge.lane(
                    counters.clone(),
                    input,
                    &format!("{endpoint}: sender {peer}"),
                );
                let listen = endpoint.clone();
                let tls = tls.clone();
                let spawned = control.spawn(format!("pcapovertcp sender {peer}"), move |c| {
                    let joined = Joined {
                        counters,
                        lane,
                        slot,
                    };
                    serve(c, &listen, stream, peer, joined, tls.as_ref());
                });
                if let Err(e) = spawned {
                    log::warn!("{endpoint}: cannot start a thread for sender {peer}: {e}");
                }
            }
        }
    }
}

/// Counts a sender as connected until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an accepted sender has from the start: its counters, its lane of
/// the merge, and its place among `max_senders`.
struct Joined {
    counters: Arc<Counters>,
    lane: Lane,
    slot: Slot,
}

/// One sender's connection, from accept to its end.
fn serve(
    control: &Control,
    listen: &str,
    stream: TcpStream,
    peer: SocketAddr,
    joined: Joined,
    tls: Option<&ServerTls>,
) {
    let Joined {
        counters,
        lane,
        slot,
    } = joined;
    let socket = Socket::from(stream);
    if let Err(e) = socket
        .set_nonblocking(false)
        .and_then(|()| connect::set_up(&socket, &control.config))
    {
        log::warn!("{listen}: sender {peer}: cannot set the socket up: {e}");
        return;
    }
    let _hold = socket.try_clone().map(|s| control.hold_socket(s));
    let stream: TcpStream = socket.into();
    // Names the listener and the sender in every line about it.
    let label = format!("{listen}: sender {peer}");
    let mut transport = match tls {
        None => Transport::Plain(stream),
        Some(tls) => match tls.accept(stream) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{label}: cannot start TLS: {e}");
                return;
            }
        },
    };
    // A TLS sender counts as connected once its handshake is through: one
    // refused by it was never a sender.
    if let Err(e) = handshake(control, &mut transport, &label) {
        if let Some(e) = e {
            log::warn!("{e}; its connection was closed after 0 packets");
        }
        return;
    }
    counters.connected();
    log::info!("{label} connected");
    let connection = Connection {
        control,
        label: &label,
        counters: &counters,
        outlet: Outlet::Lane(&lane),
        opens_source: false,
        header_timeout: control.config.header_timeout,
    };
    let (end, packets) = connection.read(&mut transport, &mut |parser, lt| {
        log::debug!(
            "{label}: {} stream, link type {lt}",
            parser.format_name().unwrap_or("?")
        );
    });
    drop(lane);
    counters.disconnected();
    let _ = transport.tcp().shutdown(std::net::Shutdown::Both);
    // Its place is free before its departure is reported: a sender that
    // reconnects at once is not refused.
    drop(slot);
    match end {
        End::Stopped => {}
        End::Closed => log::info!("{label} left after {}", count(packets)),
        End::Failed(e) => log::warn!("{e}; its connection was closed after {}", count(packets)),
    }
}

/// "1 packet", "2 packets".
fn count(packets: u64) -> String {
    match packets {
        1 => "1 packet".into(),
        n => format!("{n} packets"),
    }
}

/// Completes a TLS sender's handshake, within `header_timeout`; `Err(None)`
/// when the source is closing.
fn handshake(
    control: &Control,
    transport: &mut Transport,
    label: &str,
) -> Result<(), Option<Error>> {
    let Transport::Tls(tls) = transport else {
        return Ok(());
    };
    let started = Instant::now();
    while !tls.handshake_done() {
        if control.stopping() {
            return Err(None);
        }
        match tls.handshake_step() {
            Ok(()) => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                if let Some(limit) = control.config.header_timeout {
                    if started.elapsed() >= limit {
                        return Err(Some(Error::HeaderTimeout {
                            endpoint: label.to_string(),
                            seconds: limit.as_secs_f64(),
                            bytes: 0,
                        }));
                    }
                }
            }
            Err(_) if control.stopping() => return Err(None),
            Err(e) => return Err(Some(read_error(label, e))),
        }
    }
    Ok(())
}

/// Remembers refused addresses, so that a sender retrying in a loop is
/// reported once per [`REPORT_EVERY`], with how often it was refused since.
#[derive(Default)]
struct Refusals {
    /// When the address was last reported, and refusals since.
    seen: HashMap<IpAddr, (Option<Instant>, u64)>,
}

impl Refusals {
    fn report(&mut self, endpoint: &str, peer: SocketAddr, why: &str) {
        if self.seen.len() >= REFUSALS_KEPT {
            self.seen.clear();
        }
        let now = Instant::now();
        let entry = self.seen.entry(peer.ip()).or_insert((None, 0));
        if entry
            .0
            .is_some_and(|last| now.duration_since(last) < REPORT_EVERY)
        {
            entry.1 += 1;
            return;
        }
        let since = match entry.1 {
            0 => String::new(),
            n => format!(" (refused {n} more times from this address since the last report)"),
        };
        *entry = (Some(now), 0);
        log::warn!("{endpoint}: refused sender {peer}: {why}{since}");
    }
}
