//! The tool's modes: listening (a file, or the live relay of standard
//! input, --exec or --upstream, optionally in --shards) and dialling out
//! (--connect).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pcapovertcp::endpoint::Endpoint;
use socket2::{Domain, Protocol, Socket, Type};

use crate::conn::{
    accept, dial, finish, tls_hint, tls_setup, Backoff, Conn, Tls, RETRY_MAX, RETRY_MIN,
};
use crate::file::{load, serve_file, Framed};
use crate::hub::{Ended, Hub};
use crate::input::{run_exec, Fanout};
use crate::logging;
use crate::merged::run_upstream;
use crate::stats::{ClientStats, Registry, State};
use crate::upstream::{self, Direct};
use crate::Options;

/// Listening sockets' backlog.
const BACKLOG: i32 = 1024;

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
    if !o.connect.is_empty() {
        return Ok(match framed {
            None => connect_relay(o, &tls, direct, &registry),
            Some(framed) => connect_file(o, &tls, &framed, &registry),
        });
    }
    let listeners = listen_all(o)?;
    let accepted = accept_all(listeners);
    Ok(match framed {
        None => listen_relay(o, &tls, direct, accepted, &registry),
        Some(framed) => listen_file(o, &tls, &framed, accepted, &registry),
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
fn listen_all(o: &Options) -> Result<Vec<(usize, TcpListener)>, String> {
    let several = o.listen.len() > 1;
    let mut listeners = Vec::new();
    let mut ports = String::new();
    for &addr in &o.listen {
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
            listeners.push((k, l));
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

/// An accepted client: its listener's shard, its socket and its address
/// (taken from accept(), which has it even when the connection is already
/// reset and the socket can no longer tell).
struct Incoming {
    shard: usize,
    tcp: TcpStream,
    peer: String,
}

/// Accepts on every listener, each on its own thread; the connections come
/// out of one channel.
fn accept_all(listeners: Vec<(usize, TcpListener)>) -> mpsc::Receiver<Incoming> {
    let (tx, rx) = mpsc::channel();
    for (shard, l) in listeners {
        let tx = tx.clone();
        thread::spawn(move || loop {
            match l.accept() {
                Ok((tcp, peer)) => {
                    let peer = peer.to_string();
                    if tx.send(Incoming { shard, tcp, peer }).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("accept: {e}");
                    // Out of file descriptors, say: not a busy loop.
                    thread::sleep(Duration::from_millis(100));
                }
            }
        });
    }
    rx
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
        one.run(fanout, o.once)
    } else if let Some(spec) = &o.upstream {
        let config = pcapovertcp::Config {
            reconnect: !o.once,
            reconnect_min: RETRY_MIN,
            reconnect_max: RETRY_MAX,
            tls: o.upstream_tls.clone(),
            merge_window: o.merge_window,
            ..pcapovertcp::Config::default()
        };
        run_upstream(fanout, spec, config)
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
    tls: &Tls,
    direct: Option<&Direct>,
    accepted: mpsc::Receiver<Incoming>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let hubs: Vec<Arc<Hub>> = (0..o.shards)
        .map(|_| Arc::new(Hub::new(o.client_buffer, o.slow_client, registry.clone())))
        .collect();
    let sharded = o.shards > 1;
    {
        let (hubs, registry, tls) = (hubs.clone(), registry.clone(), tls.clone());
        thread::spawn(move || {
            for Incoming { shard, tcp, peer } in accepted {
                let (hub, registry, tls) = (hubs[shard].clone(), registry.clone(), tls.clone());
                let shard = sharded.then_some(shard);
                // Its own thread: the TLS handshake, then the writer.
                thread::spawn(move || relay_client(tcp, peer, &tls, &hub, &registry, shard));
            }
        });
    }
    let mut fanout = Fanout::new(hubs, o.shard_by);
    // The input is not read before enough clients are connected.
    fanout.wait_for_clients(o.wait_clients);
    relay_input(o, direct, &mut fanout, registry)
}

/// One client of the relay, from its TLS handshake to the end of its stream.
fn relay_client(
    tcp: TcpStream,
    peer: String,
    tls: &Tls,
    hub: &Hub,
    registry: &Registry,
    shard: Option<usize>,
) {
    let _ = tcp.set_nodelay(true);
    let handle = match tcp.try_clone() {
        Ok(h) => h,
        Err(e) => {
            log::warn!("client {peer}: {e}");
            return;
        }
    };
    let mut conn = match accept(tcp, tls) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{peer}: {e}");
            return;
        }
    };
    let (name, label) = match shard {
        Some(k) => (
            format!("client {peer} (shard {k})"),
            format!("client={peer} shard={k}"),
        ),
        None => (format!("client {peer}"), format!("client={peer}")),
    };
    let stats = registry.add(label);
    let Some(client) = hub.join(name.clone(), handle, stats.clone()) else {
        // The input has ended.
        stats.finish(State::Ended);
        let _ = conn.end();
        return;
    };
    log::info!("{name} connected");
    let ended = client.run(&mut conn);
    // The state and the message before leaving: the last client's leaving
    // lets the tool print the counters and end.
    match ended {
        Ended::Drained => {
            stats.finish(State::Ended);
            log::info!("{name}: stream ended; {}", stats.summary());
        }
        Ended::Lost(e) => {
            stats.finish(State::Lost);
            log::info!("{name} left ({e}); {}", stats.summary());
        }
        Ended::NewStream => {
            stats.finish(State::Ended);
            log::info!(
                "{name}: stream ended (the input restarted with a different header); {}",
                stats.summary()
            );
        }
        // Reported when it was closed.
        Ended::Slow | Ended::Stalled => {}
    }
    hub.leave(&client);
}

/// Listening, a file: each client gets all of it at its own pace.
fn listen_file(
    o: &Options,
    tls: &Tls,
    framed: &Arc<Framed>,
    accepted: mpsc::Receiver<Incoming>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let mut workers = Vec::new();
    // Clients held back until --wait-clients of them are connected.
    let mut waiting = Vec::new();
    let mut started = false;
    for (n, client) in accepted.into_iter().enumerate() {
        waiting.push((client.tcp, client.peer));
        let served = n as u64 + 1;
        let last = o.clients.is_some_and(|n| served >= n);
        if waiting.len() < o.wait_clients && !started && !last {
            continue;
        }
        // Once started, later clients are served as they come.
        started = true;
        for (tcp, peer) in waiting.drain(..) {
            let (framed, tls, registry) = (framed.clone(), tls.clone(), registry.clone());
            let (loops, rate) = (o.loops, o.rate);
            workers.push(thread::spawn(move || {
                let mut conn = match accept(tcp, &tls) {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("{peer}: {e}");
                        return;
                    }
                };
                let stats = registry.add(format!("client={peer}"));
                log::info!("client {peer} connected");
                match serve_file(&mut conn, &framed, loops, rate, &stats) {
                    Ok(()) => {
                        let _ = conn.end();
                        stats.finish(State::Ended);
                        log::info!("client {peer}: sent the whole file; {}", stats.summary());
                    }
                    Err(e) => {
                        stats.finish(State::Lost);
                        log::warn!("client {peer}: {e}; {}", stats.summary());
                    }
                }
            }));
        }
        if last {
            break;
        }
    }
    for w in workers {
        let _ = w.join();
    }
    registry.print();
    ExitCode::SUCCESS
}

/// Sends the file to `target` until one connection has carried all of it.
fn send_file_to(
    target: &Endpoint,
    tls: &Tls,
    framed: &Framed,
    (loops, rate): (u64, Option<f64>),
    registry: &Registry,
) {
    let mut backoff = Backoff(RETRY_MIN);
    loop {
        let mut conn = dial(target, tls, &mut backoff);
        let since = Instant::now();
        let stats = registry.add(format!("target={target}"));
        match serve_file(&mut conn, framed, loops, rate, &stats).and_then(|()| finish(&mut conn)) {
            Ok(()) => {
                stats.finish(State::Ended);
                log::info!("{target}: sent the whole file");
                return;
            }
            Err(e) => {
                stats.finish(State::Lost);
                log::warn!(
                    "{target}: connection lost: {e}{}; redialling to send the file again from its start",
                    tls_hint(&e)
                )
            }
        }
        drop(conn);
        if since.elapsed() >= RETRY_MAX {
            backoff = Backoff(RETRY_MIN);
        }
        backoff.wait();
    }
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
fn relay_to(target: &Endpoint, tls: &Tls, hub: &Hub, registry: &Registry) {
    let mut backoff = Backoff(RETRY_MIN);
    loop {
        let mut conn = dial(target, tls, &mut backoff);
        let since = Instant::now();
        let stats = registry.add(format!("target={target}"));
        if !join_and_run(target, &mut conn, hub, &stats) {
            return;
        }
        drop(conn);
        if hub.ended() {
            return;
        }
        if since.elapsed() >= RETRY_MAX {
            backoff = Backoff(RETRY_MIN);
        }
        backoff.wait();
    }
}

/// A --connect target's stream through the hub. Returns whether to redial:
/// the connection broke (reported) before the end of the input.
fn join_and_run(target: &Endpoint, conn: &mut Conn, hub: &Hub, stats: &Arc<ClientStats>) -> bool {
    let _ = conn.tcp().set_nodelay(true);
    let handle = match conn.tcp().try_clone() {
        Ok(h) => h,
        Err(e) => {
            stats.finish(State::Lost);
            log::warn!("{target}: {e}; redialling");
            return true;
        }
    };
    let Some(client) = hub.join(target.to_string(), handle, stats.clone()) else {
        stats.finish(State::Ended);
        let _ = conn.end();
        return false;
    };
    // The state and the message before leaving (see relay_client).
    let why = match client.run(conn) {
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
            Some(format!("{e}{}", tls_hint(&e)))
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

/// --connect with a live input: one thread per target, all fed by the hub.
fn connect_relay(
    o: &Options,
    tls: &Tls,
    direct: Option<&Direct>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let hub = Arc::new(Hub::new(o.client_buffer, o.slow_client, registry.clone()));
    for target in &o.connect {
        let (target, tls) = (target.clone(), tls.clone());
        let (hub, registry) = (hub.clone(), registry.clone());
        thread::spawn(move || relay_to(&target, &tls, &hub, &registry));
    }
    // Nothing is read (the pipe holds the capture) until a target is
    // connected, so a single target loses nothing; the others join live.
    let mut fanout = Fanout::new(vec![hub], o.shard_by);
    fanout.wait_for_clients(1);
    relay_input(o, direct, &mut fanout, registry)
}
