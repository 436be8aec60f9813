//! PCAP-over-TLS over real loopback sockets: the packet source's `tls://`
//! and `tls-listen://` endpoints against the real pcapovertcp-serve, both
//! ways round, with and without client certificates; the refusals an
//! operator meets (an unknown CA, a missing client certificate, a name not
//! in `tls_allowed_names`, plaintext where TLS is expected and the other
//! way round), and the configuration errors at start-up.
//!
//! The certificates are made at test time with the `openssl` command (a
//! CA, a second CA nobody trusts, a server certificate for 127.0.0.1 and
//! localhost, client certificates for sender-a and sender-b). Without
//! `openssl` on PATH when they were built (build.rs) they are ignored.

#[path = "../../tests/common/mod.rs"]
mod common;
mod server;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{collect, drain, drip, listening, reference_packets, traces_dir, within, Log};
use log::Level;
use pcapovertcp::tls::TlsOptions;
use pcapovertcp::{Config, Opening, Source};
use server::Server;

// --- certificates -------------------------------------------------------------

/// The certificates and keys, in one directory for the test run.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    /// A CA that signed nothing here: trusting only it, nothing verifies.
    other_ca: PathBuf,
    /// For DNS:localhost and IP:127.0.0.1, signed by `ca`.
    server_cert: PathBuf,
    server_key: PathBuf,
    /// Client certificates for DNS:sender-a and DNS:sender-b, signed by `ca`.
    a_cert: PathBuf,
    a_key: PathBuf,
    b_cert: PathBuf,
    b_key: PathBuf,
}

