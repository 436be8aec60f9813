//! PCAP-over-TLS: the `tls://` and `tls-listen://` endpoints.
//!
//! rustls with the `ring` provider (chosen explicitly: no C build of
//! aws-lc), TLS 1.2 and 1.3, certificates and keys in PEM (PKCS#8, PKCS#1
//! and SEC1 keys) through rustls-pki-types. The files are read once, when
//! the source opens; rotating them takes a restart.
//!
//! A connection's [`Transport`] is what [`crate::stream::reader`] reads from:
//! the plain socket, or rustls over it. Decrypted bytes are read straight
//! into the connection's buffer (rustls' own copy out of its record buffer
//! is the only one), so the zero-copy path after it is unchanged.
//!
//! Every failure becomes one line in an operator's words: which file, which
//! names, which dates, which side refused whom.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::BytesMut;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

use crate::net::compress::ZstdStream;
use crate::net::connect::TICK;
use crate::shared::setting::{self, Names, Setting};

/// Where the CAs that verify a peer come from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaSource {
    File,
    System,
}

/// The `PcapOverTcp::tls_*` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM bundle that verifies the peer; for `tls://`, `None` uses the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The name to verify (and send as SNI) for `tls://`; `None` uses the
    /// endpoint's host.
    pub server_name: Option<String>,
    /// Our certificate chain and key: the server's for `tls-listen://`, the
    /// client's for `tls://` with mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `tls-listen://` with a CA file: senders must present a certificate
    /// it signed (always so when `allowed_names` is set).
    pub require_client_cert: bool,
    /// `tls-listen://`: accept only client certificates valid for one of
    /// these names (DNS names or IP addresses in the certificate's subject
    /// alternative names); empty accepts any the CA signed.
    pub allowed_names: Vec<String>,
}

/// Why TLS could not be set up from the options (a configuration error).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {option} {path}: {source}")]
    Read {
        option: Setting,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{option} {path} holds no {what} in PEM form")]
    Empty {
        option: Setting,
        path: String,
        what: &'static str,
    },
    #[error("{option} {path}: {what}")]
    Invalid {
        option: Setting,
        path: String,
        what: String,
    },
    #[error(
        "tls-listen:// needs a certificate and its key: set {} and {}",
        Setting::TlsCertFile,
        Setting::TlsKeyFile
    )]
    NoServerCert,
    #[error(
        "{} and {} go together: set both or neither",
        Setting::TlsCertFile,
        Setting::TlsKeyFile
    )]
    CertWithoutKey,
    #[error(
        "the key in {} does not match the certificate in {}",
        Setting::TlsKeyFile,
        Setting::TlsCertFile
    )]
    KeyMismatch,
    #[error(
        "{} needs {}: without it no client certificate is asked for",
        Setting::TlsAllowedNames,
        Setting::TlsCaFile
    )]
    NamesWithoutCa,
    #[error(
        "cannot load the system's CA certificates for tls:// ({0}); set {ca}",
        ca = Setting::TlsCaFile
    )]
    NoSystemRoots(String),
    #[error("{0}")]
    BadServerName(String),
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

