//! pcapovertcp-serve: serves a pcap or pcapng file (or standard input) as
//! PCAP-over-IP to every client that connects.
//!
//! From a file, each client gets the whole file from its start (optionally
//! several times, optionally rate-limited). From standard input the stream
//! is relayed live: each client gets the stream's header blocks, then the
//! records that arrive after it connected.
//!
//! With --connect it dials out instead of listening (for receivers that
//! listen, as PolarProxy's --pcapoveripconnect or `tcpdump -w - | nc HOST
//! PORT` do): each target gets its own connection, redialled with backoff
//! until the receiver is up and whenever the connection breaks.
//!
//! With --tls-cert/--tls-key (listening) or the --tls* options (with
//! --connect) every connection is TLS: the certificates are loaded by the
//! plugin's own code (`pcapovertcp::tls`), and each connection is a rustls
//! stream over its socket.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pcapovertcp::endpoint::{Endpoint, Scheme};
use pcapovertcp::parse::{Limits, StreamParser};
use pcapovertcp::tls::{ClientTls, ServerTls, SetupError, TlsOptions};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConfig, ServerConnection, StreamOwned};

const USAGE: &str = "\
usage: pcapovertcp-serve [options] FILE|-
       pcapovertcp-serve --connect HOST:PORT [--connect HOST:PORT ...] [options] FILE|-

Serves a pcap or pcapng file as PCAP-over-IP to every client that connects,
or with --connect sends it to receivers that listen; over TLS with the
--tls-* options.
With -, relays standard input (e.g. `tcpdump -U -w - | pcapovertcp-serve -`).

