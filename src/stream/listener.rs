//! A listen endpoint (`tcp-listen://HOST:PORT`): binds at start-up, then
//! accepts senders for as long as the source runs. Each connection gets its
//! own thread and parser; a sender outside `allowed_senders` is closed at
//! once. The others are admitted ([`admission`]) once their TLS handshake
//! and whole stream header have arrived, within `header_timeout` of
//! accept: only then do they get a lane of the merge, an entry among the
//! senders' counters and a place among `max_senders`. Arrivals, departures
//! and refusals are reported with the sender's address, within the bound
//! of [`lines`].

mod admission;
mod lines;

use std::cell::OnceCell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::Instant;

use log::Level;
use socket2::{Domain, Protocol, Socket, Type};

pub(crate) use admission::Admission;
use admission::{Evicted, Ticket};
use lines::{Kind, Lines};

use crate::endpoint::Endpoint;
use crate::merge::Merge;
use crate::net::connect::{self, TICK};
use crate::net::poll;
use crate::shared::control::Control;
use crate::shared::counters::Counters;
use crate::shared::error::Error;
use crate::shared::facts::{Fact, Refusal};
use crate::shared::setting::Setting;
use crate::stream::reader::{read_error, End, Heard, Joined, Outlet, Reader};
use crate::tls::{self, HandshakeFailure, ServerTls, Transport};

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

/// What every connection of one listen endpoint shares.
struct Listener {
    endpoint: String,
    merge: Arc<Merge>,
    /// The source's pools, shared by all its listen endpoints.
    admission: Arc<Admission>,
    lines: Lines,
    tls: Option<ServerTls>,
    /// A `+zstd` endpoint: senders' streams are decompressed.
    zstd: bool,
}

/// Accepts senders until the source closes.
pub(crate) fn run(
    control: &Arc<Control>,
    merge: &Arc<Merge>,
    bound: Bound,
    tls: Option<ServerTls>,
    admission: Arc<Admission>,
) {
    let endpoint = bound.endpoint.to_string();
    let listener = Arc::new(Listener {
        lines: Lines::new(&endpoint),
        endpoint,
        merge: merge.clone(),
        admission,
        tls,
        zstd: bound.endpoint.scheme().is_zstd(),
    });
    let _holds: Vec<_> = bound
        .listeners
        .iter()
        .filter_map(|l| Some(control.hold_socket(Socket::from(l.try_clone().ok()?))))
        .collect();
    let mut polls: Vec<libc::pollfd> = bound
        .listeners
        .iter()
        .map(|l| poll::fd(l.as_raw_fd(), libc::POLLIN))
        .collect();
    while !control.stopping() {
        listener.lines.flush();
        // A failing poll is retried at the next tick, as a quiet one is.
        if !poll::wait(&mut polls, TICK).unwrap_or(false) {
            continue;
        }
        for l in &bound.listeners {
            if !accept_all(control, &listener, l) {
                return;
            }
        }
    }
}

/// Accepts every connection waiting on `l`; false once the source closes.
fn accept_all(control: &Arc<Control>, listener: &Arc<Listener>, l: &TcpListener) -> bool {
    loop {
        let (stream, peer) = match l.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) if control.stopping() => return false,
            Err(e) => {
                // Out of fds, say: report, pause, carry on.
                let line = format!("{}: accepting a sender failed: {e}", listener.endpoint);
                listener.lines.say(Kind::Other, Level::Warn, &line);
                control.sleep(TICK);
                return true;
            }
        };
        let accepted = Instant::now();
        let ip = peer.ip().to_canonical();
        let allowed = &control.config.allowed_senders;
        if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(&ip)) {
            listener.lines.refused(
                peer,
                Refusal::Acl,
                "it is not in PcapOverTcp::allowed_senders",
            );
            continue;
        }
        let socket = Socket::from(stream);
        let ticket = match socket.try_clone() {
            Ok(handle) => listener.admission.enter(handle),
            Err(e) => {
                let line = format!("{}: sender {peer}: cannot take it: {e}", listener.endpoint);
                listener.lines.say(Kind::Other, Level::Warn, &line);
                continue;
            }
        };
        let pending = Pending {
            socket,
            peer,
            accepted,
            ticket,
        };
        let shared = listener.clone();
        let spawned = control.spawn(format!("pcapovertcp sender {peer}"), move |c| {
            serve(c, &shared, pending);
        });
        if let Err(e) = spawned {
            let line = format!(
                "{}: cannot start a thread for sender {peer}: {e}",
                listener.endpoint
            );
            listener.lines.say(Kind::Other, Level::Warn, &line);
        }
    }
}