impl SetupError {
    /// The one line, with settings named in a front end's words.
    pub fn render(&self, names: Names) -> String {
        setting::with_names(names, || self.to_string())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(option: Setting, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Read {
        option,
        path: path.display().to_string(),
        source,
    })
}

fn certs(option: Setting, path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let pem = read_file(option, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SetupError::Invalid {
            option,
            path: path.display().to_string(),
            what: format!("not a readable PEM certificate bundle ({e})"),
        })?;
    if certs.is_empty() {
        return Err(SetupError::Empty {
            option,
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, SetupError> {
    let option = Setting::TlsKeyFile;
    let pem = read_file(option, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => SetupError::Empty {
            option,
            path: path.display().to_string(),
            what: "private key (PKCS#8, PKCS#1 or SEC1)",
        },
        e => SetupError::Invalid {
            option,
            path: path.display().to_string(),
            what: format!("not a readable PEM private key ({e})"),
        },
    })
}

fn roots(path: &Path) -> Result<RootCertStore, SetupError> {
    let option = Setting::TlsCaFile;
    let mut store = RootCertStore::empty();
    for cert in certs(option, path)? {
        store.add(cert).map_err(|e| SetupError::Invalid {
            option,
            path: path.display().to_string(),
            what: format!("a certificate is not usable as a CA ({e})"),
        })?;
    }
    Ok(store)
}

fn system_roots() -> Result<RootCertStore, SetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        return Err(SetupError::NoSystemRoots(why));
    }
    Ok(store)
}

fn our_cert(
    o: &TlsOptions,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, SetupError> {
    match (&o.cert_file, &o.key_file) {
        (Some(c), Some(k)) => Ok(Some((certs(Setting::TlsCertFile, c)?, key(k)?))),
        (None, None) => Ok(None),
        _ => Err(SetupError::CertWithoutKey),
    }
}

fn rustls_setup(e: rustls::Error) -> SetupError {
    match e {
        rustls::Error::InconsistentKeys(_) => SetupError::KeyMismatch,
        e => SetupError::Rustls(e.to_string()),
    }
}

/// What `tls://` endpoints connect with.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
    /// Where the CAs that verify servers come from, for messages.
    ca_source: CaSource,
}

impl ClientTls {
    pub fn new(o: &TlsOptions) -> Result<ClientTls, SetupError> {
        let roots = match &o.ca_file {
            Some(path) => roots(path)?,
            None => system_roots()?,
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| SetupError::Rustls(e.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_setup)?
            .with_webpki_verifier(verifier);
        let config = match our_cert(o)? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(rustls_setup)?,
            None => builder.with_no_client_auth(),
        };
        let tls = ClientTls {
            config: Arc::new(config),
            server_name: o.server_name.clone(),
            ca_source: if o.ca_file.is_some() {
                CaSource::File
            } else {
                CaSource::System
            },
        };
        if o.server_name.is_some() {
            tls.server_name("").map_err(SetupError::BadServerName)?;
        }
        Ok(tls)
    }

    /// The rustls configuration built from the options, for callers that
    /// drive rustls themselves (pcapovertcp-serve writes through it).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name to verify (and send as SNI) when connecting to `host`: the
    /// `tls_server_name` option, or else `host` itself.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => ServerName::try_from(name.clone()).map_err(|_| {
                format!(
                    "\"{name}\" ({}) is not a valid TLS server name",
                    Setting::TlsServerName
                )
            }),
            None => ServerName::try_from(host.to_string()).map_err(|_| {
                format!(
                    "the endpoint's host \"{host}\" is not a valid TLS server name; set {}",
                    Setting::TlsServerName
                )
            }),
        }
    }

    /// Starts the handshake over a connected socket to `host` (the
    /// endpoint's host, unless `tls_server_name` names another).
    pub fn connect(&self, host: &str, tcp: TcpStream) -> Result<Transport, String> {
        self.connect_to(host, tcp, "server")
    }

    /// As [`ClientTls::connect`], to a peer called `peer` in messages.
    pub fn connect_to(
        &self,
        host: &str,
        tcp: TcpStream,
        peer: &'static str,
    ) -> Result<Transport, String> {
        let name = self.server_name(host)?;
        let conn =
            rustls::ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        Ok(Transport::Tls(Box::new(TlsStream::new(
            rustls::Connection::Client(conn),
            tcp,
            self.ca_source,
            peer,
        ))))
    }
}