/// The test run's certificates, made once. The tests that call this are
/// ignored when `openssl` was not on PATH at build time (build.rs), so its
/// absence now is a failure, not a skip.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => make_pki(),
        Ok(out) => panic!(
            "`openssl version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run openssl, which makes the certificates: {e}"),
    })
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `NAME.pem` and `NAME.key`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let cnf = format!("{name}.cnf");
    std::fs::write(
        dir.join(&cnf),
        format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n\
             [dn]\nCN = pcapovertcp test {name}\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            &cnf,
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A certificate for `san` signed by `ca`: `NAME.pem` and `NAME.key`.
fn make_leaf(dir: &Path, ca: &str, name: &str, san: &str, serial: u32) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join(format!("{name}.cnf")),
        format!("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {name}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {san}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            &format!("{name}.cnf"),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

fn make_pki() -> Pki {
    let dir = std::env::temp_dir().join(format!("pcapovertcp-tls-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = make_ca(&dir, "ca");
    let other_ca = make_ca(&dir, "other-ca");
    let (server_cert, server_key) =
        make_leaf(&dir, "ca", "server", "DNS:localhost,IP:127.0.0.1", 2);
    let (a_cert, a_key) = make_leaf(&dir, "ca", "sender-a", "DNS:sender-a", 3);
    let (b_cert, b_key) = make_leaf(&dir, "ca", "sender-b", "DNS:sender-b", 4);
    Pki {
        dir,
        ca,
        other_ca,
        server_cert,
        server_key,
        a_cert,
        a_key,
        b_cert,
        b_key,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// --- pcapovertcp-serve ------------------------------------------------------------

impl Server {
    /// Listening with TLS (the server certificate and key of `pki`): the
    /// server and its port.
    fn listen_tls(pki: &Pki, args: &[&str], stdin: Stdio) -> (Server, u16) {
        let mut all = vec![
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
        ];
        all.extend_from_slice(args);
        let server = Server::listen(&all, stdin);
        let port = server.port;
        (server, port)
    }
}

// --- the source -------------------------------------------------------------------

/// A `tls://` client configuration: trusts `ca`, presents `cert` if given.
fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Config {
    Config {
        reconnect: false,
        tls: TlsOptions {
            ca_file: Some(ca.to_path_buf()),
            cert_file: cert.map(|c| c.0.to_path_buf()),
            key_file: cert.map(|c| c.1.to_path_buf()),
            ..TlsOptions::default()
        },
        ..Config::default()
    }
}

/// A `tls-listen://` configuration with the server certificate.
fn listen_tls(pki: &Pki) -> TlsOptions {
    TlsOptions {
        cert_file: Some(pki.server_cert.clone()),
        key_file: Some(pki.server_key.clone()),
        ..TlsOptions::default()
    }
}

// --- tls:// against pcapovertcp-serve --tls-cert ----------------------------------

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn tls_connect_reads_served_files_byte_for_byte() {
    let pki = pki();
    within(Duration::from_secs(60), move || {
        for trace in ["http-vlan-0.pcap", "irc-dcc-send.pcapng"] {
            let path = traces_dir().join(trace);
            let want = reference_packets(&path);
            let (mut server, port) =
                Server::listen_tls(pki, &["--clients", "1", s(&path)], Stdio::null());
            let mut source = Source::open(
                &format!("tls://127.0.0.1:{port}"),
                client_config(&pki.ca, None),
            )
            .unwrap_or_else(|e| panic!("{trace}: {e}\n{}", server.log()));
            // The server's close_notify ends the stream: every packet, then
            // the end, as over plain TCP.
            let got = drain(&mut source);
            assert_eq!(got.len(), want.len(), "{trace}: how many packets");
            assert!(got == want, "{trace}: the packets differ from the file's");
            assert!(
                server.wait_success(Duration::from_secs(60)),
                "{trace}: {}",
                server.log()
            );
            let c = source.counters();
            assert_eq!((c.connects, c.corrupt, c.truncated), (1, 0, 0), "{c:?}");
        }
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn tls_connect_reads_the_standard_input_relay() {
    let pki = pki();
    within(Duration::from_secs(60), move || {
        let path = traces_dir().join("dns53.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let want = reference_packets(&path);
        let (mut server, port) = Server::listen_tls(pki, &["-"], Stdio::piped());
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&bytes[..24]).unwrap();
        stdin.flush().unwrap();
        // Verified by name this time: localhost is in the certificate.
        let config = Config {
            tls: TlsOptions {
                server_name: Some("localhost".into()),
                ..client_config(&pki.ca, None).tls
            },
            ..client_config(&pki.ca, None)
        };
        let mut source = Source::open(&format!("tls://127.0.0.1:{port}"), config)
            .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
        stdin.write_all(&bytes[24..]).unwrap();
        drop(stdin); // the end of the capture ends every client's stream
        let got = drain(&mut source);
        assert!(
            got == want,
            "{} of {} packets, or different",
            got.len(),
            want.len()
        );
        assert!(
            server.wait_success(Duration::from_secs(60)),
            "{}",
            server.log()
        );
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn mutual_tls_accepts_a_client_certificate_and_refuses_its_absence() {
    let pki = pki();
    within(Duration::from_secs(60), move || {
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = reference_packets(&path);
        let (server, port) =
            Server::listen_tls(pki, &["--tls-ca", s(&pki.ca), s(&path)], Stdio::null());
        let endpoint = format!("tls://127.0.0.1:{port}");
        let with_cert = client_config(&pki.ca, Some((&pki.a_cert, &pki.a_key)));
        let mut source = Source::open(&endpoint, with_cert)
            .unwrap_or_else(|e| panic!("with a client certificate: {e}\n{}", server.log()));
        assert!(drain(&mut source) == want, "with a client certificate");

        // Without one: the server refuses the handshake with TLS 1.3's
        // certificate_required alert, and the source says what to set.
        let e = match Source::open(&endpoint, client_config(&pki.ca, None)) {
            Ok(_) => panic!("opened without a client certificate"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            e,
            format!(
                "{endpoint}: the peer refused the TLS handshake: alert certificate_required \
                 (it requires a client certificate: set PcapOverTcp::tls_cert_file and tls_key_file)"
            )
        );
        assert_eq!(e.lines().count(), 1);
        // The tool's side of it, one line.
        server.wait_log(
            "TLS handshake with the client failed: the client sent no client certificate, and --tls-ca requires one",
            Duration::from_secs(5),
        );
    })
}

// --- tls-listen:// against pcapovertcp-serve --connect -------------------------------

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn tls_listen_receives_a_file_and_a_relay_from_serve_connect() {
    let pki = pki();
    within(Duration::from_secs(60), move || {
        let config = Config {
            tls: listen_tls(pki),
            ..Config::default()
        };
        let (mut source, _name, addr) = listening("tls-listen", config);
        let target = addr.to_string();

        // A file: the tool verifies the source's certificate for 127.0.0.1
        // (the --connect host) against --tls-ca.
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = reference_packets(&path);
        let mut server = Server::spawn(
            &["--connect", &target, "--tls-ca", s(&pki.ca), s(&path)],
            Stdio::null(),
        );
        let got = collect(&mut source, want.len(), Duration::from_secs(20));
        assert!(got == want, "the file's packets");
        assert!(
            server.wait_success(Duration::from_secs(60)),
            "{}",
            server.log()
        );
        let log = server.log();
        assert!(
            log.contains(&format!("{target}: connected"))
                && log.contains(&format!("{target}: sent the whole file")),
            "{log}"
        );

        // Standard input, relayed: the certificate checked for another of
        // its names (--tls-server-name).
        let path = traces_dir().join("dns53.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let want = reference_packets(&path);
        let mut server = Server::spawn(
            &[
                "--connect",
                &target,
                "--tls-ca",
                s(&pki.ca),
                "--tls-server-name",
                "localhost",
                "-",
            ],
            Stdio::piped(),
        );
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&bytes).unwrap();
        drop(stdin);
        let got = collect(&mut source, want.len(), Duration::from_secs(20));
        assert!(got == want, "the relayed packets");
        assert!(
            server.wait_success(Duration::from_secs(60)),
            "{}",
            server.log()
        );

        // A name the certificate does not carry: the tool refuses the
        // receiver, and says why.
        let server = Server::spawn(
            &[
                "--connect",
                &target,
                "--tls-ca",
                s(&pki.ca),
                "--tls-server-name",
                "sensor.example",
                s(&path),
            ],
            Stdio::null(),
        );
        let line = server.wait_log("retrying", Duration::from_secs(5));
        assert!(
            line.contains("TLS handshake with the receiver failed: the server's certificate is not valid for the name sensor.example")
                && line.contains("set --tls-server-name to one of its names"),
            "{line}"
        );
        drop(server);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn tls_zstd_carries_every_packet_compressed_inside_tls_both_ways_round() {
    let pki = pki();
    within(Duration::from_secs(60), move || {
        let path = traces_dir().join("http/206_example_b.pcap");
        let want = reference_packets(&path);
        // The tool dials: tls+zstd:// into tls+zstd-listen://.
        let config = Config {
            tls: listen_tls(pki),
            ..Config::default()
        };
        let (mut source, _name, addr) = listening("tls+zstd-listen", config);
        let mut server = Server::spawn(
            &[
                "--connect",
                &format!("tls+zstd://{addr}"),
                "--tls-ca",
                s(&pki.ca),
                s(&path),
            ],
            Stdio::null(),
        );
        let got = collect(&mut source, want.len(), Duration::from_secs(20));
        assert!(got == want, "the file's packets, dialled");
        assert!(
            server.wait_success(Duration::from_secs(60)),
            "{}",
            server.log()
        );
        let c = source.counters();
        assert_eq!((c.corrupt, c.truncated), (0, 0), "{c:?}");
        common::closes_promptly(&mut source, "open");

        // The source dials: tls+zstd:// to --listen tls+zstd://.
        let (mut server, ports) = Server::listen_ports(
            None,
            "tls+zstd://127.0.0.1:0",
            &[
                "--tls-cert",
                s(&pki.server_cert),
                "--tls-key",
                s(&pki.server_key),
                "--clients",
                "1",
                s(&path),
            ],
            Stdio::null(),
            1,
        );
        let endpoint = format!("tls+zstd://127.0.0.1:{}", ports[0]);
        let mut source = Source::open(&endpoint, client_config(&pki.ca, None))
            .unwrap_or_else(|e| panic!("{endpoint}: {e}\n{}", server.log()));
        let got = drain(&mut source);
        assert!(got == want, "the file's packets, served");
        assert!(
            server.wait_success(Duration::from_secs(60)),
            "{}",
            server.log()
        );
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn tls_listen_allowed_names_refuse_sender_b_and_accept_sender_a() {
    let pki = pki();
    within(Duration::from_secs(60), move || {
        let config = Config {
            tls: TlsOptions {
                ca_file: Some(pki.ca.clone()),
                require_client_cert: true,
                allowed_names: vec!["sender-a".into()],
                ..listen_tls(pki)
            },
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tls-listen", config);
        let target = addr.to_string();
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = reference_packets(&path);
        let mut log = Log::default();
        let send_as = |cert: &Path, key: &Path| {
            Server::spawn(
                &[
                    "--connect",
                    &target,
                    "--tls-ca",
                    s(&pki.ca),
                    "--tls-cert",
                    s(cert),
                    "--tls-key",
                    s(key),
                    s(&path),
                ],
                Stdio::null(),
            )
        };

        // sender-b: a certificate the CA signed, for a name not allowed.
        let b = send_as(&pki.b_cert, &pki.b_key);
        let line = log.wait_for(
            &source,
            Level::Warn,
            &["PcapOverTcp::tls_allowed_names"],
            Duration::from_secs(10),
        );
        assert!(
            line.starts_with(&format!("{name}: sender 127.0.0.1:"))
                && line.contains(
                    "the sender's client certificate is valid for none of PcapOverTcp::tls_allowed_names (sender-a)"
                )
                && line.ends_with("its connection was closed after 0 packets"),
            "{line}"
        );
        drop(b);
        assert_eq!(source.counters().records, 0, "sender-b delivered nothing");

        // No client certificate at all.
        let none = Server::spawn(
            &["--connect", &target, "--tls-ca", s(&pki.ca), s(&path)],
            Stdio::null(),
        );
        log.wait_for(
            &source,
            Level::Warn,
            &["the sender sent no client certificate, and PcapOverTcp::tls_require_client_cert requires one"],
            Duration::from_secs(10),
        );
        // The tool learns why from the alert (TLS 1.3: after its side of
        // the handshake), and redials.
        none.wait_log(
            "connection lost: the peer refused the TLS handshake: alert certificate_required (it requires a client certificate: set --tls-cert and --tls-key); redialling",
            Duration::from_secs(10),
        );
        drop(none);
        assert_eq!(
            source.counters().records,
            0,
            "a sender without a certificate delivered nothing"
        );

        // sender-a: accepted, every packet.
        let mut a = send_as(&pki.a_cert, &pki.a_key);
        let got = collect(&mut source, want.len(), Duration::from_secs(20));
        assert!(got == want, "sender-a's packets");
        assert!(a.wait_success(Duration::from_secs(60)), "{}", a.log());
        common::closes_promptly(&mut source, "open");
    })
}

// --- the wrong protocol on either side ------------------------------------------------

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn a_plaintext_sender_on_tls_listen_is_refused() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        let config = Config {
            tls: listen_tls(pki),
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tls-listen", config);
        let bytes = std::fs::read(traces_dir().join("dns53.pcap")).unwrap();
        let mut plain = TcpStream::connect(addr).unwrap();
        let from = plain.local_addr().unwrap();
        // The write may fail once the source has closed: that is the point.
        let _ = plain.write_all(&bytes);
        let line = Log::default().wait_for(
            &source,
            Level::Warn,
            &[&format!("{name}: sender {from}: ")],
            Duration::from_secs(5),
        );
        assert!(
            line.contains(
                "the peer sends plaintext PCAP-over-IP, not TLS: use tcp:// (or tcp-listen://) for it, or make it speak TLS"
            ) && line.ends_with("its connection was closed after 0 packets"),
            "{line}"
        );
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            match plain.read(&mut buf) {
                // A TLS alert may come first (rustls answers bytes it
                // cannot parse with one); then the end.
                Ok(n) if n > 0 => {}
                Ok(_) => break,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => break,
                Err(e) => panic!("the source did not close the plaintext sender: {e}"),
            }
        }
        assert_eq!(source.counters().records, 0);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn a_tls_sender_on_tcp_listen_is_refused() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        let (mut source, name, addr) = listening("tcp-listen", Config::default());
        let path = traces_dir().join("dns53.pcap");
        let server = Server::spawn(
            &[
                "--connect",
                &addr.to_string(),
                "--tls-ca",
                s(&pki.ca),
                s(&path),
            ],
            Stdio::null(),
        );
        let line = Log::default().wait_for(
            &source,
            Level::Warn,
            &["speaks TLS (its first bytes are a TLS handshake)"],
            Duration::from_secs(5),
        );
        assert!(
            line.starts_with(&format!("{name}: sender 127.0.0.1:"))
                && line.contains(
                    "speaks TLS (its first bytes are a TLS handshake): use tls:// or tls-listen:// for it"
                ),
            "{line}"
        );
        // The tool's side: the receiver hung up mid-handshake, and a hint.
        let line = server.wait_log("retrying", Duration::from_secs(5));
        assert!(
            line.contains("the receiver closed the connection during the TLS handshake (does it listen with tls-listen://?"),
            "{line}"
        );
        assert_eq!(source.counters().records, 0);
        common::closes_promptly(&mut source, "open");
    })
}

// --- configuration errors ----------------------------------------------------------------

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn tls_setup_errors_fail_the_start_with_one_line() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        let missing = pki.dir.join("no-such-ca.pem");
        // Held by the test, so that no other test takes the port: each case
        // must fail on its options before it connects or binds (binding
        // this port would fail with "address in use" instead).
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let connect = format!("tls://127.0.0.1:{port}");
        let listen = format!("tls-listen://127.0.0.1:{port}");
        let check = "; check the PcapOverTcp::tls_* options";
        let cases: Vec<(&str, TlsOptions, String)> = vec![
            (
                &connect,
                TlsOptions {
                    ca_file: Some(missing.clone()),
                    ..TlsOptions::default()
                },
                format!(
                    "cannot read PcapOverTcp::tls_ca_file {}: No such file or directory (os error 2){check}",
                    missing.display()
                ),
            ),
            (
                &listen,
                TlsOptions {
                    cert_file: Some(pki.server_cert.clone()),
                    key_file: Some(pki.a_key.clone()),
                    ..TlsOptions::default()
                },
                format!("the key in PcapOverTcp::tls_key_file does not match the certificate in PcapOverTcp::tls_cert_file{check}"),
            ),
            (
                &listen,
                TlsOptions::default(),
                format!("tls-listen:// needs a certificate and its key: set PcapOverTcp::tls_cert_file and PcapOverTcp::tls_key_file{check}"),
            ),
            (
                &connect,
                TlsOptions {
                    ca_file: Some(pki.ca.clone()),
                    cert_file: Some(pki.a_cert.clone()),
                    ..TlsOptions::default()
                },
                format!("PcapOverTcp::tls_cert_file and PcapOverTcp::tls_key_file go together: set both or neither{check}"),
            ),
            (
                &connect,
                TlsOptions {
                    // A pcap is no PEM bundle.
                    ca_file: Some(traces_dir().join("dns53.pcap")),
                    ..TlsOptions::default()
                },
                format!(
                    "PcapOverTcp::tls_ca_file {} holds no certificate in PEM form{check}",
                    traces_dir().join("dns53.pcap").display()
                ),
            ),
        ];
        for (spec, tls, want) in cases {
            let config = Config {
                tls: tls.clone(),
                ..Config::default()
            };
            match Source::start(spec, config) {
                Ok(_) => panic!("{spec} with {tls:?} started"),
                Err(e) => {
                    assert_eq!(e.to_string(), want, "{spec} with {tls:?}");
                    assert!(!e.is_transient(), "{spec}: a configuration error");
                }
            }
        }
        drop(held);
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn an_unknown_ca_is_reported_retried_and_close_is_prompt() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        let path = traces_dir().join("dns53.pcap");
        let (server, port) = Server::listen_tls(pki, &[s(&path)], Stdio::null());
        let endpoint = format!("tls://127.0.0.1:{port}");
        let config = Config {
            reconnect: true,
            reconnect_max: Duration::from_millis(200),
            ..client_config(&pki.other_ca, None)
        };
        let started = Instant::now();
        let mut source = Source::start(&endpoint, config).unwrap();
        let mut warning = None;
        while warning.is_none() {
            assert!(
                matches!(
                    source.wait_open(Duration::from_millis(50)),
                    Opening::Waiting
                ),
                "the source must keep waiting, not fail or open"
            );
            warning = source
                .take_messages()
                .into_iter()
                .find(|(l, _)| *l == Level::Warn)
                .map(|(_, m)| m);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "no warning within 2 s"
            );
        }
        assert_eq!(
            warning.unwrap(),
            format!(
                "{endpoint}: the server's certificate is signed by a CA that PcapOverTcp::tls_ca_file does not hold (unknown CA); \
                 waiting for a stream (PcapOverTcp::open_timeout is 0: no time limit)"
            )
        );
        // It keeps trying: more handshakes reach the tool, and the source
        // neither fails nor repeats the warning.
        let refused = "TLS handshake with the client failed: the peer refused the TLS handshake: \
                       alert unknown_ca (it does not trust our certificate: check its CA file)";
        let before = server.log().matches(refused).count();
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            assert!(matches!(
                source.wait_open(Duration::from_millis(50)),
                Opening::Waiting
            ));
        }
        assert!(
            source
                .take_messages()
                .iter()
                .all(|(l, _)| *l != Level::Warn),
            "the outage is reported once"
        );
        let after = server.log().matches(refused).count();
        assert!(
            after > before,
            "no new attempt within a second: {}",
            server.log()
        );
        assert!(source.counters().connects >= 2, "{:?}", source.counters());
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn serve_with_a_key_of_another_certificate_exits_1_with_one_line() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        let path = traces_dir().join("dns53.pcap");
        let out = Command::new(env!("CARGO_BIN_EXE_pcapovertcp-serve"))
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&pki.server_cert)
            .arg("--tls-key")
            .arg(&pki.a_key)
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "pcapovertcp-serve: the key in --tls-key does not match the certificate in --tls-cert\n"
        );
    })
}

// --- admission: stalled and dripped handshakes --------------------------------------------

/// The first bytes of a TLS 1.2+ ClientHello (a record of 512 bytes): a
/// handshake that has begun, and then stalls.
const HELLO_START: [u8; 11] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

/// A tls-listen source that requires a client certificate from the CA.
fn mutual_listening(header_timeout: Duration) -> (Source, String, SocketAddr) {
    let pki = pki();
    let config = Config {
        header_timeout: Some(header_timeout),
        tls: TlsOptions {
            ca_file: Some(pki.ca.clone()),
            require_client_cert: true,
            ..listen_tls(pki)
        },
        ..Config::default()
    };
    listening("tls-listen", config)
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn stalled_client_hellos_do_not_lock_out_an_authenticated_sender() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        // A header timeout far beyond the test: only the pending pool's own
        // bound can let the sender in.
        let (mut source, _name, addr) = mutual_listening(Duration::from_secs(60));
        let stalled: Vec<TcpStream> = (0..500)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(&HELLO_START).unwrap();
                c
            })
            .collect();
        thread::sleep(Duration::from_millis(300));
        let path = traces_dir().join("dns53.pcap");
        let want = reference_packets(&path);
        let started = Instant::now();
        let mut a = Server::spawn(
            &[
                "--connect",
                &addr.to_string(),
                "--tls-ca",
                s(&pki.ca),
                "--tls-cert",
                s(&pki.a_cert),
                "--tls-key",
                s(&pki.a_key),
                s(&path),
            ],
            Stdio::null(),
        );
        let got = collect(&mut source, want.len(), Duration::from_secs(5));
        assert!(got == want, "the authenticated sender's packets");
        assert!(a.wait_success(Duration::from_secs(60)), "{}", a.log());
        println!(
            "the authenticated sender got through in {:?}",
            started.elapsed()
        );
        // Never admitted, the stalled connections take no entry.
        assert_eq!(source.senders().len(), 1, "{:?}", source.senders());
        drop(stalled);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn a_client_hello_dripped_a_byte_at_a_time_is_closed_at_header_timeout() {
    within(Duration::from_secs(30), move || {
        let (mut source, name, addr) = mutual_listening(Duration::from_secs(2));
        let mut log = Log::default();
        let mut hello = HELLO_START.to_vec();
        hello.extend(0..40u8);
        let every = Duration::from_millis(150);
        let drippers: Vec<_> = (0..64)
            .map(|_| drip(addr, "127.0.0.1", hello.clone(), every))
            .collect();
        for d in drippers {
            let after = d.join().unwrap();
            assert!(
                after.is_some_and(|a| a >= Duration::from_secs(2) && a < Duration::from_millis(3500)),
                "a dripping handshake was closed after {after:?}, not at header_timeout (2 s)"
            );
        }
        let line = log.wait_for(
            &source,
            Level::Warn,
            &["did not complete its TLS handshake"],
            Duration::from_secs(2),
        );
        assert!(
            line.starts_with(&format!("{name}: sender 127.0.0.1:"))
                && line.ends_with(
                    "did not complete its TLS handshake within 2.0 s of connecting (PcapOverTcp::header_timeout); its connection was closed after 0 packets"
                ),
            "{line}"
        );
        assert!(source.senders().is_empty(), "{:?}", source.senders());
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn a_tls_server_that_never_completes_the_handshake_fails_at_the_connect_timeout() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        // Accepts, reads the ClientHello, then drips the start of a record
        // that never completes: the connection stays busy.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = [0u8; 4096];
            let _ = s.read(&mut hello);
            for b in [0x16u8, 0x03, 0x03, 0x40, 0x00]
                .iter()
                .chain([0u8; 200].iter())
            {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let config = Config {
            connect_timeout: Duration::from_millis(500),
            open_timeout: Some(Duration::from_secs(8)),
            ..client_config(&pki.ca, None)
        };
        let endpoint = format!("tls://127.0.0.1:{port}");
        let started = Instant::now();
        let e = match Source::open(&endpoint, config) {
            Ok(_) => panic!("opened"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            e,
            format!("{endpoint} did not complete its TLS handshake within 0.5 s of connecting (the connect timeout)")
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let _ = peer.join();
    })
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn a_sender_refused_by_tls_is_one_fact_of_kind_tls_however_often_it_redials() {
    let pki = pki();
    within(Duration::from_secs(60), move || {
        let config = Config {
            events: true,
            tls: TlsOptions {
                ca_file: Some(pki.ca.clone()),
                require_client_cert: true,
                allowed_names: vec!["sender-a".into()],
                ..listen_tls(pki)
            },
            ..Config::default()
        };
        let (mut source, name, addr) = listening("tls-listen", config);
        let target = addr.to_string();
        let path = traces_dir().join("dns53.pcap");
        // sender-b: signed by the CA, for a name not allowed; the tool
        // redials after each refusal.
        let b = Server::spawn(
            &[
                "--connect",
                &target,
                "--tls-ca",
                s(&pki.ca),
                "--tls-cert",
                s(&pki.b_cert),
                "--tls-key",
                s(&pki.b_key),
                s(&path),
            ],
            Stdio::null(),
        );
        Log::default().wait_for(
            &source,
            Level::Warn,
            &["PcapOverTcp::tls_allowed_names"],
            Duration::from_secs(10),
        );
        // Its redials (after 100 ms, 200 ms, ...) within the next second.
        std::thread::sleep(Duration::from_millis(1500));
        drop(b);
        let facts = source.take_facts();
        assert!(
            matches!(
                &facts[..],
                [pcapovertcp::facts::Fact::SenderRefused {
                    source,
                    sender,
                    refusal: pcapovertcp::facts::Refusal::Tls,
                    reason,
                }] if *source == name
                    && sender == "127.0.0.1"
                    && reason.contains("valid for none of PcapOverTcp::tls_allowed_names")
            ),
            "{facts:?}"
        );
        common::closes_promptly(&mut source, "open");
    })
}

// --- what a closing tls:// source leaves unanalysed ---------------------------------

/// `n` records of 100-byte packets, numbered from `first`.
fn numbered_records(first: u32, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + n {
        let mut data = [0u8; 100];
        data[..4].copy_from_slice(&i.to_le_bytes());
        common::push_record(&mut out, 1_700_000_000, i, &data, 100);
    }
    out
}

/// Bytes written to `s` that the peer's kernel has not acknowledged yet.
fn unacknowledged(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int to the pointer it is given.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(r, 0, "TIOCOUTQ: {}", std::io::Error::last_os_error());
    usize::try_from(n).unwrap_or(0)
}

#[test]
#[cfg_attr(
    not(openssl_cli),
    ignore = "needs the openssl command (not on PATH when the tests were built)"
)]
fn a_closing_tls_source_counts_what_waits_decrypted_or_not_as_unanalysed() {
    let pki = pki();
    within(Duration::from_secs(30), move || {
        // As tests/unanalysed.rs over plain TCP: A held by the consumer, B
        // waiting to be handed on, C (and half a record) in the socket.
        const A: u32 = 50;
        const B: u32 = 40;
        const C: u32 = 200;
        const K: u32 = 10;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let name = format!("tls://{}", listener.local_addr().unwrap());
        let config = Config {
            buffer_size: 1,
            ..client_config(&pki.ca, None)
        };
        let mut source = Source::start(&name, config).unwrap();
        let (tcp, _) = listener.accept().unwrap();
        let server = pcapovertcp::tls::ServerTls::new(&listen_tls(pki)).unwrap();
        let mut sender = server.accept(tcp).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        pcapovertcp::tls::handshake(&mut sender, Some(deadline), &|| false).unwrap();
        let mut first = common::pcap_header();
        first.extend(numbered_records(0, A));
        sender.write_all(&first).unwrap();
        let mut got = 0;
        while got < K {
            match source.next_packet() {
                pcapovertcp::Next::Packet(_) => got += 1,
                _ => {
                    assert!(Instant::now() < deadline, "{got} of {K} packets came");
                    source.wait(Duration::from_millis(50));
                }
            }
        }
        sender.write_all(&numbered_records(A, B)).unwrap();
        while source.counters().records != u64::from(A + B) {
            assert!(Instant::now() < deadline, "the reader did not read B");
            thread::sleep(Duration::from_millis(5));
        }
        let mut rest = numbered_records(A + B, C);
        let cut = numbered_records(A + B + C, 1);
        rest.extend_from_slice(&cut[..cut.len() / 2]);
        sender.write_all(&rest).unwrap();
        while unacknowledged(sender.tcp()) > 0 {
            assert!(Instant::now() < deadline, "bytes still unacknowledged");
            thread::sleep(Duration::from_millis(5));
        }

        let said = common::closes_promptly(&mut source, "holding packets");

        let line = format!(
            "{name}: closing with {} packets received but not analysed ({} in the source's buffer, {C} unread in its socket); what was sent after them was not acknowledged: the sender counts it as in flight",
            A + B + C - K,
            A + B - K
        );
        assert!(
            said.iter()
                .any(|(level, m)| *level == Level::Warn && *m == line),
            "no {line:?} in {said:?}"
        );
        assert_eq!(source.counters().unanalysed, u64::from(A + B + C - K));
    })
}
