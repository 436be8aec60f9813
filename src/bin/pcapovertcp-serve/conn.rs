//! Connections: plain TCP or TLS (the plugin's own certificate loading,
//! `pcapovertcp::tls`, with a rustls stream over each socket); accepting
//! clients and dialling receivers.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pcapovertcp::endpoint::Endpoint;
use pcapovertcp::tls::{ClientTls, ServerTls};
use rustls::{ClientConnection, ServerConfig, ServerConnection, StreamOwned};

use crate::Options;

/// First pause between connection attempts with --connect...
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// ...doubling up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Bound on one connection attempt (a host that drops SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a receiver may take to close after the whole file was sent.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Bound on a TLS handshake (a peer that connects and says nothing).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed handshake, how long the peer has to read our alert before
/// the socket is closed (closing with its bytes unread would reset the
/// connection, and the alert with it).
const LINGER: Duration = Duration::from_secs(1);

/// One client's or target's connection: plain TCP, or TLS over it.
pub enum Conn {
    Plain(TcpStream),
    /// Listening: we are the TLS server.
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// --connect: we are the TLS client.
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Server(t) => &t.sock,
            Conn::Client(t) => &t.sock,
        }
    }

    /// Ends our direction of the stream: a TLS close_notify, then the FIN.
    pub fn end(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(_) => {}
            Conn::Server(t) => {
                t.conn.send_close_notify();
                t.flush()?;
            }
            Conn::Client(t) => {
                t.conn.send_close_notify();
                t.flush()?;
            }
        }
        self.tcp().shutdown(Shutdown::Write)
    }

    /// Writes `segments` whole, in order: over plain TCP with vectored
    /// writes straight from the shared buffers, over TLS one by one
    /// (encrypting copies them anyway).
    pub fn write_segments(&mut self, segments: &[Bytes]) -> io::Result<()> {
        let Conn::Plain(tcp) = self else {
            for s in segments {
                self.write_all(s)?;
            }
            return self.flush();
        };
        // Past the first `done` segments, and `offset` bytes into the next.
        let (mut done, mut offset) = (0, 0);
        loop {
            while done < segments.len() && segments[done].len() == offset {
                done += 1;
                offset = 0;
            }
            if done == segments.len() {
                break;
            }
            let rest = &segments[done + 1..];
            let mut slices = Vec::with_capacity(1 + rest.len().min(63));
            slices.push(IoSlice::new(&segments[done][offset..]));
            slices.extend(rest.iter().take(63).map(|s| IoSlice::new(s)));
            let mut n = match tcp.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while n > 0 {
                let left = segments[done].len() - offset;
                if n >= left {
                    n -= left;
                    done += 1;
                    offset = 0;
                } else {
                    offset += n;
                    n = 0;
                }
            }
        }
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Server(t) => t.read(buf),
            Conn::Client(t) => t.read(buf),
        }
    }
}

/// A TLS connection's writes go through its rustls connection: each write
/// is encrypted and sent before it returns, as a plain socket's would be.
impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Server(t) => t.write(buf),
            Conn::Client(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Server(t) => t.flush(),
            Conn::Client(t) => t.flush(),
        }
    }
}

/// TLS for every connection, set up once from the --tls-* options.
#[derive(Clone)]
pub enum Tls {
    Off,
    Server(Arc<ServerConfig>),
    Client(ClientTls),
}

/// Loads the certificates and keys with the plugin's own code; an unusable
/// file is one line naming the option and the file.
pub fn tls_setup(o: &Options) -> Result<Tls, String> {
    if !o.tls_wanted() {
        return Ok(Tls::Off);
    }
    let options = o.tls_options();
    let tls = if o.connect.is_empty() {
        ServerTls::new(&options).map(|s| Tls::Server(s.config()))
    } else {
        ClientTls::new(&options).map(Tls::Client)
    };
    tls.map_err(|e| e.render(crate::words::serve))
}

/// Completes a TLS handshake within HANDSHAKE_TIMEOUT of its start, an
/// absolute deadline: a peer that drips its bytes gets no more time than
/// one that sends none (each read waits only for what is left). On failure
/// the peer gets our alert before the socket closes; the error is one line.
fn handshake<S: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<S>,
    tcp: &mut TcpStream,
    peer: &str,
    hint: &str,
) -> Result<(), String> {
    let timeouts = |tcp: &TcpStream, t: Option<Duration>| {
        tcp.set_read_timeout(t)
            .and_then(|()| tcp.set_write_timeout(t))
            .map_err(|e| e.to_string())
    };
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut result = Ok(());
    while conn.is_handshaking() || conn.wants_write() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            result = Err(io::ErrorKind::TimedOut.into());
            break;
        }
        timeouts(tcp, Some(left))?;
        if let Err(e) = handshake_step(conn, tcp) {
            result = Err(e);
            break;
        }
    }
    match result {
        Ok(()) => timeouts(tcp, None),
        Err(e) => {
            linger(tcp);
            Err(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                    "no TLS handshake from the {peer} within {} s{hint}",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
                io::ErrorKind::UnexpectedEof => {
                    format!("the {peer} closed the connection during the TLS handshake{hint}")
                }
                _ => format!("TLS handshake with the {peer} failed: {e}{}", tls_hint(&e)),
            })
        }
    }
}