/// What `tls-listen://` endpoints accept senders with.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    pub fn new(o: &TlsOptions) -> Result<ServerTls, SetupError> {
        let (chain, key) = our_cert(o)?.ok_or(SetupError::NoServerCert)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_setup)?;
        let builder = match &o.ca_file {
            Some(path) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(path)?), provider());
                // Allowed names need a certificate to check.
                let verifier = if o.require_client_cert || !o.allowed_names.is_empty() {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| SetupError::Rustls(e.to_string()))?;
                if o.allowed_names.is_empty() {
                    builder.with_client_cert_verifier(verifier)
                } else {
                    builder.with_client_cert_verifier(Arc::new(NamedClients {
                        inner: verifier,
                        names: o.allowed_names.clone(),
                    }))
                }
            }
            None if !o.allowed_names.is_empty() => return Err(SetupError::NamesWithoutCa),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(rustls_setup)?;
        // No TLS 1.3 session tickets: nothing resumes sessions here, and a
        // sender that writes its stream and closes without reading would
        // answer the tickets with a reset that destroys its stream's end.
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration built from the options (the
    /// `tls_allowed_names` check included), for callers that drive rustls
    /// themselves (pcapovertcp-serve writes through it).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Starts the handshake over an accepted socket, from a sender.
    pub fn accept(&self, tcp: TcpStream) -> Result<Transport, String> {
        self.accept_from(tcp, "sender")
    }

    /// Starts the handshake over an accepted socket, from a peer called
    /// `peer` in messages.
    pub fn accept_from(&self, tcp: TcpStream, peer: &'static str) -> Result<Transport, String> {
        let conn = rustls::ServerConnection::new(self.config.clone()).map_err(|e| e.to_string())?;
        Ok(Transport::Tls(Box::new(TlsStream::new(
            rustls::Connection::Server(conn),
            tcp,
            CaSource::File,
            peer,
        ))))
    }
}

/// `tls_allowed_names`: the CA's verdict, then the names, inside the
/// handshake, so that a refused sender gets a TLS alert (bad certificate)
/// and knows it was refused.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    names: Vec<String>,
}

/// The certificate is valid, but for none of the allowed names.
#[derive(Debug)]
struct NotAllowed(String);

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAllowed {}

impl rustls::server::danger::ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let allowed = webpki::EndEntityCert::try_from(end_entity).is_ok_and(|ee| {
            self.names.iter().any(|name| {
                ServerName::try_from(name.as_str())
                    .is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
            })
        });
        if allowed {
            return Ok(verified);
        }
        let why = NotAllowed(format!(
            "the sender's client certificate is valid for none of {} ({})",
            Setting::TlsAllowedNames,
            self.names.join(", ")
        ));
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(why)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A connection's bytes: plain, or decrypted from TLS, or either of them
/// decompressed (a `+zstd` scheme; see [`crate::net::compress`]).
pub enum Transport {
    /// Shared only with weak watchers (see [`Transport::watch`]).
    Plain(Arc<TcpStream>),
    Tls(Box<TlsStream>),
    Zstd(Box<ZstdStream>),
}

impl Transport {
    pub fn plain(tcp: TcpStream) -> Transport {
        Transport::Plain(Arc::new(tcp))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.tcp,
            Transport::Zstd(z) => z.inner.tcp(),
        }
    }

    /// The socket, for a watcher that must not keep it open: the merge
    /// asks it whether bytes wait unread (see [`unread`]).
    pub fn watch(&self) -> Weak<TcpStream> {
        match self {
            Transport::Plain(s) => Arc::downgrade(s),
            Transport::Tls(t) => Arc::downgrade(&t.tcp),
            Transport::Zstd(z) => z.inner.watch(),
        }
    }

    /// Appends the next bytes of the stream to `buf`: what one recv()
    /// returns, or what the next TLS records decrypt to. 0 at the end of the
    /// stream. A receive timeout surfaces as `WouldBlock`, at any point of
    /// a TLS handshake or record.
    pub fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => recv_into(s, buf),
            Transport::Tls(t) => t.read_into(buf),
            Transport::Zstd(z) => z.read_into(buf),
        }
    }
}

/// What the tool writes to its clients and receivers: over TLS each write
/// is encrypted and sent before it returns, as a plain socket's would be;
/// compressed, each is compressed, sent and flushed (a zstd block) before
/// it returns.
impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => (&**s).write(buf),
            Transport::Tls(t) => {
                let n = t.conn.writer().write(buf)?;
                t.flush()?;
                Ok(n)
            }
            Transport::Zstd(z) => {
                z.write_parts([buf])?;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => (&**s).flush(),
            Transport::Tls(t) => t.flush(),
            Transport::Zstd(z) => z.inner.flush(),
        }
    }
}