options:
  --listen ADDR:PORT  address to listen on (default 127.0.0.1:57012; port 0
                      picks a free port)
  --port-file PATH    write the bound port to PATH once listening
  --clients N         exit after N clients have been served (default: never)
  --wait-clients N    start sending only once N clients are connected (so
                      that N workers sharing one stream, ?share=I/N, all
                      get it from its first packet); default 1
  --connect HOST:PORT dial out to a receiver that listens, instead of
                      listening; repeat for several receivers, each gets its
                      own connection. Each is retried until the receiver is
                      up (every 100 ms, doubling up to 5 s). A connection
                      that breaks is redialled and gets a new stream: the
                      file again from its start, or the header and the live
                      records of standard input. With a file, exits once
                      every receiver has all of it. With -, reading starts
                      once the first receiver is connected. Not with
                      --listen, --port-file or --clients.
  --loop N            send a file's packets N times (default 1; 0 = forever);
                      pcap timestamps are shifted so time keeps moving forward
  --rate PPS          send at most PPS packets per second per client/target
  --tls-cert FILE     listening: serve over TLS with this certificate chain
                      (PEM; Zeek reads it with tls://HOST:PORT). With
                      --connect: the client certificate to present (mutual
                      TLS). Needs --tls-key.
  --tls-key FILE      the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or
                      SEC1)
  --tls-ca FILE       CA certificates (PEM). Listening: clients must present
                      a certificate signed by one of them. With --connect:
                      they verify the receiver's certificate (default: the
                      system's CAs).
  --tls-server-name NAME
                      with --connect: the name the receiver's certificate
                      must be valid for (default: the HOST of --connect)
  --tls               with --connect: dial out over TLS even without the
                      other --tls-* options (verified by the system's CAs);
                      any --tls-* option implies it
  -h, --help          this text

examples:
  pcapovertcp-serve --listen 0.0.0.0:57012 trace.pcap
  pcapovertcp-serve --connect sensor:57012 --rate 10000 trace.pcap
  tcpdump -U -w - -i eth0 | pcapovertcp-serve --connect sensor1:57012 --connect sensor2:57012 -
  # TLS, Zeek connects (pcapovertcp::tls://HOST:57012); with --tls-ca
  # clients must present a certificate the CA signed:
  pcapovertcp-serve --listen 0.0.0.0:57012 --tls-cert server.pem \\
      --tls-key server.key --tls-ca clients-ca.pem trace.pcap
  # TLS, Zeek listens (pcapovertcp::tls-listen://:57012); the receiver's
  # certificate must be valid for sensor and signed by ca.pem:
  tcpdump -U -w - -i eth0 | pcapovertcp-serve --connect sensor:57012 \\
      --tls-ca ca.pem --tls-cert sender.pem --tls-key sender.key -
";

/// First pause between connection attempts with --connect...
const RETRY_MIN: Duration = Duration::from_millis(100);
/// ...doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Bound on one connection attempt (a host that drops SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a receiver may take to close after the whole file was sent.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Bound on a TLS handshake (a peer that connects and says nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed handshake, how long the peer has to read our alert before
/// the socket is closed (closing with its bytes unread would reset the
/// connection, and the alert with it).
const LINGER: Duration = Duration::from_secs(1);

struct Options {
    listen: SocketAddr,
    listen_given: bool,
    connect: Vec<Endpoint>,
    port_file: Option<String>,
    clients: Option<u64>,
    wait_clients: usize,
    loops: u64,
    rate: Option<f64>,
    input: String,
    /// --tls given.
    tls: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_server_name: Option<String>,
}

impl Options {
    /// Whether connections are TLS: any --tls* option.
    fn tls_wanted(&self) -> bool {
        self.tls
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_ca.is_some()
            || self.tls_server_name.is_some()
    }

    /// The options in the terms of the plugin's TLS code.
    fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
            // Listening with a CA: clients must present a certificate.
            require_client_cert: self.tls_ca.is_some(),
            allowed_names: Vec::new(),
        }
    }
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        listen: "127.0.0.1:57012".parse().expect("valid literal"),
        listen_given: false,
        connect: Vec::new(),
        port_file: None,
        clients: None,
        wait_clients: 1,
        loops: 1,
        rate: None,
        input: String::new(),
        tls: false,
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
        tls_server_name: None,
    };
    let mut input = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--listen" => {
                let v = value("--listen")?;
                o.listen = v
                    .parse()
                    .map_err(|_| format!("--listen {v}: expected ADDR:PORT"))?;
                o.listen_given = true
            }
            "--connect" => {
                let v = value("--connect")?;
                // The plugin's own endpoint grammar: HOST:PORT, [V6]:PORT.
                let target = Endpoint::parse(&v).map_err(|e| format!("--connect: {e}"))?;
                o.connect.push(target)
            }
            "--tls" => o.tls = true,
            "--tls-cert" => o.tls_cert = Some(value("--tls-cert")?.into()),
            "--tls-key" => o.tls_key = Some(value("--tls-key")?.into()),
            "--tls-ca" => o.tls_ca = Some(value("--tls-ca")?.into()),
            "--tls-server-name" => o.tls_server_name = Some(value("--tls-server-name")?),
            "--port-file" => o.port_file = Some(value("--port-file")?),
            "--clients" => {
                let v = value("--clients")?;
                o.clients = Some(v.parse().map_err(|_| format!("--clients {v}"))?)
            }
            "--wait-clients" => {
                let v = value("--wait-clients")?;
                o.wait_clients =
                    v.parse().ok().filter(|&n: &usize| n >= 1).ok_or_else(|| {
                        format!("--wait-clients {v}: expected a number of at least 1")
                    })?
            }
            "--loop" => {
                let v = value("--loop")?;
                o.loops = v.parse().map_err(|_| format!("--loop {v}"))?
            }
            "--rate" => {
                let v = value("--rate")?;
                let r: f64 = v.parse().map_err(|_| format!("--rate {v}"))?;
                if r.is_nan() || r <= 0.0 {
                    return Err(format!("--rate {v}: must be positive"));
                }
                o.rate = Some(r)
            }
            _ if input.is_none() && (arg == "-" || !arg.starts_with('-')) => input = Some(arg),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    o.input = input.ok_or("missing FILE or -")?;
    Ok(o)
}

