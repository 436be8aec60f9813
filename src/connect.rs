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

use crate::config::Config;
use crate::control::{Control, SocketHold, NOTICE_AFTER};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::poll;

/// How often a blocked step looks up to see whether the source is closing,
/// and the receive timeout of a connected socket (the read loop's clock for
/// idle and header deadlines).
pub const TICK: Duration = Duration::from_millis(200);

/// Why `connect` returned no stream.
pub enum Failure {
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
                crate::logger::debug!("{endpoint}: connected to {addr}");
                return Ok(stream);
            }
            Err(_) if control.stopping() => return Err(Failure::Stopped),
            Err(e) => {
                crate::logger::debug!("{endpoint}: connecting to {addr} failed: {e}");
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
    crate::threads::spawn("pcapovertcp resolve".into(), move || {
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
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    // Kept so that closing the source can cut a connect or a read short.
    let hold = control.hold_socket(socket.try_clone()?);
    match socket.connect(&(*addr).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let started = Instant::now();
            let deadline = started + control.config.connect_timeout;
            loop {
                if control.stopping() {
                    return Err(io::Error::other("the source is closing"));
                }
                if started.elapsed() >= NOTICE_AFTER {
                    control.mention_wait(&format!(
                        "{}: connecting to {addr} gets no answer after {} s (the connect times out after {} s)",
                        target,
                        NOTICE_AFTER.as_secs(),
                        control.config.connect_timeout.as_secs()
                    ));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                if wait_writable(&socket, left.min(TICK))? {
                    break;
                }
            }
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    socket.set_nonblocking(false)?;
    set_up(&socket, &control.config)?;
    Ok((socket.into(), hold))
}

fn wait_writable(socket: &Socket, limit: Duration) -> io::Result<bool> {
    crate::poll::wait(&mut [poll::fd(socket.as_raw_fd(), libc::POLLOUT)], limit)
}

/// The receive timeout is the read loop's tick; keepalive detects a peer
/// that stopped answering. For connected and accepted sockets alike.
pub(crate) fn set_up(socket: &Socket, config: &Config) -> io::Result<()> {
    socket.set_read_timeout(Some(TICK))?;
    if let Some(k) = &config.keepalive {
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Keepalive;
    use crate::endpoint::Endpoint;
    use crate::messages::Messages;
    use crate::ring::Ring;
    use socket2::SockRef;
    use std::net::TcpListener;
    use std::sync::Arc;

    fn control(ep: &str, config: Config) -> Control {
        Control::new(
            ep.to_string(),
            config.normalized(),
            Ring::new(1024).unwrap(),
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
}