impl Transport {
    /// Ends our direction of the stream: the end of the zstd frame, a TLS
    /// close_notify, then the FIN.
    pub fn end(&mut self) -> io::Result<()> {
        if let Transport::Zstd(z) = self {
            z.finish()?;
            return z.inner.end();
        }
        if let Transport::Tls(t) = self {
            t.conn.send_close_notify();
            t.flush()?;
        }
        self.tcp().shutdown(std::net::Shutdown::Write)
    }
}

/// Why [`handshake`] did not complete.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The caller is closing.
    Stopped,
    /// The deadline passed.
    TimedOut,
    /// The peer refused us or we it, or the connection failed: an error
    /// in an operator's words (see [`TlsError`]) or the socket's.
    Failed(io::Error),
}

/// Completes the TLS handshake of `transport` (a plain one has none) by
/// `deadline` (None: no limit), an absolute deadline: every step waits at
/// most until it (and one tick, to see `stopping`), so a peer that drips
/// its bytes gets no more time than one that sends none. The socket's read
/// and write timeouts are as before afterwards. On failure, our alert has
/// been sent.
pub fn handshake(
    transport: &mut Transport,
    deadline: Option<Instant>,
    stopping: &dyn Fn() -> bool,
) -> Result<(), HandshakeFailure> {
    let tls = match transport {
        Transport::Plain(_) => return Ok(()),
        Transport::Tls(tls) => tls,
        Transport::Zstd(z) => return handshake(&mut z.inner, deadline, stopping),
    };
    let tcp = tls.tcp.try_clone().map_err(HandshakeFailure::Failed)?;
    let saved = (tcp.read_timeout(), tcp.write_timeout());
    let result = loop {
        if tls.handshake_done() {
            break Ok(());
        }
        if stopping() {
            break Err(HandshakeFailure::Stopped);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            break Err(HandshakeFailure::TimedOut);
        }
        let step = left.map_or(TICK, |l| l.min(TICK));
        if let Err(e) = tcp
            .set_read_timeout(Some(step))
            .and_then(|()| tcp.set_write_timeout(Some(step)))
        {
            break Err(HandshakeFailure::Failed(e));
        }
        match tls.handshake_step() {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) if stopping() => break Err(HandshakeFailure::Stopped),
            Err(e) => break Err(HandshakeFailure::Failed(e)),
        }
    };
    if let (Ok(read), Ok(write)) = saved {
        let _ = tcp.set_read_timeout(read);
        let _ = tcp.set_write_timeout(write);
    }
    result
}

/// The stream's bytes as a plain reader, for callers that copy them on
/// (pcapovertcp-serve relays an upstream server's stream as it is). 0 at
/// the end of the stream, as from `read_into`.
impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => (&**s).read(buf),
            Transport::Tls(t) => t.read_plain(buf),
            Transport::Zstd(z) => z.read_plain(buf),
        }
    }
}

/// Whether bytes wait unread in `tcp`'s receive queue, asked without
/// reading them and without waiting. False at the stream's end (nothing
/// more will come) and once the socket is closed.
pub fn unread(tcp: &Weak<TcpStream>) -> bool {
    let Some(tcp) = tcp.upgrade() else {
        return false;
    };
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    matches!(socket2::SockRef::from(&*tcp).recv_with_flags(&mut byte, flags), Ok(n) if n > 0)
}

