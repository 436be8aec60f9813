//! The tool's modes: listening (a file, or the live relay of standard
//! input, --exec or --upstream, optionally in --shards) and dialling out
//! (--connect).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pcapovertcp::endpoint::Endpoint;
use pcapovertcp::setting;
use socket2::{Domain, Protocol, Socket, Type};

use crate::admit::{Admission, Slot};
use crate::client_log;
use crate::conn::{self, accept, dial, finish, tls_setup, Conn, Tls, RETRY_MAX, RETRY_MIN};
use crate::file::{load, serve_file, Framed};
use crate::hub::{Budget, Client, Ended, Hub, Refusal};
use crate::input::{run_exec, Fanout};
use crate::logging;
use crate::merged::run_upstream;
use crate::metrics;
use crate::output::Stdout;
use crate::spool::SpoolDir;
use crate::stats::{ClientStats, Registry, State};
use crate::upstream::{self, Direct};
use crate::words;
use crate::Options;

/// Listening sockets' backlog.
const BACKLOG: i32 = 1024;
/// After accept fails for want of a resource (file descriptors, memory),
/// the next attempt waits this long: the connection stays in the backlog.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// After another accept error (a connection reset before it was taken).
const ACCEPT_RETRY: Duration = Duration::from_millis(5);
/// Accept errors are logged at most this often per listener.
const ACCEPT_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Runs the tool. Errors before anything is served (TLS files, the file to
/// serve, listening, the port file) are returned, to be printed as one line.
pub fn run(o: &Options) -> Result<ExitCode, String> {
    let tls = tls_setup(o)?;
    let direct = match &o.upstream {
        Some(spec) => upstream::direct(spec, &o.upstream_tls)?,
        None => None,
    };
    let direct = direct.as_ref();
    let live = o.live();
    let framed = if live { None } else { Some(load(&o.input)?) };
    let registry = Arc::new(Registry::new(live));
    logging::handle_signals(registry.clone())
        .map_err(|e| format!("cannot set up the signal handlers: {e}"))?;
    if let Some(addr) = o.metrics {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on --metrics {addr}: {e}"))?;
        let local = listener.local_addr().unwrap_or(addr);
        metrics::serve(listener, registry.clone())
            .map_err(|e| format!("cannot start the --metrics thread: {e}"))?;
        log::info!("metrics on http://{local}/metrics");
    }
    if o.stdout {
        return stdout_relay(o, direct, &registry);
    }
    if !o.connect.is_empty() {
        return Ok(match framed {
            None => connect_relay(o, &tls, direct, &registry),
            Some(framed) => connect_file(o, &tls, &framed, &registry),
        });
    }
    let listeners = listen_all(o)?;
    let admission = Arc::new(Admission::new(
        o.allow.clone(),
        o.max_clients(),
        matches!(tls, Tls::Server(_)),
    ));
    let accepted = accept_all(listeners, &admission);
    let clients = Clients {
        tls,
        admission,
        write_timeout: o.write_timeout(),
    };
    Ok(match framed {
        None => listen_relay(o, &clients, direct, accepted, &registry),
        Some(framed) => listen_file(o, &clients, &framed, accepted, &registry),
    })
}

/// One listening socket. Among several, an IPv6 one is IPv6-only, so that
/// 0.0.0.0:P and [::]:P can both be given.
fn listen_on(addr: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && v6_only {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Binds the --shards ports of one --listen address: PORT..PORT+N-1
/// (with port 0, N consecutive free ports, tried a few times).
fn listen_shards(addr: SocketAddr, shards: u16, v6_only: bool) -> io::Result<Vec<TcpListener>> {
    let mut tries = 0;
    loop {
        let first = listen_on(addr, v6_only)?;
        let base = first.local_addr()?.port();
        let mut group = vec![first];
        let mut failed = None;
        for k in 1..shards {
            let Some(port) = base.checked_add(k) else {
                failed = Some(io::Error::other("the ports of the shards go past 65535"));
                break;
            };
            let mut at = addr;
            at.set_port(port);
            match listen_on(at, v6_only) {
                Ok(l) => group.push(l),
                Err(e) => {
                    failed = Some(io::Error::new(
                        e.kind(),
                        format!("port {port} (shard {k}): {e}"),
                    ));
                    break;
                }
            }
        }
        match failed {
            None => return Ok(group),
            Some(e) if addr.port() != 0 || tries >= 20 => return Err(e),
            Some(_) => tries += 1,
        }
    }
}

/// Listens on every --listen (each --shards port of each); reports each,
/// then writes the port file. Each listener with its shard.
fn listen_all(o: &Options) -> Result<Vec<(usize, TcpListener, bool)>, String> {
    let several = o.listen().len() > 1;
    let mut listeners = Vec::new();
    let mut ports = String::new();
    for (addr, zstd) in o.listen().into_iter().zip(o.listen_zstd()) {
        let group = listen_shards(addr, o.shards, several)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        for (k, l) in group.into_iter().enumerate() {
            let local = l.local_addr().unwrap_or(addr);
            if o.shards > 1 {
                log::info!("listening on {local} for shard {k} of {}", o.shards);
            } else {
                log::info!("listening on {local}");
            }
            ports.push_str(&format!("{}\n", local.port()));
            listeners.push((k, l, zstd));
        }
    }
    if let Some(path) = &o.port_file {
        // Written whole, then renamed, so a reader never sees a partial port.
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, ports)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(listeners)
}

/// An accepted client: its listener's shard, its socket, its address
/// (taken from accept(), which has it even when the connection is already
/// reset and the socket can no longer tell), its place (--max-clients) and
/// whether its listener compresses (a tcp+zstd:// --listen).
struct Incoming {
    shard: usize,
    zstd: bool,
    tcp: TcpStream,
    peer: String,
    slot: Slot,
}

/// What serving a listening client takes besides its connection.
#[derive(Clone)]
struct Clients {
    tls: Tls,
    admission: Arc<Admission>,
    /// --write-timeout.
    write_timeout: Duration,
}

impl Clients {
    /// The connection after the TLS handshake (bounded), with the write
    /// timeout set; over TLS, `slot` (a handshake's) is traded for a
    /// client's. None (reported) when the client cannot be served.
    fn open(&self, tcp: TcpStream, peer: &str, slot: Slot, zstd: bool) -> Option<(Conn, Slot)> {
        let conn = match accept(tcp, &self.tls, zstd) {
            Ok(c) => c,
            Err(e) => {
                client_log!(log::Level::Warn, "{peer}: {e}");
                return None;
            }
        };
        let slot = match self.admission.handshakes {
            Some(_) => match self.admission.client() {
                Ok(s) => s,
                Err(why) => {
                    client_log!(log::Level::Warn, "client {peer}: refused: {why}");
                    return None;
                }
            },
            None => slot,
        };
        if let Err(e) = conn.tcp().set_write_timeout(Some(self.write_timeout)) {
            client_log!(log::Level::Warn, "client {peer}: {e}");
            return None;
        }
        Some((conn, slot))
    }

    /// How a write to the client failed, in words: a write timeout is
    /// --write-timeout's doing.
    fn why(&self, e: &io::Error) -> String {
        if stalled(e) {
            format!(
                "it took no byte for {} s (--write-timeout); closed it",
                self.write_timeout.as_secs()
            )
        } else {
            e.to_string()
        }
    }
}

/// Whether a write failed by its timeout.
fn stalled(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Accept errors of one listener, logged at most every ACCEPT_REPORT_EVERY.
struct AcceptErrors {
    local: String,
    last: Option<Instant>,
    since: u64,
}

impl AcceptErrors {
    fn failed(&mut self, e: &io::Error) {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < ACCEPT_REPORT_EVERY)
        {
            return;
        }
        log::warn!(
            "accepting on {}: {e}{}; connections wait in the backlog meanwhile (accept errors are logged at most every {} s; {} since the last line)",
            self.local,
            if resource_error(e) {
                " (at the file descriptor limit? see ulimit -n and --max-clients); pausing 100 ms between attempts"
            } else {
                ""
            },
            ACCEPT_REPORT_EVERY.as_secs(),
            self.since
        );
        self.last = Some(now);
        self.since = 0;
    }
}

/// Whether an accept error is for want of a resource, which another
/// attempt at once would meet again.
fn resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts on every listener, each on its own thread; the connections that
/// --allow and --max-clients admit come out of one channel, the others are
/// closed at once. An accept error is survived: a pause (ACCEPT_PAUSE when
/// out of a resource), not a busy loop, and a rate-limited line.
fn accept_all(
    listeners: Vec<(usize, TcpListener, bool)>,
    admission: &Arc<Admission>,
) -> mpsc::Receiver<Incoming> {
    let (tx, rx) = mpsc::channel();
    for (shard, l, zstd) in listeners {
        let tx = tx.clone();
        let admission = admission.clone();
        let mut errors = AcceptErrors {
            local: l
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            last: None,
            since: 0,
        };
        thread::spawn(move || loop {
            match l.accept() {
                Ok((tcp, peer)) => {
                    if !admission.allowed(peer.ip()) {
                        client_log!(
                            log::Level::Warn,
                            "client {peer}: refused: its address is not in --allow"
                        );
                        continue;
                    }
                    let slot = match admission.arrive() {
                        Ok(s) => s,
                        Err(why) => {
                            client_log!(log::Level::Warn, "client {peer}: refused: {why}");
                            continue;
                        }
                    };
                    let peer = peer.to_string();
                    if tx
                        .send(Incoming {
                            shard,
                            zstd,
                            tcp,
                            peer,
                            slot,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    errors.failed(&e);
                    thread::sleep(if resource_error(&e) {
                        ACCEPT_PAUSE
                    } else {
                        ACCEPT_RETRY
                    });
                }
            }
        });
    }
    rx
}

/// Starts `work` on its own thread, not keeping its handle (a finished
/// client keeps nothing). When no thread can be started, the client is
/// refused: `work` (and the connection it holds) is dropped, with a line.
fn spawn_client(peer: &str, work: impl FnOnce() + Send + 'static) {
    let work = move || {
        // The core's messages in this thread name the tool's flags.
        setting::use_names(words::serve);
        work()
    };
    if let Err(e) = thread::Builder::new().spawn(work) {
        client_log!(
            log::Level::Warn,
            "client {peer}: refused: cannot start a thread for it: {e}"
        );
    }
}

/// Relays the live input (standard input, --exec or --upstream: `direct`
/// when it is one server) until it ends, then lets every client have its
/// stream and prints the counters; the tool's exit status from how the
/// input ended.
fn relay_input(
    o: &Options,
    direct: Option<&Direct>,
    fanout: &mut Fanout,
    registry: &Registry,
) -> ExitCode {
    let ok = if let Some(cmd) = &o.exec {
        run_exec(fanout, cmd, o.once)
    } else if let Some(one) = direct {
        one.run(fanout, o.once, registry)
    } else if let Some(spec) = &o.upstream {
        let config = pcapovertcp::Config {
            reconnect: !o.once,
            reconnect_min: RETRY_MIN,
            reconnect_max: RETRY_MAX,
            tls: o.upstream_tls.clone(),
            merge_window: o.merge_window(),
            ..pcapovertcp::Config::default()
        };
        run_upstream(fanout, spec, config, registry)
    } else {
        match fanout.relay(io::stdin().lock(), "standard input") {
            Ok(_) => true,
            Err(e) => {
                log::error!("standard input: {e}");
                false
            }
        }
    };
    fanout.end();
    fanout.drain();
    registry.print();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Listening, the live input relayed through the hubs (one per shard).
fn listen_relay(
    o: &Options,
    clients: &Clients,
    direct: Option<&Direct>,
    accepted: mpsc::Receiver<Incoming>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let budget = Budget::new(o.max_buffer);
    let spool = spool_dir(o);
    let hubs: Vec<Arc<Hub>> = (0..o.shards)
        .map(|_| {
            Arc::new(
                Hub::new(
                    o.client_buffer,
                    o.slow_client,
                    registry.clone(),
                    budget.clone(),
                )
                .spooling(spool.clone()),
            )
        })
        .collect();
    let sharded = o.shards > 1;
    {
        let (hubs, registry) = (hubs.clone(), registry.clone());
        let clients = Arc::new(clients.clone());
        thread::spawn(move || {
            for incoming in accepted {
                let (hub, registry) = (hubs[incoming.shard].clone(), registry.clone());
                let clients = clients.clone();
                let shard = sharded.then_some(incoming.shard);
                let peer = incoming.peer.clone();
                // Its own thread: the TLS handshake, then the writer.
                spawn_client(&peer, move || {
                    relay_client(incoming, &clients, &hub, &registry, shard)
                });
            }
        });
    }
    let mut fanout = Fanout::new(hubs, o.shard_by());
    // The input is not read before enough clients are connected.
    fanout.wait_for_clients(o.wait_clients());
    relay_input(o, direct, &mut fanout, registry)
}

/// One client of the relay, from its TLS handshake to the end of its stream.
fn relay_client(
    incoming: Incoming,
    clients: &Clients,
    hub: &Hub,
    registry: &Registry,
    shard: Option<usize>,
) {
    let Incoming {
        tcp,
        peer,
        slot,
        zstd,
        ..
    } = incoming;
    let _ = tcp.set_nodelay(true);
    let handle = match tcp.try_clone() {
        Ok(h) => h,
        Err(e) => {
            client_log!(log::Level::Warn, "client {peer}: refused: {e}");
            return;
        }
    };
    // Held until the client's stream is over.
    let Some((mut conn, _slot)) = clients.open(tcp, &peer, slot, zstd) else {
        return;
    };
    let (name, label) = match shard {
        Some(k) => (
            format!("client {peer} (shard {k})"),
            format!("client={peer} shard={k}"),
        ),
        None => (format!("client {peer}"), format!("client={peer}")),
    };
    // A shard's consumer that was away: this client takes over its queue
    // (the stream's header, then what it missed).
    if let Some(kept) = shard.and_then(|_| hub.take_kept()) {
        let (bytes, packets) = kept.queued();
        let resumed = handle
            .try_clone()
            .is_ok_and(|again| hub.resume(&kept, again));
        if resumed {
            client_log!(
                log::Level::Info,
                "{name} connected; it gets the stream's header, then the {packets} packets queued while the shard's consumer was away ({bytes} bytes)"
            );
            return serve_client(kept, conn, clients, hub, shard, &name);
        }
        kept.give_up();
        hub.leave(&kept);
    }
    let stats = registry.add(label);
    let join = match shard {
        // A shard's consumer is known: its queue outlives its connection.
        Some(_) => hub.join_kept(name.clone(), handle, stats.clone()),
        None => hub.join(name.clone(), Some(handle), stats.clone()),
    };
    let client = match join {
        Ok(c) => c,
        Err(Refusal::Ended) => {
            stats.finish(State::Ended);
            let _ = conn.end();
            return;
        }
        Err(Refusal::Incomplete) => {
            stats.finish(State::Ended);
            client_log!(
                log::Level::Warn,
                "{name}: refused: the input's header blocks are too large to be kept whole, so it cannot be given a valid stream until the input restarts"
            );
            return;
        }
    };
    client_log!(log::Level::Info, "{name} connected");
    serve_client(client, conn, clients, hub, shard, &name)
}

/// A relay client's stream, until it ends (a shard's consumer whose
/// connection broke is kept for the port's next client).
fn serve_client(
    client: Arc<Client>,
    mut conn: Conn,
    clients: &Clients,
    hub: &Hub,
    shard: Option<usize>,
    name: &str,
) {
    let stats = client.stats().clone();
    let ended = client.run(&mut conn);
    if let Ended::Away { error, in_flight } = &ended {
        if shard.is_some() && hub.keep_away(&client) {
            let (bytes, packets) = client.queued();
            client_log!(
                log::Level::Warn,
                "{name} left ({error}); {in_flight} packets sent were not acknowledged by it (lost in flight); keeping the shard's queue ({packets} packets, {bytes} bytes; --client-buffer {}) for the next client of its port: it gets the stream's header, then what it missed",
                hub.limit()
            );
            hub.set_kept(client);
            return;
        }
        client.give_up();
    }
    // The state and the message before leaving: the last client's leaving
    // lets the tool print the counters and end.
    match ended {
        Ended::Drained => {
            stats.finish(State::Ended);
            client_log!(
                log::Level::Info,
                "{name}: stream ended; {}",
                stats.summary()
            );
        }
        // Only a --connect target is kept away; a client's is lost.
        Ended::Lost(e) | Ended::Away { error: e, .. } if stalled(&e) => {
            stats.finish(State::Stalled);
            client_log!(
                log::Level::Warn,
                "{name}: {}; {}",
                clients.why(&e),
                stats.summary()
            );
        }
        Ended::Lost(e) | Ended::Away { error: e, .. } => {
            stats.finish(State::Lost);
            client_log!(log::Level::Info, "{name} left ({e}); {}", stats.summary());
        }
        Ended::NewStream => {
            stats.finish(State::Ended);
            client_log!(
                log::Level::Info,
                "{name}: stream ended (the input restarted with a different header); {}",
                stats.summary()
            );
        }
        // Reported when it was closed.
        Ended::Slow | Ended::Stalled => {}
    }
    hub.leave(&client);
}

/// The client threads of a file still running, to wait for at the end
/// (their handles are not kept: a finished thread keeps nothing).
#[derive(Default)]
struct Running {
    count: Mutex<usize>,
    done: Condvar,
}

/// One running client thread, counted until it is dropped.
struct RunningGuard(Arc<Running>);

impl Running {
    fn start(self: &Arc<Self>) -> RunningGuard {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        RunningGuard(self.clone())
    }

    fn wait_all(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.done.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        *self.0.count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.done.notify_all();
    }
}

/// Listening, a file: each client gets all of it at its own pace.
fn listen_file(
    o: &Options,
    clients: &Clients,
    framed: &Arc<Framed>,
    accepted: mpsc::Receiver<Incoming>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let running = Arc::new(Running::default());
    let clients = Arc::new(clients.clone());
    // Clients held back until --wait-clients of them are connected.
    let mut waiting = Vec::new();
    let mut started = false;
    for (n, client) in accepted.into_iter().enumerate() {
        waiting.push(client);
        let served = n as u64 + 1;
        let last = o.clients.is_some_and(|n| served >= n);
        if waiting.len() < o.wait_clients() && !started && !last {
            continue;
        }
        // Once started, later clients are served as they come.
        started = true;
        for Incoming {
            tcp,
            peer,
            slot,
            zstd,
            ..
        } in waiting.drain(..)
        {
            let (framed, clients, registry) = (framed.clone(), clients.clone(), registry.clone());
            let (loops, rate) = (o.loops, o.rate);
            let running = running.start();
            let name = peer.clone();
            spawn_client(&name, move || {
                let _running = running;
                let Some((mut conn, _slot)) = clients.open(tcp, &peer, slot, zstd) else {
                    return;
                };
                let stats = registry.add(format!("client={peer}"));
                client_log!(log::Level::Info, "client {peer} connected");
                match serve_file(&mut conn, &framed, loops, rate, &stats) {
                    Ok(()) => {
                        let _ = conn.end();
                        stats.finish(State::Ended);
                        client_log!(
                            log::Level::Info,
                            "client {peer}: sent the whole file; {}",
                            stats.summary()
                        );
                    }
                    Err(e) => {
                        stats.finish(if stalled(&e) {
                            State::Stalled
                        } else {
                            State::Lost
                        });
                        client_log!(
                            log::Level::Warn,
                            "client {peer}: {}; {}",
                            clients.why(&e),
                            stats.summary()
                        );
                    }
                }
            });
        }
        if last {
            break;
        }
    }
    running.wait_all();
    registry.print();
    ExitCode::SUCCESS
}

/// Keeps a --connect target served: dials it (with the core's backoff and
/// once-per-outage lines), runs `session` on the connection with the
/// target's counters, and redials while `session` says to (after a pause
/// that starts again at its minimum when the connection lasted).
fn redial(
    target: &Endpoint,
    tls: &Tls,
    registry: &Registry,
    mut session: impl FnMut(&mut Conn, &Arc<ClientStats>) -> bool,
) {
    // The core's messages on this thread name the tool's flags.
    setting::use_names(words::serve);
    let mut backoff = conn::backoff();
    loop {
        let mut conn = dial(target, tls, &mut backoff);
        let since = Instant::now();
        let stats = registry.add(format!("target={target}"));
        let again = session(&mut conn, &stats);
        drop(conn);
        if !again {
            return;
        }
        backoff.reset_after(since.elapsed());
        backoff.wait();
    }
}

/// Sends the file to `target` until one connection has carried all of it.
fn send_file_to(
    target: &Endpoint,
    tls: &Tls,
    framed: &Framed,
    (loops, rate): (u64, Option<f64>),
    registry: &Registry,
) {
    redial(target, tls, registry, |conn, stats| {
        match serve_file(conn, framed, loops, rate, stats).and_then(|()| finish(conn)) {
            Ok(()) => {
                stats.finish(State::Ended);
                log::info!("{target}: sent the whole file");
                false
            }
            Err(e) => {
                stats.finish(State::Lost);
                log::warn!(
                    "{target}: connection lost: {e}; redialling to send the file again from its start"
                );
                true
            }
        }
    })
}

/// --connect with a file: one thread per target.
fn connect_file(
    o: &Options,
    tls: &Tls,
    framed: &Arc<Framed>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let workers: Vec<_> = o
        .connect
        .iter()
        .map(|target| {
            let (target, tls, framed) = (target.clone(), tls.clone(), framed.clone());
            let (pace, registry) = ((o.loops, o.rate), registry.clone());
            thread::spawn(move || send_file_to(&target, &tls, &framed, pace, &registry))
        })
        .collect();
    let mut code = ExitCode::SUCCESS;
    for w in workers {
        if w.join().is_err() {
            code = ExitCode::FAILURE;
        }
    }
    registry.print();
    code
}

/// Keeps `target` among the relay's clients: dials, joins (the header so
/// far, then the live records), and redials when its connection breaks.
/// While it is away its queue is kept ([`Hub::keep_away`]): when it is
/// back it gets the stream's header, then what it missed, in order.
fn relay_to(target: &Endpoint, tls: &Tls, hub: &Hub, registry: &Registry) {
    // The core's messages on this thread name the tool's flags.
    setting::use_names(words::serve);
    let mut backoff = conn::backoff();
    let mut kept: Option<Arc<Client>> = None;
    loop {
        let mut conn = dial(target, tls, &mut backoff);
        let since = Instant::now();
        let again = target_session(target, &mut conn, hub, registry, &mut kept);
        drop(conn);
        // After the end of the input, a kept target is still redialled for
        // what is queued for it (the drain bounds how long).
        if !again || (hub.ended() && kept.is_none()) {
            return;
        }
        backoff.reset_after(since.elapsed());
        backoff.wait();
    }
}

/// One connection of a --connect target: joins the hub (or, when it was
/// away, resumes its kept queue) and runs its stream. Returns whether to
/// redial: the connection broke (reported) before its stream ended.
fn target_session(
    target: &Endpoint,
    conn: &mut Conn,
    hub: &Hub,
    registry: &Registry,
    kept: &mut Option<Arc<Client>>,
) -> bool {
    let _ = conn.tcp().set_nodelay(true);
    let handle = match conn.tcp().try_clone() {
        Ok(h) => h,
        Err(e) => {
            log::warn!("{target}: {e}; redialling");
            return true;
        }
    };
    let back = kept.take().and_then(|client| {
        let (bytes, packets) = client.queued();
        let Ok(again) = handle.try_clone() else {
            return None;
        };
        if hub.resume(&client, again) {
            log::info!(
                "{target}: back; sending the stream's header, then the {packets} packets queued while it was away ({bytes} bytes)"
            );
            return Some(client);
        }
        log::warn!("{target}: back, but the input began a new stream meanwhile: it gets the new stream; {packets} packets queued for it are dropped");
        client.give_up();
        hub.leave(&client);
        None
    });
    let client = match back {
        Some(client) => client,
        None => {
            let stats = registry.add(format!("target={target}"));
            match hub.join_kept(target.to_string(), handle, stats.clone()) {
                Ok(c) => c,
                Err(Refusal::Ended) => {
                    stats.finish(State::Ended);
                    let _ = conn.end();
                    return false;
                }
                Err(Refusal::Incomplete) => {
                    stats.finish(State::Ended);
                    log::warn!("{target}: the input's header blocks are too large to be kept whole, so it cannot be given a valid stream until the input restarts; redialling");
                    return true;
                }
            }
        }
    };
    let stats = client.stats().clone();
    // The state and the message before leaving (see relay_client).
    let why = match client.run(conn) {
        Ended::Away { error, in_flight } => {
            if hub.keep_away(&client) {
                let (bytes, packets) = client.queued();
                log::warn!(
                    "{target}: connection lost: {error}; {in_flight} packets sent were not acknowledged by it (lost in flight); keeping its queue ({packets} packets, {bytes} bytes; --client-buffer {}) and redialling: it gets the stream's header, then what it missed",
                    hub.limit()
                );
                *kept = Some(client);
                return true;
            }
            client.give_up();
            stats.finish(State::Lost);
            Some(format!(
                "{error}; {in_flight} packets sent were not acknowledged by it (lost in flight)"
            ))
        }
        Ended::Drained => {
            stats.finish(State::Ended);
            log::info!("{target}: stream ended; {}", stats.summary());
            None
        }
        Ended::Stalled => None,
        Ended::Slow => Some("closed as too slow (--slow-client=disconnect)".to_string()),
        Ended::NewStream => {
            stats.finish(State::Ended);
            Some("the input restarted with a different header".to_string())
        }
        Ended::Lost(e) => {
            stats.finish(State::Lost);
            Some(e.to_string())
        }
    };
    if let Some(why) = &why {
        log::warn!(
            "{target}: connection lost: {why}; redialling for a new stream (header, then live records)"
        );
    }
    hub.leave(&client);
    why.is_some()
}

/// --spool's directory and cap, shared by every kept receiver.
fn spool_dir(o: &Options) -> Option<Arc<SpoolDir>> {
    o.spool.as_ref().map(|(dir, max)| SpoolDir::new(dir, *max))
}

/// --connect with a live input: one thread per target, all fed by the hub.
fn connect_relay(
    o: &Options,
    tls: &Tls,
    direct: Option<&Direct>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let hub = Arc::new(
        Hub::new(
            o.client_buffer,
            o.slow_client,
            registry.clone(),
            Budget::new(o.max_buffer),
        )
        .spooling(spool_dir(o)),
    );
    for target in &o.connect {
        let (target, tls) = (target.clone(), tls.clone());
        let (hub, registry) = (hub.clone(), registry.clone());
        thread::spawn(move || relay_to(&target, &tls, &hub, &registry));
    }
    // Nothing is read (the pipe holds the capture) until a target is
    // connected, so a single target loses nothing; the others join live.
    let mut fanout = Fanout::new(vec![hub], o.shard_by());
    fanout.wait_for_clients(1);
    relay_input(o, direct, &mut fanout, registry)
}

/// --stdout: the live input as one stream on standard output, through the
/// hub as its only client, which never rejoins: a restart of the input
/// with the same header goes on in it (an upstream's reconnects, --exec's
/// restarts); a different header ends it, and the tool, since one pcap
/// stream has one header. So does a reader that goes away (EPIPE).
fn stdout_relay(
    o: &Options,
    direct: Option<&Direct>,
    registry: &Arc<Registry>,
) -> Result<ExitCode, String> {
    let mut out = Stdout::open().map_err(|e| format!("cannot use standard output: {e}"))?;
    let hub = Arc::new(Hub::new(
        o.client_buffer,
        o.slow_client,
        registry.clone(),
        Budget::new(o.max_buffer),
    ));
    let stats = registry.add("output=stdout".into());
    // Nothing has been read yet: the hub is open and its header empty.
    let client = hub
        .join("standard output".into(), None, stats.clone())
        .map_err(|e| format!("standard output: cannot join the relay: {e:?}"))?;
    let writer = {
        let (hub, registry) = (hub.clone(), registry.clone());
        thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let why = match client.run(&mut out) {
                    Ended::Drained => None,
                    Ended::Stalled => Some(
                        "took nothing for 30 s after the end of the input".to_string(),
                    ),
                    Ended::Slow => {
                        Some("closed as too slow (--slow-client=disconnect)".to_string())
                    }
                    Ended::NewStream => Some(
                        "the input restarted with a different header, and standard output carries one stream"
                            .to_string(),
                    ),
                    Ended::Lost(e) | Ended::Away { error: e, .. } => Some(e.to_string()),
                };
                hub.leave(&client);
                let Some(why) = why else {
                    stats.finish(State::Ended);
                    return;
                };
                if stats.state() == State::Open {
                    stats.finish(State::Lost);
                }
                log::error!("standard output: {why}; ending");
                registry.print();
                let _ = io::Write::flush(&mut io::stderr());
                std::process::exit(1);
            })
            .map_err(|e| format!("cannot start the standard output's thread: {e}"))?
    };
    let mut fanout = Fanout::new(vec![hub], o.shard_by());
    let code = relay_input(o, direct, &mut fanout, registry);
    let _ = writer.join();
    Ok(code)
}
