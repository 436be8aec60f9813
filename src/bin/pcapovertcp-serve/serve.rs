//! The tool's modes: listening (a file, or the live relay of standard input)
//! and dialling out (--connect).

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
    accept, dial, finish, peer_of, tls_hint, tls_setup, Backoff, Conn, Tls, RETRY_MAX, RETRY_MIN,
};
use crate::file::{load, serve_file, Framed};
use crate::hub::{Ended, Hub};
use crate::logging;
use crate::stats::{ClientStats, Registry, State};
use crate::Options;

/// Listening sockets' backlog.
const BACKLOG: i32 = 1024;

/// Runs the tool. Errors before anything is served (TLS files, the file to
/// serve, listening, the port file) are returned, to be printed as one line.
pub fn run(o: &Options) -> Result<ExitCode, String> {
    let tls = tls_setup(o)?;
    let live = o.input == "-";
    let framed = if live { None } else { Some(load(&o.input)?) };
    let registry = Arc::new(Registry::new(live));
    logging::handle_signals(registry.clone())
        .map_err(|e| format!("cannot set up the signal handlers: {e}"))?;
    if !o.connect.is_empty() {
        return Ok(match framed {
            None => connect_relay(o, &tls, &registry),
            Some(framed) => connect_file(o, &tls, &framed, &registry),
        });
    }
    let listeners = listen_all(o)?;
    let accepted = accept_all(listeners);
    Ok(match framed {
        None => listen_relay(o, &tls, accepted, &registry),
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

/// Listens on every --listen; reports each, then writes the port file.
fn listen_all(o: &Options) -> Result<Vec<TcpListener>, String> {
    let several = o.listen.len() > 1;
    let mut listeners = Vec::new();
    let mut ports = String::new();
    for &addr in &o.listen {
        let l = listen_on(addr, several).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = l.local_addr().unwrap_or(addr);
        log::info!("listening on {local}");
        ports.push_str(&format!("{}\n", local.port()));
        listeners.push(l);
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

/// Accepts on every listener, each on its own thread; the connections come
/// out of one channel.
fn accept_all(listeners: Vec<TcpListener>) -> mpsc::Receiver<TcpStream> {
    let (tx, rx) = mpsc::channel();
    for l in listeners {
        let tx = tx.clone();
        thread::spawn(move || loop {
            match l.accept() {
                Ok((tcp, _)) => {
                    if tx.send(tcp).is_err() {
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

/// Prints the counters; the tool's exit status from how the input ended.
fn finish_relay(result: io::Result<()>, hub: &Hub, registry: &Registry) -> ExitCode {
    if let Err(e) = &result {
        log::error!("standard input: {e}");
    }
    hub.end();
    hub.drain();
    registry.print();
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Listening, standard input relayed live through the hub.
fn listen_relay(
    o: &Options,
    tls: &Tls,
    accepted: mpsc::Receiver<TcpStream>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let hub = Arc::new(Hub::new(o.client_buffer, o.slow_client, registry.clone()));
    {
        let (hub, registry, tls) = (hub.clone(), registry.clone(), tls.clone());
        thread::spawn(move || {
            for tcp in accepted {
                let (hub, registry, tls) = (hub.clone(), registry.clone(), tls.clone());
                // Its own thread: the TLS handshake, then the writer.
                thread::spawn(move || relay_client(tcp, &tls, &hub, &registry));
            }
        });
    }
    // Standard input is not read before enough clients are connected.
    hub.wait_for_clients(o.wait_clients);
    let result = hub.relay(io::stdin().lock());
    finish_relay(result, &hub, registry)
}

/// One client of the relay, from its TLS handshake to the end of its stream.
fn relay_client(tcp: TcpStream, tls: &Tls, hub: &Hub, registry: &Registry) {
    let peer = peer_of(&tcp);
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
    let name = format!("client {peer}");
    let stats = registry.add(format!("client={peer}"));
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
    accepted: mpsc::Receiver<TcpStream>,
    registry: &Arc<Registry>,
) -> ExitCode {
    let mut workers = Vec::new();
    // Clients held back until --wait-clients of them are connected.
    let mut waiting = Vec::new();
    let mut started = false;
    for (n, tcp) in accepted.into_iter().enumerate() {
        waiting.push(tcp);
        let served = n as u64 + 1;
        let last = o.clients.is_some_and(|n| served >= n);
        if waiting.len() < o.wait_clients && !started && !last {
            continue;
        }
        // Once started, later clients are served as they come.
        started = true;
        for tcp in waiting.drain(..) {
            let (framed, tls, registry) = (framed.clone(), tls.clone(), registry.clone());
            let (loops, rate) = (o.loops, o.rate);
            workers.push(thread::spawn(move || {
                let peer = peer_of(&tcp);
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

/// --connect with standard input: one thread per target, all fed by the hub.
fn connect_relay(o: &Options, tls: &Tls, registry: &Arc<Registry>) -> ExitCode {
    let hub = Arc::new(Hub::new(o.client_buffer, o.slow_client, registry.clone()));
    for target in &o.connect {
        let (target, tls) = (target.clone(), tls.clone());
        let (hub, registry) = (hub.clone(), registry.clone());
        thread::spawn(move || relay_to(&target, &tls, &hub, &registry));
    }
    // Nothing is read (the pipe holds the capture) until a target is
    // connected, so a single target loses nothing; the others join live.
    hub.wait_for_clients(1);
    let result = hub.relay(io::stdin().lock());
    finish_relay(result, &hub, registry)
}