/// Appends what one recv() returns to `buf`, without initialising the
/// buffer first (the zero-fill cost as much as a quarter of the reader's
/// time at 1500-byte packets).
fn recv_into(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let room = spare.len();
    let n = socket2::SockRef::from(stream).recv(spare)?.min(room);
    // SAFETY: recv() initialised the first `n` bytes of the spare capacity
    // (and never reports more than it was given, which `min` also ensures).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// The most plaintext one call reads; zero-filled first, since rustls
/// writes into initialised memory only.
const TLS_READ: usize = 64 * 1024;

pub struct TlsStream {
    conn: rustls::Connection,
    /// Shared only with weak watchers (see [`Transport::watch`]).
    tcp: Arc<TcpStream>,
    /// The first bytes the peer sent, to recognise a peer that does not
    /// speak TLS.
    first: Vec<u8>,
    /// Where the CAs that verify the peer come from, for messages.
    ca_source: CaSource,
    /// What the peer is called in messages ("sender", "client", "server").
    peer: &'static str,
}

/// Why a TLS connection failed, in an operator's words (without the peer's
/// name, which the caller adds).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

impl TlsStream {
    fn new(
        conn: rustls::Connection,
        tcp: TcpStream,
        ca_source: CaSource,
        peer: &'static str,
    ) -> TlsStream {
        TlsStream {
            conn,
            tcp: Arc::new(tcp),
            first: Vec::new(),
            ca_source,
            peer,
        }
    }

    /// Whether the handshake is over.
    pub fn handshake_done(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// Takes the handshake one step: reads what the peer sent and answers.
    /// `WouldBlock` (the receive timeout) leaves it to be called again.
    pub fn handshake_step(&mut self) -> io::Result<()> {
        self.flush()?;
        if self.handshake_done() {
            return Ok(());
        }
        self.read_tls_step()?;
        self.flush()
    }

    /// Reads TLS records from the socket and processes them; an error in
    /// an operator's words.
    fn read_tls_step(&mut self) -> io::Result<usize> {
        let read = {
            let mut recording = Recording {
                tcp: &self.tcp,
                first: &mut self.first,
            };
            self.conn.read_tls(&mut recording)
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if self.conn.is_handshaking() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(hung_up(format!("{} ({e})", self.handshake_eof())));
            }
            Err(e) => return Err(e),
        };
        if n == 0 && self.conn.is_handshaking() {
            return Err(hung_up(self.handshake_eof()));
        }
        if let Err(e) = self.conn.process_new_packets() {
            // Tell the peer why (the alert rustls queued), then report.
            let _ = self.flush();
            return Err(fail(self.describe(&e)));
        }
        Ok(n)
    }

    fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let old = buf.len();
        buf.resize(old + TLS_READ, 0);
        let read = self.read_step(&mut buf[old..]);
        buf.truncate(old + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Decrypted bytes into `buf` after at most one read from the socket:
    /// `Interrupted` when that read completed no record yet, so that the
    /// caller's clock (a header deadline) runs on while a peer trickles a
    /// record in pieces. 0 at the end of the stream.
    fn read_step(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done, // 0: the peer's close_notify
        }
        self.flush()?;
        if self.read_tls_step()? == 0 {
            return Ok(0);
        }
        self.flush()?;
        match self.conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::ErrorKind::Interrupted.into())
            }
            done => done,
        }
    }

    /// Decrypted bytes into `buf`: 0 at the end of the stream.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the peer's close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.flush()?;
            if self.read_tls_step()? == 0 {
                // Many PCAP-over-IP senders (socat, ncat) end without a
                // close_notify: the end of the stream, as over plain TCP.
                return Ok(0);
            }
            self.flush()?;
        }
    }

    /// Sends what rustls has queued (handshake messages, alerts).
    fn flush(&mut self) -> io::Result<()> {
        let mut tcp: &TcpStream = &self.tcp;
        while self.conn.wants_write() {
            self.conn.write_tls(&mut tcp)?;
        }
        tcp.flush()
    }

    fn is_server(&self) -> bool {
        matches!(self.conn, rustls::Connection::Server(_))
    }

    fn handshake_eof(&self) -> String {
        if self.is_server() && self.first.is_empty() {
            return format!(
                "the {} closed the connection before the TLS handshake",
                self.peer
            );
        }
        if self.is_server() {
            return format!("the {} closed the connection during the TLS handshake (does it trust our certificate? check its CA file)", self.peer);
        }
        format!("the {} closed the connection during the TLS handshake (does it require a client certificate? set {})", self.peer, Setting::TlsCertAndKey)
    }

    fn describe(&self, e: &rustls::Error) -> String {
        if let Some(what) = not_tls(&self.first) {
            return what;
        }
        let whose = if self.is_server() {
            format!("the {}'s client certificate", self.peer)
        } else {
            "the server's certificate".to_string()
        };
        match e {
            rustls::Error::InvalidCertificate(CertificateError::Other(other))
                if other.0.downcast_ref::<NotAllowed>().is_some() =>
            {
                other.0.to_string()
            }
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer if self.ca_source == CaSource::File => format!(
                    "{whose} is signed by a CA that {} does not hold (unknown CA)",
                    Setting::TlsCaFile
                ),
                CertificateError::UnknownIssuer => format!(
                    "{whose} is signed by a CA that the system's CA certificates do not hold (unknown CA); set {} to the CA that signed it",
                    Setting::TlsCaFile
                ),
                CertificateError::BadSignature => {
                    format!("{whose} has a bad signature (not issued by the CA it names)")
                }
                CertificateError::ExpiredContext { not_after, .. } => {
                    format!("{whose} expired on {}", date(*not_after))
                }
                CertificateError::Expired => format!("{whose} has expired"),
                CertificateError::NotValidYetContext { not_before, .. } => {
                    format!("{whose} is not valid before {}", date(*not_before))
                }
                CertificateError::NotValidForNameContext { expected, presented } => format!(
                    "{whose} is not valid for the name {} (it names {}); set {} to one of its names",
                    name_text(expected),
                    if presented.is_empty() {
                        "no name".to_string()
                    } else {
                        presented.iter().map(|p| plain_name(p)).collect::<Vec<_>>().join(", ")
                    },
                    Setting::TlsServerName
                ),
                CertificateError::NotValidForName => format!("{whose} is not valid for the expected name"),
                other => format!("{whose} was rejected: {other:?}"),
            },
            rustls::Error::NoCertificatesPresented => {
                format!("the {} sent no client certificate, and {} requires one", self.peer, Setting::TlsRequireClientCert)
            }
            rustls::Error::AlertReceived(alert) => {
                use rustls::AlertDescription as A;
                let required = format!(
                    " (it requires a client certificate: set {})",
                    Setting::TlsCertAndKey
                );
                let hint: &str = match alert {
                    A::UnknownCA | A::BadCertificate | A::CertificateUnknown => {
                        " (it does not trust our certificate: check its CA file)"
                    }
                    A::CertificateRequired => {
                        &required
                    }
                    A::CertificateExpired => " (our certificate has expired)",
                    _ => "",
                };
                format!(
                    "the peer refused the TLS handshake: alert {}{hint}",
                    snake_case(&format!("{alert:?}"))
                )
            }
            e => format!("TLS failed: {e}"),
        }
    }
}