/// Options that make no sense together, as one line.
fn conflicts(o: &Options) -> Result<(), String> {
    if let Some(t) = o.connect.iter().find(|t| t.scheme() != Scheme::Tcp) {
        return Err(format!(
            "--connect {t}: expected HOST:PORT, without a scheme (for TLS, add --tls or the other --tls-* options)"
        ));
    }
    if o.tls_cert.is_some() != o.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together: set both or neither".into());
    }
    if o.connect.is_empty() {
        if o.tls_server_name.is_some() {
            return Err("--tls-server-name needs --connect: it is the name the receiver's certificate must be valid for".into());
        }
        if o.tls && o.tls_cert.is_none() {
            return Err("--tls needs --connect; to serve over TLS when listening, give --tls-cert and --tls-key".into());
        }
        if o.tls_ca.is_some() && o.tls_cert.is_none() {
            return Err("--tls-ca needs --tls-cert and --tls-key when listening: clients connect over TLS to the server's certificate".into());
        }
        return Ok(());
    }
    if let Some(name) = &o.tls_server_name {
        if ServerName::try_from(name.as_str()).is_err() {
            return Err(format!(
                "--tls-server-name {name}: expected a DNS name or an IP address"
            ));
        }
    } else if o.tls_wanted() {
        if let Some(t) = o
            .connect
            .iter()
            .find(|t| ServerName::try_from(t.host()).is_err())
        {
            return Err(format!(
                "--connect {t}: \"{}\" is not a valid TLS server name; give the name in the receiver's certificate with --tls-server-name",
                t.host()
            ));
        }
    }
    connect_conflicts(o).map_err(str::to_string)
}

/// Options that exclude --connect.
fn connect_conflicts(o: &Options) -> Result<(), &'static str> {
    if o.listen_given {
        return Err("--connect and --listen exclude each other: with --connect the tool dials out and does not listen");
    }
    if o.port_file.is_some() {
        return Err(
            "--port-file needs --listen: with --connect there is no listening port to write",
        );
    }
    if o.wait_clients > 1 && !o.connect.is_empty() {
        return Err("--wait-clients needs --listen: with --connect the tool dials its targets");
    }
    if o.clients.is_some() {
        return Err(
            "--clients needs --listen: with --connect the tool ends once every target has the file",
        );
    }
    Ok(())
}

/// A stream cut into its units: the header blocks, then one unit per record.
struct Framed {
    data: Vec<u8>,
    /// Byte ranges of the units before the first packet.
    header_end: usize,
    /// (start, end, ts_sec field offset or None) of each packet unit.
    packets: Vec<(usize, usize)>,
    /// For pcap: whether multi-byte fields are big-endian.
    pcap_big_endian: Option<bool>,
    first_ts: i64,
    last_ts: i64,
}

fn frame(data: Vec<u8>) -> Result<Framed, String> {
    let mut parser = StreamParser::new(Limits::default());
    let mut header_end = None;
    let mut packets = Vec::new();
    let (mut first_ts, mut last_ts) = (None, 0);
    let consumed = parser
        .parse_units(&data, |range, record| match record {
            None if header_end.is_none() => {}
            None => {}
            Some(r) => {
                header_end.get_or_insert(range.start);
                first_ts.get_or_insert(r.ts_sec);
                last_ts = r.ts_sec;
                packets.push((range.start, range.end));
            }
        })
        .map_err(|e| e.to_string())?;
    if consumed != data.len() {
        eprintln!(
            "pcapovertcp-serve: warning: the last {} bytes are not a whole record; they are not sent",
            data.len() - consumed
        );
    }
    let pcap_big_endian = match data.get(..4) {
        Some([0xa1, 0xb2, ..]) => Some(true),
        Some([_, _, 0xb2, 0xa1]) => Some(false),
        _ => None,
    };
    Ok(Framed {
        header_end: header_end.unwrap_or(consumed),
        data,
        packets,
        pcap_big_endian,
        first_ts: first_ts.unwrap_or(0),
        last_ts,
    })
}

/// Paces writes to a packet rate.
struct Pacer {
    rate: Option<f64>,
    start: Instant,
    sent: u64,
}

impl Pacer {
    fn tick(&mut self) {
        let Some(rate) = self.rate else { return };
        self.sent += 1;
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
    }
}