/// One step of a handshake: what is to be sent, else one read (which
/// waits at most the socket's read timeout) and its processing. A TLS
/// error is sent to the peer as an alert.
fn handshake_step<S: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<S>,
    tcp: &mut TcpStream,
) -> io::Result<()> {
    if conn.wants_write() {
        conn.write_tls(tcp)?;
        return Ok(());
    }
    if conn.read_tls(tcp)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if let Err(e) = conn.process_new_packets() {
        // The alert, best effort.
        while conn.wants_write() && conn.write_tls(tcp).is_ok() {}
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    Ok(())
}

/// What to check when the peer refused us over TLS, or we it.
pub fn tls_hint(e: &io::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
        Some(E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown)) => {
            " (the peer does not trust our certificate: check its CA file)"
        }
        Some(E::AlertReceived(A::CertificateRequired)) => {
            " (the peer requires a client certificate: give --tls-cert and --tls-key)"
        }
        Some(E::InvalidCertificate(C::UnknownIssuer)) => " (check --tls-ca)",
        Some(E::NoCertificatesPresented) => {
            " (clients must present a certificate signed by a CA of --tls-ca)"
        }
        _ => "",
    }
}

/// Closes our side and lets the peer read what we sent (a TLS alert)
/// before the socket is closed, within LINGER.
fn linger(tcp: &TcpStream) {
    let _ = tcp.shutdown(Shutdown::Write);
    let _ = tcp.set_read_timeout(Some(LINGER));
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match (&mut &*tcp).read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// An accepted client, after the TLS handshake when serving over TLS.
pub fn accept(tcp: TcpStream, tls: &Tls) -> Result<Conn, String> {
    let Tls::Server(config) = tls else {
        return Ok(Conn::Plain(tcp));
    };
    let conn = ServerConnection::new(config.clone()).map_err(|e| format!("TLS: {e}"))?;
    let mut s = StreamOwned::new(conn, tcp);
    handshake(
        &mut s.conn,
        &mut s.sock,
        "client",
        " (does it connect with tls://? does it trust our certificate?)",
    )?;
    Ok(Conn::Server(Box::new(s)))
}

/// Exponential backoff between connection attempts.
pub struct Backoff(pub Duration);

impl Backoff {
    pub fn wait(&mut self) {
        thread::sleep(self.0);
        self.0 = self.0.saturating_mul(2).min(RETRY_MAX);
    }
}

/// One attempt to connect to `target`, every address it resolves to in
/// turn, then the TLS handshake when dialling out over TLS.
fn try_connect(target: &Endpoint, tls: &Tls) -> Result<Conn, String> {
    let tcp = try_connect_tcp(&target.to_string()).map_err(|e| e.to_string())?;
    let Tls::Client(client) = tls else {
        return Ok(Conn::Plain(tcp));
    };
    let name = client.server_name(target.host())?;
    let conn = ClientConnection::new(client.config(), name).map_err(|e| format!("TLS: {e}"))?;
    let mut s = StreamOwned::new(conn, tcp);
    handshake(
        &mut s.conn,
        &mut s.sock,
        "receiver",
        " (does it listen with tls-listen://? does it trust our certificate, or want one?)",
    )?;
    Ok(Conn::Client(Box::new(s)))
}

/// One attempt to connect to `target`, every address it resolves to in turn.
fn try_connect_tcp(target: &str) -> io::Result<TcpStream> {
    connect_addrs(target.to_socket_addrs()?)
}

/// One attempt to connect to each of `addrs` in turn, until one answers.
pub fn connect_addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            // Dialling a free loopback port can meet itself (TCP simultaneous
            // open): that is no receiver.
            Ok(s) if s.local_addr().ok() == Some(addr) => {
                last = Some(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))
            }
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("the name resolves to no address")))
}

/// Dials `target` until it answers. Reports a failure when it differs from
/// the last one reported, and the connection; not every attempt.
pub fn dial(target: &Endpoint, tls: &Tls, backoff: &mut Backoff) -> Conn {
    let mut reported: Option<String> = None;
    loop {
        match try_connect(target, tls) {
            Ok(s) => {
                log::info!("{target}: connected");
                return s;
            }
            Err(e) => {
                if reported.as_deref() != Some(e.as_str()) {
                    log::warn!(
                        "{target}: {e}; retrying until it is up (every {:?} to {:?})",
                        RETRY_MIN,
                        RETRY_MAX
                    );
                    reported = Some(e);
                }
                backoff.wait();
            }
        }
    }
}

/// After the whole file: end our direction, then wait (bounded) for the
/// receiver to close, so a receiver that reset the connection without
/// reading everything (or refused us over TLS) is noticed and gets the file
/// again.
pub fn finish(conn: &mut Conn) -> io::Result<()> {
    conn.end()?;
    conn.tcp().set_read_timeout(Some(CLOSE_WAIT))?;
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match conn.read(&mut sink) {
            Ok(0) => return Ok(()),
            // A TLS receiver that closes without a close_notify of its own
            // (the plugin's tls-listen:// does): closed as over plain TCP.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