/// An accepted connection, not yet admitted.
struct Pending {
    socket: Socket,
    peer: SocketAddr,
    accepted: Instant,
    /// Its place in the pending pool, then among the admitted senders.
    ticket: Ticket,
}

/// One connection, from accept to its end.
fn serve(control: &Control, listener: &Listener, pending: Pending) {
    let Pending {
        socket,
        peer,
        accepted,
        ticket,
    } = pending;
    let lines = &listener.lines;
    // Names the listener and the sender in every line about it.
    let label = format!("{}: sender {peer}", listener.endpoint);
    if let Err(e) = socket
        .set_nonblocking(false)
        .and_then(|()| connect::set_up(&socket, &control.config))
    {
        let line = format!("{label}: cannot set the socket up: {e}");
        lines.say(Kind::Other, Level::Warn, &line);
        return;
    }
    let _hold = socket.try_clone().map(|s| control.hold_socket(s));
    // The handshake and the header together, from accept.
    let deadline = control.config.header_timeout.map(|t| accepted + t);
    let mut transport = match &listener.tls {
        None => Transport::plain(socket.into()),
        Some(tls) => match tls.accept(socket.into()) {
            Ok(t) => t,
            Err(e) => {
                let line = format!("{label}: cannot start TLS: {e}");
                lines.say(Kind::Other, Level::Warn, &line);
                return;
            }
        },
    };
    if let Err(e) = handshake(control, &mut transport, &label, deadline) {
        // The reason without the endpoint and sender the event names.
        if let Some(Error::Tls { what, .. }) = &e {
            lines.refused_quietly(peer, Refusal::Tls, what);
        }
        let end = e.map_or(End::Stopped, End::Failed);
        report(lines, &label, ticket.evicted(), end, false, 0);
        return;
    }
    if listener.zstd {
        transport = transport.zstd();
    }
    // Bytes before admission count here, and move to the sender's counters
    // when it is admitted; a connection never admitted leaves no entry.
    let unadmitted = Counters::default();
    let joined: OnceCell<Joined> = OnceCell::new();
    let sender = peer.ip().to_canonical().to_string();
    let socket = transport.watch();
    let reader = Reader {
        control,
        label: &label,
        source: &listener.endpoint,
        sender: &sender,
        counters: &unadmitted,
        outlet: Outlet::Joined(&joined),
        opens_source: false,
        header_deadline: deadline,
    };
    let (end, packets) = reader.read(&mut transport, &mut |parser, lt| {
        crate::shared::logger::debug!(
            "{label}: {} stream, link type {lt}",
            parser.format_name().unwrap_or("?")
        );
        let joining = Joining {
            listener,
            ticket: &ticket,
            peer,
            label: &label,
            socket: socket.clone(),
        };
        let joined_now = joining.admit(control, unadmitted.snapshot().bytes)?;
        let _ = joined.set(joined_now);
        Ok(())
    });
    let _ = transport.tcp().shutdown(std::net::Shutdown::Both);
    let joined = joined.into_inner();
    let admitted = joined.is_some();
    if let Some(j) = joined {
        j.counters.disconnected();
        // Its lane ends here.
        if !matches!(end, End::Stopped) {
            control.messages.fact(Fact::SenderLeft {
                source: listener.endpoint.clone(),
                sender,
                packets,
            });
        }
    }
    // Its place is free before its departure is reported: a sender that
    // reconnects at once is not refused.
    let evicted = ticket.evicted();
    drop(ticket);
    report(lines, &label, evicted, end, admitted, packets);
}