/// One client's or target's connection: plain TCP, or TLS over it.
enum Conn {
    Plain(TcpStream),
    /// Listening: we are the TLS server.
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// --connect: we are the TLS client.
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Server(t) => &t.sock,
            Conn::Client(t) => &t.sock,
        }
    }

    /// Ends our direction of the stream: a TLS close_notify, then the FIN.
    fn end(&mut self) -> io::Result<()> {
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
enum Tls {
    Off,
    Server(Arc<ServerConfig>),
    Client(ClientTls),
}

/// Loads the certificates and keys with the plugin's own code; an unusable
/// file is one line naming the option and the file.
fn tls_setup(o: &Options) -> Result<Tls, String> {
    if !o.tls_wanted() {
        return Ok(Tls::Off);
    }
    let options = o.tls_options();
    let tls = if o.connect.is_empty() {
        ServerTls::new(&options).map(|s| Tls::Server(s.config()))
    } else {
        ClientTls::new(&options).map(Tls::Client)
    };
    tls.map_err(|e| setup_error(&e))
}

/// A TLS setup error in the tool's terms: its flags, not the plugin's
/// options.
fn setup_error(e: &SetupError) -> String {
    e.to_string()
        .replace("PcapOverTcp::tls_cert_file", "--tls-cert")
        .replace("PcapOverTcp::tls_key_file", "--tls-key")
        .replace("PcapOverTcp::tls_ca_file", "--tls-ca")
        .replace(" for tls://", "")
}

/// Completes a TLS handshake, bounded by HANDSHAKE_TIMEOUT. On failure the
/// peer gets our alert before the socket closes; the error is one line.
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
    timeouts(tcp, Some(HANDSHAKE_TIMEOUT))?;
    let mut result = Ok(());
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(tcp) {
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

/// What to check when the peer refused us over TLS, or we it.
fn tls_hint(e: &io::Error) -> &'static str {
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
fn accept(tcp: TcpStream, tls: &Tls) -> Result<Conn, String> {
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

fn serve_file(out: &mut Conn, framed: &Framed, loops: u64, rate: Option<f64>) -> io::Result<()> {
    let _ = out.tcp().set_nodelay(true);
    out.write_all(&framed.data[..framed.header_end])?;
    if framed.packets.is_empty() {
        // Nothing to repeat: --loop 0 would spin for ever sending nothing.
        return Ok(());
    }
    let mut pacer = Pacer {
        rate,
        start: Instant::now(),
        sent: 0,
    };
    let span = (framed.last_ts - framed.first_ts + 1).max(1);
    let mut round: u64 = 0;
    let mut scratch = Vec::new();
    while loops == 0 || round < loops {
        let shift = span.saturating_mul(round as i64);
        if rate.is_none() && shift == 0 {
            // The fast path: the records as they are, in one write.
            out.write_all(&framed.data[framed.header_end..])?;
        } else {
            for &(start, end) in &framed.packets {
                let unit = &framed.data[start..end];
                match framed.pcap_big_endian {
                    Some(big) if shift != 0 => {
                        scratch.clear();
                        scratch.extend_from_slice(unit);
                        let ts = [unit[0], unit[1], unit[2], unit[3]];
                        let old = if big {
                            u32::from_be_bytes(ts)
                        } else {
                            u32::from_le_bytes(ts)
                        };
                        let new = (i64::from(old) + shift) as u32;
                        let bytes = if big {
                            new.to_be_bytes()
                        } else {
                            new.to_le_bytes()
                        };
                        scratch[..4].copy_from_slice(&bytes);
                        out.write_all(&scratch)?;
                    }
                    _ => out.write_all(unit)?,
                }
                pacer.tick();
            }
        }
        round += 1;
    }
    out.flush()
}

/// Live relay from standard input.
struct Relay {
    header: Vec<u8>,
    header_done: bool,
    /// Each client, and for a --connect target where to report that the
    /// relay dropped it (so its thread redials).
    clients: Vec<(Conn, Option<Sender<io::Error>>)>,
}

impl Relay {
    /// Ends every client's stream (after the end of standard input).
    fn end_all(&mut self) {
        for (c, _) in &mut self.clients {
            let _ = c.end();
        }
    }
}

fn relay_stdin(relay: Arc<Mutex<Relay>>) -> io::Result<()> {
    let mut parser = StreamParser::new(Limits::default());
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(io::Error::other("a unit larger than the relay buffer"));
        }
        let n = stdin.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut units = Vec::new();
        let consumed = parser
            .parse_units(&buf[..filled], |range, record| {
                units.push((range, record.is_some()))
            })
            .map_err(io::Error::other)?;
        let mut r = relay.lock().unwrap_or_else(|e| e.into_inner());
        for (range, is_packet) in units {
            let bytes = &buf[range];
            if !r.header_done && !is_packet {
                r.header.extend_from_slice(bytes);
            } else {
                r.header_done = true;
            }
            // A client that cannot keep up or went away is dropped.
            r.clients.retain_mut(|(c, lost)| match c.write_all(bytes) {
                Ok(()) => true,
                Err(e) => {
                    if let Some(lost) = lost {
                        let _ = lost.send(e);
                    }
                    false
                }
            });
        }
        drop(r);
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
    }
}

/// How the stdin relay ended, as the tool's exit.
fn exit_code(relayed: io::Result<()>) -> ExitCode {
    match relayed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcapovertcp-serve: standard input: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and frames the file to serve; an unreadable or invalid one is
/// reported and fails the tool.
fn load(input: &str) -> Result<Arc<Framed>, ExitCode> {
    match fs::read(input).map_err(|e| e.to_string()).and_then(frame) {
        Ok(f) => Ok(Arc::new(f)),
        Err(e) => {
            eprintln!("pcapovertcp-serve: {input}: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            if msg.is_empty() {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("pcapovertcp-serve: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = conflicts(&o) {
        eprintln!("pcapovertcp-serve: {msg}");
        return ExitCode::from(2);
    }
    let tls = match tls_setup(&o) {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("pcapovertcp-serve: {msg}");
            return ExitCode::FAILURE;
        }
    };
    if !o.connect.is_empty() {
        return connect_mode(&o, &tls);
    }
    let listener = match TcpListener::bind(o.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pcapovertcp-serve: cannot listen on {}: {e}", o.listen);
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    eprintln!(
        "pcapovertcp-serve: listening on {}",
        listener.local_addr().map_or(o.listen, |a| a)
    );
    if let Some(path) = &o.port_file {
        // Written whole, then renamed, so a reader never sees a partial port.
        let tmp = format!("{path}.tmp");
        if let Err(e) = fs::write(&tmp, format!("{local}\n")).and_then(|()| fs::rename(&tmp, path))
        {
            eprintln!("pcapovertcp-serve: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }

    if o.input == "-" {
        let relay = Arc::new(Mutex::new(Relay {
            header: Vec::new(),
            header_done: false,
            clients: Vec::new(),
        }));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let relay = relay.clone();
            let wait = o.wait_clients;
            thread::spawn(move || {
                for tcp in listener.incoming().flatten() {
                    let plain = matches!(tls, Tls::Off);
                    let (relay, ready, tls) = (relay.clone(), ready_tx.clone(), tls.clone());
                    let join = move || {
                        let peer = peer_of(&tcp);
                        let mut conn = match accept(tcp, &tls) {
                            Ok(c) => c,
                            Err(e) => {
                                eprintln!("pcapovertcp-serve: {peer}: {e}");
                                return;
                            }
                        };
                        let mut r = relay.lock().unwrap_or_else(|e| e.into_inner());
                        if conn.write_all(&r.header).is_ok() {
                            r.clients.push((conn, None));
                        }
                        if r.clients.len() >= wait {
                            let _ = ready.send(());
                        }
                    };
                    // A TLS handshake runs on its own thread: a client that
                    // is slow to shake hands holds up no other.
                    if plain {
                        join()
                    } else {
                        thread::spawn(join);
                    }
                }
            });
        }
        // Standard input is not read before enough clients are connected.
        let _ = ready_rx.recv();
        let result = relay_stdin(relay.clone());
        relay.lock().unwrap_or_else(|e| e.into_inner()).end_all();
        return exit_code(result);
    }

    let framed = match load(&o.input) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut workers = Vec::new();
    let mut served = 0u64;
    // Clients held back until --wait-clients of them are connected.
    let mut waiting = Vec::new();
    let mut started = false;
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("pcapovertcp-serve: accept: {e}");
                continue;
            }
        };
        waiting.push(conn);
        served += 1;
        let last = o.clients.is_some_and(|n| served >= n);
        if waiting.len() < o.wait_clients && !started && !last {
            continue;
        }
        // Once started, later clients are served as they come.
        started = true;
        for tcp in waiting.drain(..) {
            let (framed, tls) = (framed.clone(), tls.clone());
            let (loops, rate) = (o.loops, o.rate);
            workers.push(thread::spawn(move || {
                let peer = peer_of(&tcp);
                let result = accept(tcp, &tls).and_then(|mut conn| {
                    serve_file(&mut conn, &framed, loops, rate).map_err(|e| e.to_string())?;
                    let _ = conn.end();
                    Ok(())
                });
                if let Err(e) = result {
                    eprintln!("pcapovertcp-serve: {peer}: {e}");
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
    ExitCode::SUCCESS
}

/// The peer's address, for messages.
fn peer_of(tcp: &TcpStream) -> String {
    tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default()
}

/// Exponential backoff between connection attempts.
struct Backoff(Duration);

impl Backoff {
    fn wait(&mut self) {
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
    let mut last = None;
    for addr in target.to_socket_addrs()? {
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
fn dial(target: &Endpoint, tls: &Tls, backoff: &mut Backoff) -> Conn {
    let mut reported: Option<String> = None;
    loop {
        match try_connect(target, tls) {
            Ok(s) => {
                eprintln!("pcapovertcp-serve: {target}: connected");
                return s;
            }
            Err(e) => {
                if reported.as_deref() != Some(e.as_str()) {
                    eprintln!(
                        "pcapovertcp-serve: {target}: {e}; retrying until it is up (every {:?} to {:?})",
                        RETRY_MIN, RETRY_MAX
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
fn finish(conn: &mut Conn) -> io::Result<()> {
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

/// Sends the file to `target` until one connection has carried all of it.
fn send_file_to(target: &Endpoint, tls: &Tls, framed: &Framed, loops: u64, rate: Option<f64>) {
    let mut backoff = Backoff(RETRY_MIN);
    loop {
        let mut conn = dial(target, tls, &mut backoff);
        let since = Instant::now();
        match serve_file(&mut conn, framed, loops, rate).and_then(|()| finish(&mut conn)) {
            Ok(()) => {
                eprintln!("pcapovertcp-serve: {target}: sent the whole file");
                return;
            }
            Err(e) => eprintln!(
                "pcapovertcp-serve: {target}: connection lost: {e}{}; redialling to send the file again from its start",
                tls_hint(&e)
            ),
        }
        drop(conn);
        if since.elapsed() >= RETRY_MAX {
            backoff = Backoff(RETRY_MIN);
        }
        backoff.wait();
    }
}

/// Keeps `target` among the relay's clients: dials, joins (the header so
/// far, then the live records), and redials when the relay drops it.
fn relay_to(target: &Endpoint, tls: &Tls, relay: &Mutex<Relay>, first: &Sender<()>) {
    let mut backoff = Backoff(RETRY_MIN);
    loop {
        let mut conn = dial(target, tls, &mut backoff);
        let since = Instant::now();
        let (lost_tx, lost_rx) = mpsc::channel();
        {
            let mut r = relay.lock().unwrap_or_else(|e| e.into_inner());
            match conn.write_all(&r.header) {
                Ok(()) => r.clients.push((conn, Some(lost_tx))),
                Err(e) => {
                    let _ = lost_tx.send(e);
                }
            }
        }
        let _ = first.send(());
        let why = lost_rx
            .recv()
            .map_or_else(|_| "closed".to_string(), |e| format!("{e}{}", tls_hint(&e)));
        eprintln!(
            "pcapovertcp-serve: {target}: connection lost: {why}; redialling for a new stream (header, then live records)"
        );
        if since.elapsed() >= RETRY_MAX {
            backoff = Backoff(RETRY_MIN);
        }
        backoff.wait();
    }
}

/// --connect: one thread per target.
fn connect_mode(o: &Options, tls: &Tls) -> ExitCode {
    if o.input == "-" {
        let relay = Arc::new(Mutex::new(Relay {
            header: Vec::new(),
            header_done: false,
            clients: Vec::new(),
        }));
        let (first_tx, first_rx) = mpsc::channel();
        for target in &o.connect {
            let (target, tls) = (target.clone(), tls.clone());
            let (relay, first) = (relay.clone(), first_tx.clone());
            thread::spawn(move || relay_to(&target, &tls, &relay, &first));
        }
        drop(first_tx);
        // Nothing is read (the pipe holds the capture) until a target is
        // connected, so a single target loses nothing; the others join live.
        let _ = first_rx.recv();
        let result = relay_stdin(relay.clone());
        relay.lock().unwrap_or_else(|e| e.into_inner()).end_all();
        return exit_code(result);
    }

    let framed = match load(&o.input) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let workers: Vec<_> = o
        .connect
        .iter()
        .map(|target| {
            let (target, tls, framed) = (target.clone(), tls.clone(), framed.clone());
            let (loops, rate) = (o.loops, o.rate);
            thread::spawn(move || send_file_to(&target, &tls, &framed, loops, rate))
        })
        .collect();
    let mut code = ExitCode::SUCCESS;
    for w in workers {
        if w.join().is_err() {
            code = ExitCode::FAILURE;
        }
    }
    code
}