/// A peer that is not speaking TLS at all, recognised by what it sent.
fn not_tls(first: &[u8]) -> Option<String> {
    let looks_tls = matches!(first, [0x14..=0x17, 0x03, ..]);
    if first.is_empty() || looks_tls {
        return None;
    }
    let pcap = matches!(
        first.get(..4),
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] | [0x4d, 0x3c, 0xb2, 0xa1])
            | Some([0xa1, 0xb2, 0x3c, 0x4d] | [0x0a, 0x0d, 0x0d, 0x0a])
    );
    Some(if pcap {
        "the peer sends plaintext PCAP-over-IP, not TLS: use tcp:// (or tcp-listen://) for it, or make it speak TLS".into()
    } else {
        let text: String = first
            .iter()
            .take(16)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        format!("the peer does not speak TLS (first bytes: \"{text}\")")
    })
}

/// Whether `first` (the first bytes of a plaintext connection) is a TLS
/// ClientHello: a TLS sender on a `tcp-listen://` endpoint, or a TLS server
/// behind a `tcp://` one.
pub fn is_tls_hello(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0x00..=0x04, ..])
}

/// `unknown_ca` for rustls' `UnknownCA`: TLS alerts by their standard
/// names (RFC 8446).
fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = camel.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let prev_lower = i > 0 && chars[i - 1].is_lowercase();
        if c.is_uppercase() && i > 0 && (prev_lower || next_lower) {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// `localhost` for rustls' `DnsName("localhost")`, `127.0.0.1` for
/// `IpAddress(127.0.0.1)`.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(presented);
    inner.trim_matches('"').to_string()
}

fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn fail(message: String) -> io::Error {
    io::Error::other(TlsError(message))
}

/// The peer hung up during the handshake (kind `UnexpectedEof`, so that a
/// caller can add its own hint).
fn hung_up(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, TlsError(message))
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a certificate time.
fn date(t: UnixTime) -> String {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    let (y, mo, d, h, mi, s) = crate::shared::utc::civil(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Reads from the socket, keeping the first bytes the peer sent.
struct Recording<'a> {
    tcp: &'a TcpStream,
    first: &'a mut Vec<u8>,
}

impl Read for Recording<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = (&mut &*self.tcp).read(out)?;
        if self.first.len() < 16 {
            let take = (16 - self.first.len()).min(n);
            self.first.extend_from_slice(&out[..take]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A TLS client over `tcp` that trusts nothing (it never gets as far
    /// as verifying).
    fn client(tcp: TcpStream) -> Transport {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        Transport::Tls(Box::new(TlsStream::new(
            rustls::Connection::Client(conn),
            tcp,
            CaSource::File,
            "server",
        )))
    }

    #[test]
    fn a_handshake_dripped_a_byte_at_a_time_ends_at_its_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The peer answers the ClientHello with the start of a ServerHello
        // record, one byte every 50 ms: every read gets a byte well within
        // any per-read timeout, and the record never completes.
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = [0u8; 4096];
            let _ = s.read(&mut hello);
            let record = [0x16u8, 0x03, 0x03, 0x40, 0x00, 0x02, 0x00, 0x3f, 0xfc];
            let bytes = record.iter().chain(std::iter::repeat(&0u8)).take(100);
            for b in bytes {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
        let mut transport = client(tcp);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(600);
        let result = handshake(&mut transport, Some(deadline), &|| false);
        let took = started.elapsed();
        assert!(
            matches!(result, Err(HandshakeFailure::TimedOut)),
            "{result:?}"
        );
        assert!(
            took < Duration::from_millis(600) + TICK + Duration::from_millis(300),
            "{took:?}"
        );
        // The socket's own timeout is as it was.
        assert_eq!(
            transport.tcp().read_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
        drop(transport);
        peer.join().unwrap();
    }

    #[test]
    fn a_handshake_stops_when_its_caller_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut transport = client(tcp);
        let started = Instant::now();
        let stop_at = started + Duration::from_millis(300);
        let result = handshake(&mut transport, None, &|| Instant::now() >= stop_at);
        assert!(
            matches!(result, Err(HandshakeFailure::Stopped)),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_plain_transport_has_no_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut plain = Transport::plain(tcp);
        assert!(handshake(&mut plain, Some(Instant::now()), &|| true).is_ok());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(
            date(UnixTime::since_unix_epoch(std::time::Duration::ZERO)),
            "1970-01-01 00:00:00 UTC"
        );
        assert_eq!(
            date(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                1_709_251_199
            ))),
            "2024-02-29 23:59:59 UTC"
        );
    }

    #[test]
    fn alerts_read_as_in_the_rfc() {
        assert_eq!(snake_case("UnknownCA"), "unknown_ca");
        assert_eq!(snake_case("CertificateRequired"), "certificate_required");
        assert_eq!(snake_case("BadCertificate"), "bad_certificate");
    }

    #[test]
    fn presented_names_read_plainly() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("example.org"), "example.org");
    }

    #[test]
    fn a_plaintext_pcap_peer_is_recognised() {
        let msg = not_tls(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]).unwrap();
        assert!(msg.contains("plaintext PCAP-over-IP"), "{msg}");
        assert!(not_tls(&[0x16, 0x03, 0x01, 0x02]).is_none());
        assert!(not_tls(b"SSH-2.0-OpenSSH_9").unwrap().contains("SSH-2.0"));
        assert!(is_tls_hello(&[0x16, 0x03, 0x01, 0x00, 0xa5]));
        assert!(!is_tls_hello(&[0xd4, 0xc3, 0xb2, 0xa1]));
    }
}
