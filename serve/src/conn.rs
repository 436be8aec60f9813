//! Connections: plain TCP or TLS, through the plugin's own network layer
//! (`pcapovertcp::net`: connecting, keepalive, the TLS handshake with its
//! deadline, the transport); accepting clients and dialling receivers.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pcapovertcp::endpoint::Endpoint;
use pcapovertcp::net::backoff::{Backoff, Outage};
use pcapovertcp::net::connect::connect_addrs;
use pcapovertcp::setting;
use pcapovertcp::tls::{self, ClientTls, HandshakeFailure, ServerTls, Transport};
use pcapovertcp::Config;

use crate::{words, Options};

/// First pause between connection attempts with --connect...
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// ...doubling up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Bound on one connection attempt (a host that drops SYNs).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a receiver may take to close after the whole file was sent.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Bound on a TLS handshake (a peer that connects and says nothing).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed handshake, how long the peer has to read our alert before
/// the socket is closed (closing with its bytes unread would reset the
/// connection, and the alert with it).
const LINGER: Duration = Duration::from_secs(1);

/// One client's or target's connection: the core's transport.
pub type Conn = Transport;

/// The tool's backoff between attempts: RETRY_MIN doubling to RETRY_MAX.
pub fn backoff() -> Backoff {
    Backoff::new(RETRY_MIN, RETRY_MAX)
}

/// A write of segments that failed: why, and how many of their bytes the
/// kernel took first (over TLS: the segments up to the one that failed,
/// that one included, since part of it may have gone out).
#[derive(Debug)]
pub struct Cut {
    pub error: io::Error,
    pub taken: usize,
}

/// Writes `segments` whole, in order: over plain TCP with vectored
/// writes straight from the shared buffers, over TLS one by one
/// (encrypting copies them anyway), compressed all together and then
/// flushed (one zstd block for the batch, not one per segment).
pub fn write_segments(conn: &mut Conn, segments: &[Bytes]) -> Result<(), Cut> {
    if let Conn::Zstd(z) = conn {
        // What of the batch went out is not known: all of it counts.
        let taken = segments.iter().map(|s| s.len()).sum();
        return z
            .write_parts(segments.iter().map(|s| &s[..]))
            .map_err(|error| Cut { error, taken });
    }
    let Conn::Plain(tcp) = conn else {
        let mut taken = 0;
        for s in segments {
            taken += s.len();
            conn.write_all(s).map_err(|error| Cut { error, taken })?;
        }
        return conn.flush().map_err(|error| Cut { error, taken });
    };
    // Bytes the kernel took.
    let mut taken = 0;
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
        let mut n = match (&**tcp).write_vectored(&slices) {
            Ok(0) => {
                return Err(Cut {
                    error: io::ErrorKind::WriteZero.into(),
                    taken,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Cut { error, taken }),
        };
        taken += n;
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

/// TLS for every connection, set up once from the --tls-* options.
#[derive(Clone)]
pub enum Tls {
    Off,
    Server(ServerTls),
    Client(ClientTls),
}

/// Loads the certificates and keys with the plugin's own code; an unusable
/// file is one line naming the flag and the file.
pub fn tls_setup(o: &Options) -> Result<Tls, String> {
    if !o.tls_wanted() {
        return Ok(Tls::Off);
    }
    let options = o.tls_options();
    let tls = if o.connect.is_empty() {
        ServerTls::new(&options).map(Tls::Server)
    } else {
        ClientTls::new(&options).map(Tls::Client)
    };
    tls.map_err(|e| e.render(words::serve))
}

/// Completes the TLS handshake of `conn` with the core's handshake, within
/// HANDSHAKE_TIMEOUT of its start (an absolute deadline: a peer that drips
/// its bytes gets no more time than one that sends none). On failure the
/// peer gets our alert before the socket closes; the error is one line in
/// the tool's words.
fn handshake(conn: &mut Conn, peer: &str, hint: &str) -> Result<(), String> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let result = setting::with_names(words::serve, || {
        tls::handshake(conn, Some(deadline), &|| false).map_err(|e| match e {
            HandshakeFailure::Stopped | HandshakeFailure::TimedOut => format!(
                "no TLS handshake from the {peer} within {} s{hint}",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
            // The tool's own hint says more than the core's here.
            HandshakeFailure::Failed(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                format!("the {peer} closed the connection during the TLS handshake{hint}")
            }
            HandshakeFailure::Failed(e) => format!("TLS handshake with the {peer} failed: {e}"),
        })
    });
    if result.is_err() {
        linger(conn.tcp());
    }
    result
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

/// An accepted client, after the TLS handshake when serving over TLS;
/// compressed when its --listen says tcp+zstd:// (or tls+zstd://).
pub fn accept(tcp: TcpStream, tls: &Tls, zstd: bool) -> Result<Conn, String> {
    let compress = |conn: Conn| if zstd { conn.zstd() } else { conn };
    let Tls::Server(server) = tls else {
        return Ok(compress(Conn::plain(tcp)));
    };
    let mut conn = server
        .accept_from(tcp, "client")
        .map_err(|e| format!("TLS: {e}"))?;
    handshake(
        &mut conn,
        "client",
        " (does it connect with tls://? does it trust our certificate?)",
    )?;
    Ok(compress(conn))
}

/// One attempt to connect to `target`: every address it resolves to in
/// turn (keepalive set as the core's default), then the TLS handshake when
/// dialling out over TLS; compressed when its scheme says +zstd.
fn try_connect(target: &Endpoint, tls: &Tls) -> Result<Conn, String> {
    let addrs = target.resolve().map_err(|e| e.to_string())?;
    let keepalive = Config::default().keepalive;
    let tcp =
        connect_addrs(addrs, CONNECT_TIMEOUT, keepalive.as_ref()).map_err(|e| e.to_string())?;
    let compress = |conn: Conn| {
        if target.scheme().is_zstd() {
            conn.zstd()
        } else {
            conn
        }
    };
    let Tls::Client(client) = tls else {
        return Ok(compress(Conn::plain(tcp)));
    };
    let mut conn = setting::with_names(words::serve, || {
        client.connect_to(target.host(), tcp, "receiver")
    })?;
    handshake(
        &mut conn,
        "receiver",
        " (does it listen with tls-listen://? does it trust our certificate, or want one?)",
    )?;
    Ok(compress(conn))
}

/// Dials `target` until it answers. Reports a failure when it differs from
/// the last one reported in this outage, and the connection; not every
/// attempt.
pub fn dial(target: &Endpoint, tls: &Tls, backoff: &mut Backoff) -> Conn {
    let mut outage = Outage::default();
    loop {
        match try_connect(target, tls) {
            Ok(s) => {
                log::info!("{target}: connected");
                return s;
            }
            Err(e) => {
                if outage.down(&e) {
                    log::warn!(
                        "{target}: {e}; retrying until it is up (every {:?} to {:?})",
                        RETRY_MIN,
                        RETRY_MAX
                    );
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
