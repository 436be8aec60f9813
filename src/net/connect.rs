//! Opening one connection: resolve the endpoint, connect to each address in
//! turn, and set the socket up for reading (keepalive, a short receive
//! timeout). Every step gives way within [`TICK`] when the source closes,
//! so closing never waits for a resolver or a 10 s connect timeout.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

use crate::endpoint::Endpoint;
use crate::net::poll;
use crate::shared::config::{Config, Keepalive};
use crate::shared::control::{Control, SocketHold, NOTICE_AFTER};
use crate::shared::error::Error;

/// How often a blocked step looks up to see whether the source is closing,
/// and the receive timeout of a connected socket (the read loop's clock for
/// idle and header deadlines).
pub(crate) const TICK: Duration = Duration::from_millis(200);

/// Why `connect` returned no stream.
pub(crate) enum Failure {
    Stopped,
    Failed(Error),
}

/// Tries every resolved address in order; the first that accepts wins. The
/// socket stays registered with `control` (so that closing can cut a read
/// short) while the hold lives.
pub(crate) fn connect<'c>(
    control: &'c Control,
    target: &Endpoint,
) -> Result<(TcpStream, SocketHold<'c>), Failure> {
    let endpoint = target.to_string();
    let addrs = resolve(control, target).map_err(|source| {
        if control.stopping() {
            Failure::Stopped
        } else {
            Failure::Failed(Error::Resolve {
                endpoint: endpoint.clone(),
                source,
            })
        }
    })?;
    let mut last: Option<(SocketAddr, io::Error)> = None;
    for addr in &addrs {
        if control.stopping() {
            return Err(Failure::Stopped);
        }
        match connect_one(control, target, addr) {
            Ok(stream) => {
                crate::shared::logger::debug!("{endpoint}: connected to {addr}");
                return Ok(stream);
            }
            Err(_) if control.stopping() => return Err(Failure::Stopped),
            Err(e) => {
                crate::shared::logger::debug!("{endpoint}: connecting to {addr} failed: {e}");
                last = Some((*addr, e));
            }
        }
    }
    Err(Failure::Failed(match last {
        None => Error::NoAddress { endpoint },
        Some((addr, source)) => Error::Connect {
            tried: match addrs.len() {
                1 if addr.to_string() == endpoint => String::new(),
                1 => format!(" ({addr})"),
                n => format!(" ({n} addresses, last {addr})"),
            },
            endpoint,
            source,
        },
    }))
}

/// Resolves on a helper thread, so that a slow resolver never holds up
/// closing: the thread is left to finish on its own.
fn resolve(control: &Control, target: &Endpoint) -> io::Result<Vec<SocketAddr>> {
    if let Some(addrs) = target.literal_addrs() {
        return Ok(addrs);
    }
    let (tx, rx) = mpsc::channel();
    let endpoint = target.clone();
    crate::shared::threads::spawn("pcapovertcp resolve".into(), move || {
        let _ = tx.send(endpoint.resolve());
    })?;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Timeout) if !control.stopping() => {}
            Err(_) => return Err(io::Error::other("the source is closing")),
        }
    }
}

/// A non-blocking connect, waited for in ticks.
fn connect_one<'c>(
    control: &'c Control,
    target: &Endpoint,
    addr: &SocketAddr,
) -> io::Result<(TcpStream, SocketHold<'c>)> {
    let socket = new_socket(addr)?;
    // Kept so that closing the source can cut a connect or a read short.
    let hold = control.hold_socket(socket.try_clone()?);
    let timeout = control.config.connect_timeout;
    connect_socket(
        &socket,
        addr,
        timeout,
        &|| control.stopping(),
        &mut |waited| {
            if waited >= NOTICE_AFTER {
                control.startup.mention_wait(&format!(
                "{}: connecting to {addr} gets no answer after {} s (the connect times out after {} s)",
                target,
                NOTICE_AFTER.as_secs(),
                timeout.as_secs()
            ));
            }
        },
    )?;
    set_up(&socket, &control.config)?;
    Ok((socket.into(), hold))
}

fn new_socket(addr: &SocketAddr) -> io::Result<Socket> {
    Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
}

/// Connects `socket` to `addr` within `timeout`, waiting in ticks so that
/// `stopping` is seen within one (`waited` hears how long it has waited,
/// at each tick). A connection to itself is refused: dialling a free
/// loopback port can meet itself (TCP simultaneous open), and that is no
/// peer. The socket is left blocking.
pub(crate) fn connect_socket(
    socket: &Socket,
    addr: &SocketAddr,
    timeout: Duration,
    stopping: &dyn Fn() -> bool,
    waited: &mut dyn FnMut(Duration),
) -> io::Result<()> {
    let closing = || io::Error::other("the source is closing");
    socket.set_nonblocking(true)?;
    match socket.connect(&(*addr).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let started = Instant::now();
            let deadline = started + timeout;
            loop {
                if stopping() {
                    return Err(closing());
                }
                waited(started.elapsed());
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                if wait_writable(socket, left.min(TICK))? {
                    break;
                }
            }
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    if socket.local_addr()?.as_socket() == Some(*addr) {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connection refused (the connection met itself: nothing listens there)",
        ));
    }
    socket.set_nonblocking(false)
}