/// A connection whose header is whole, asking to be admitted.
struct Joining<'a> {
    listener: &'a Listener,
    ticket: &'a Ticket,
    peer: SocketAddr,
    label: &'a str,
    /// Its socket, which its lane watches for unread bytes.
    socket: Weak<TcpStream>,
}

impl Joining<'_> {
    /// Admits the sender: its place, its counters (with the `bytes` it sent
    /// before) and its lane; or refuses it, saying why.
    fn admit(&self, control: &Control, bytes: u64) -> Result<Joined, End> {
        let heard = Arc::new(Heard::default());
        let lines = &self.listener.lines;
        if let Err(full) = self.listener.admission.admit(self.ticket, heard.clone()) {
            // (One closed to make room meanwhile is reported at its end.)
            if self.ticket.evicted().is_none() {
                let why = format!(
                    "PcapOverTcp::max_senders ({}) senders are connected, and none has been silent for {:.1} s",
                    full.max_senders,
                    full.silent_max.as_secs_f64()
                );
                lines.refused(self.peer, Refusal::Limit, &why);
            }
            return Err(End::Refused);
        }
        let ip = self.peer.ip().to_canonical().to_string();
        let (input, counters) = control.counters.sender_indexed(&ip);
        counters.add_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
        counters.connected();
        let lane = self
            .listener
            .merge
            .lane(counters.clone(), input, self.label);
        lane.watch(self.socket.clone());
        let line = format!("{} connected", self.label);
        lines.say(Kind::Admitted, Level::Info, &line);
        control.messages.fact(Fact::SenderConnected {
            source: self.listener.endpoint.clone(),
            sender: ip,
        });
        Ok(Joined {
            counters,
            lane,
            heard,
        })
    }
}

/// Reports how a connection ended, in one line (or none when the source is
/// closing, or when it was refused, which was reported then).
fn report(
    lines: &Lines,
    label: &str,
    evicted: Option<Evicted>,
    end: End,
    admitted: bool,
    packets: u64,
) {
    let (level, line) = match (evicted, end) {
        (_, End::Stopped | End::Refused) => return,
        (Some(Evicted::Pending { after, pool }), _) => (
            Level::Warn,
            format!(
                "{label} was closed after {:.1} s without a whole pcap header, to make room: {pool} connections were waiting for admission (the most a listener keeps) and it had waited longest",
                after.as_secs_f64()
            ),
        ),
        (Some(Evicted::Silent { for_, max_senders }), _) => (
            Level::Warn,
            format!(
                "{label} was closed after {} to admit a new sender: it had sent no packet for {:.1} s, and PcapOverTcp::max_senders ({max_senders}) senders were connected",
                count(packets),
                for_.as_secs_f64()
            ),
        ),
        (None, End::PeerClosed) if admitted => {
            (Level::Info, format!("{label} left after {}", count(packets)))
        }
        (None, End::PeerClosed) => return,
        (None, End::Failed(e)) => (
            Level::Warn,
            format!("{e}; its connection was closed after {}", count(packets)),
        ),
    };
    let kind = if admitted {
        Kind::Admitted
    } else {
        Kind::Other
    };
    lines.say(kind, level, &line);
}

/// "1 packet", "2 packets".
fn count(packets: u64) -> String {
    match packets {
        1 => "1 packet".into(),
        n => format!("{n} packets"),
    }
}

/// Completes a TLS sender's handshake by `deadline`; `Err(None)` when the
/// source is closing.
fn handshake(
    control: &Control,
    transport: &mut Transport,
    label: &str,
    deadline: Option<Instant>,
) -> Result<(), Option<Error>> {
    tls::handshake(transport, deadline, &|| control.stopping()).map_err(|e| match e {
        HandshakeFailure::Stopped => None,
        HandshakeFailure::TimedOut => Some(Error::HandshakeTimeout {
            endpoint: label.to_string(),
            seconds: control
                .config
                .header_timeout
                .unwrap_or_default()
                .as_secs_f64(),
            setting: Setting::HeaderTimeout,
        }),
        HandshakeFailure::Failed(e) => Some(read_error(label, e)),
    })
}