/// For a caller with no source (pcapovertcp-serve): each of `addrs` in
/// turn until one answers, each within `timeout`, with `keepalive` set on
/// the connected socket. The last failure when none answers.
pub fn connect_addrs(
    addrs: impl IntoIterator<Item = SocketAddr>,
    timeout: Duration,
    keepalive: Option<&Keepalive>,
) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        let attempt = new_socket(&addr).and_then(|socket| {
            connect_socket(&socket, &addr, timeout, &|| false, &mut |_| {})?;
            keep_alive(&socket, keepalive)?;
            Ok(socket)
        });
        match attempt {
            Ok(socket) => return Ok(socket.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("the name resolves to no address")))
}

fn wait_writable(socket: &Socket, limit: Duration) -> io::Result<bool> {
    crate::net::poll::wait(&mut [poll::fd(socket.as_raw_fd(), libc::POLLOUT)], limit)
}

/// The receive timeout is the read loop's tick; keepalive detects a peer
/// that stopped answering. For connected and accepted sockets alike.
pub(crate) fn set_up(socket: &Socket, config: &Config) -> io::Result<()> {
    socket.set_read_timeout(Some(TICK))?;
    keep_alive(socket, config.keepalive.as_ref())
}

/// Keepalive probes with `k`'s bound (none: the system's default).
pub(crate) fn keep_alive(socket: &Socket, k: Option<&Keepalive>) -> io::Result<()> {
    let Some(k) = k else {
        return Ok(());
    };
    let params = TcpKeepalive::new()
        .with_time(k.idle)
        .with_interval(k.interval)
        .with_retries(k.probes);
    socket.set_tcp_keepalive(&params)?;
    // Without it, Linux may take far longer than the probes' bound when
    // the path fails mid-transfer (retransmissions follow their own
    // timers); with it, the connection fails at the bound either way.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(k.bound()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use crate::handoff::queue::HandOff;
    use crate::shared::config::Keepalive;
    use crate::shared::messages::Messages;
    use socket2::SockRef;
    use std::net::TcpListener;
    use std::sync::Arc;

    fn control(ep: &str, config: Config) -> Control {
        Control::new(
            ep.to_string(),
            config.normalized(),
            HandOff::new(1024).unwrap(),
            Arc::new(Messages::default()),
        )
    }

    #[test]
    fn a_connected_socket_has_keepalive_user_timeout_and_a_tick() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = listener.local_addr().unwrap().to_string();
        let config = Config {
            keepalive: Some(Keepalive {
                idle: Duration::from_secs(7),
                interval: Duration::from_secs(2),
                probes: 3,
            }),
            ..Config::default()
        };
        let control = control(&ep, config);
        let Ok((stream, _hold)) = connect(&control, &Endpoint::parse(&ep).unwrap()) else {
            panic!("connect failed");
        };
        let s = SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(2));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 3);
        #[cfg(target_os = "linux")]
        assert_eq!(
            s.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(7 + 2 * 3))
        );
        assert_eq!(s.read_timeout().unwrap(), Some(TICK));
        assert!(!s.nonblocking().unwrap_or(true));
    }

    #[test]
    fn keepalive_off_leaves_the_system_default() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = listener.local_addr().unwrap().to_string();
        let config = Config {
            keepalive: None,
            ..Config::default()
        };
        let control = control(&ep, config);
        let Ok((stream, _hold)) = connect(&control, &Endpoint::parse(&ep).unwrap()) else {
            panic!("connect failed");
        };
        assert!(!SockRef::from(&stream).keepalive().unwrap());
    }

    #[test]
    fn a_connection_that_meets_itself_is_refused() {
        // A socket bound to the port it dials connects to itself on Linux
        // (TCP simultaneous open), deterministically.
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let socket = new_socket(&addr).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&addr.into()).unwrap();
        let e = connect_socket(
            &socket,
            &addr,
            Duration::from_secs(2),
            &|| false,
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }

    #[test]
    fn the_tools_connect_tries_each_address_and_sets_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let bad = closed.local_addr().unwrap();
        drop(closed);
        let k = Keepalive {
            idle: Duration::from_secs(5),
            interval: Duration::from_secs(1),
            probes: 2,
        };
        let s = connect_addrs([bad, good], Duration::from_secs(2), Some(&k)).unwrap();
        assert_eq!(s.peer_addr().unwrap(), good);
        assert!(SockRef::from(&s).keepalive().unwrap());
        let e = connect_addrs([bad], Duration::from_secs(2), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(connect_addrs([], Duration::from_secs(2), None).is_err());
    }
}
