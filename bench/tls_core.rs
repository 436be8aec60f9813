//! Core throughput over TLS: a sender thread writing a synthetic pcap of
//! 1500-byte packets through rustls (server side, one TLS 1.3 cipher suite
//! at a time) → a `tls://` Source's reader thread (rustls client, decrypting
//! into the connection's buffer) → a consumer that takes packets the way the
//! Zeek shim does and reads every byte (as bench/core.rs). Beside it the same
//! stream in plaintext (`tcp://`), and two ceilings: a plain recv() into a
//! large buffer, and a rustls client that only decrypts into a buffer and
//! discards it. The sender, the reader and the consumer share the machine's
//! cores (bench/core.rs does the same for plaintext).
//!
//! Also, with --share TRACE: nanoseconds per packet of `Sharer::share_of`
//! (2 shares, address pair and 5-tuple) over a pcap's packets, in memory.
//!
//! tls_core --certs DIR [--quick] [--json FILE] [--share TRACE]
//!
//! DIR holds srv.pem, srv.key (valid for localhost) and ca.pem, as made by
//! tests/Scripts/make-certs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pcapovertcp::parse::{Limits, StreamParser};
use pcapovertcp::share::{ShareBy, Sharer};
use pcapovertcp::tls::TlsOptions;
use pcapovertcp::{Config, Source};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[path = "stream.rs"]
mod stream;

use stream::{consume, synthetic, Stream};

const SIZE: usize = 1500;

fn provider_with(suite: Option<&str>) -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(name) = suite {
        p.cipher_suites
            .retain(|s| format!("{:?}", s.suite()) == name);
        assert!(!p.cipher_suites.is_empty(), "no cipher suite {name}");
    }
    p
}

fn server_config(certs: &Path, suite: Option<&str>) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.join("srv.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("srv.key")).unwrap();
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(provider_with(suite)))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    c.send_tls13_tickets = 0;
    Arc::new(c)
}

fn client_config(certs: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A sender on a fresh port: plaintext when `tls` is None. Returns the
/// port and a handle whose result is the negotiated cipher suite.
fn sender(
    stream: &Stream,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (u16, thread::JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let header = stream.header.clone();
    let body = stream.body.clone();
    let repeat = stream.repeat;
    let h = thread::spawn(move || {
        let (c, _) = listener.accept().unwrap();
        c.set_nodelay(true).unwrap();
        match tls {
            None => {
                let mut c = c;
                c.write_all(&header).unwrap();
                for _ in 0..repeat {
                    c.write_all(&body).unwrap();
                }
                None
            }
            Some(config) => {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut s = rustls::StreamOwned::new(conn, c);
                s.write_all(&header).unwrap();
                s.flush().unwrap();
                let suite = s
                    .conn
                    .negotiated_cipher_suite()
                    .map(|cs| format!("{:?}", cs.suite()));
                for _ in 0..repeat {
                    s.write_all(&body).unwrap();
                }
                s.conn.send_close_notify();
                s.flush().unwrap();
                let _ = s.sock.shutdown(std::net::Shutdown::Write);
                // Wait for the peer to close, so that our close does not
                // reset what it has not read yet.
                let mut sink = [0u8; 4096];
                while matches!(s.sock.read(&mut sink), Ok(n) if n > 0) {}
                suite
            }
        }
    });
    (port, h)
}

/// The core: a Source on its reader thread, a consumer touching every byte.
fn core(
    stream: &Stream,
    tls: Option<(&Path, Arc<rustls::ServerConfig>)>,
) -> (Duration, Option<String>) {
    let (certs, server) = match tls {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let (port, h) = sender(stream, server);
    let mut config = Config {
        reconnect: false,
        ..Config::default()
    };
    let ep = match certs {
        Some(dir) => {
            config.tls = TlsOptions {
                ca_file: Some(dir.join("ca.pem")),
                ..TlsOptions::default()
            };
            format!("tls://localhost:{port}")
        }
        None => format!("127.0.0.1:{port}"),
    };
    let mut source = Source::open(&ep, config).unwrap();
    let start = Instant::now();
    let (packets, checksum) = consume(&mut source);
    let t = start.elapsed();
    source.close();
    let suite = h.join().unwrap();
    assert_eq!(packets, stream.packets());
    std::hint::black_box(checksum);
    (t, suite)
}

/// Ceilings: recv() into a large buffer (plain), or a rustls client reading
/// plaintext into one (TLS), discarding it.
fn ceiling(stream: &Stream, tls: Option<(&Path, Arc<rustls::ServerConfig>)>) -> Duration {
    let (certs, server) = match tls {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let (port, h) = sender(stream, server);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let start;
    let mut total = 0u64;
    match certs {
        None => {
            let mut c = tcp;
            start = Instant::now();
            loop {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        Some(dir) => {
            let conn = rustls::ClientConnection::new(
                client_config(dir),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            start = Instant::now();
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    let t = start.elapsed();
    h.join().unwrap();
    assert_eq!(total, stream.bytes());
    t
}

/// ns per packet of Sharer::share_of over a pcap's packets (in memory),
/// best of `rounds` passes, for 2 shares.
fn share_cost(trace: &Path, rounds: usize) -> Vec<String> {
    let bytes = std::fs::read(trace).unwrap();
    let mut p = StreamParser::new(Limits::default());
    let mut recs = Vec::new();
    p.parse(&bytes, &mut recs).unwrap();
    let packets: Vec<(&[u8], i32, i64)> = recs
        .iter()
        .map(|r| {
            let start = r.offset;
            (&bytes[start..start + r.caplen as usize], r.dlt, r.ts_sec)
        })
        .collect();
    let mut rows = Vec::new();
    for (name, by) in [
        ("address pair", ShareBy::AddressPair),
        ("5-tuple", ShareBy::FiveTuple),
    ] {
        let mut best = Duration::MAX;
        let mut split = [0u64; 2];
        for _ in 0..rounds {
            let mut s = Sharer::new(by, 2);
            let mut counts = [0u64; 2];
            let t = Instant::now();
            for (data, dlt, ts) in &packets {
                counts[s.share_of(data, *dlt, *ts).share() as usize] += 1;
            }
            best = best.min(t.elapsed());
            split = counts;
        }
        let ns = best.as_nanos() as f64 / packets.len() as f64;
        println!(
            "share_of ({name}, 2 shares): {ns:.1} ns/packet over {} packets; split {} / {}",
            packets.len(),
            split[0],
            split[1]
        );
        rows.push(format!(
            "{{\"share_by\":\"{name}\",\"packets\":{},\"ns_per_packet\":{ns:.3},\"share0\":{},\"share1\":{}}}",
            packets.len(),
            split[0],
            split[1]
        ));
    }
    rows
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let certs = PathBuf::from(
        arg("--certs")
            .expect("usage: tls_core --certs DIR [--quick] [--json FILE] [--share TRACE]"),
    );
    let rounds = if quick { 1 } else { 5 };
    let stream = synthetic(SIZE, if quick { 200_000 } else { 1_000_000 });
    let gbit = |t: Duration| stream.bytes() as f64 * 8.0 / t.as_secs_f64() / 1e9;
    let mpps = |t: Duration| stream.packets() as f64 / t.as_secs_f64() / 1e6;

    let suites = [
        "TLS13_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ];
    // (name, suite negotiated, best core, best ceiling), rounds interleaved.
    let mut best: Vec<(String, Option<String>, Duration, Duration)> = Vec::new();
    best.push(("plaintext".into(), None, Duration::MAX, Duration::MAX));
    best.push(("tls (default)".into(), None, Duration::MAX, Duration::MAX));
    for s in suites {
        best.push((format!("tls {s}"), None, Duration::MAX, Duration::MAX));
    }
    for _ in 0..rounds {
        for (i, row) in best.iter_mut().enumerate() {
            let config = match i {
                0 => None,
                1 => Some(server_config(&certs, None)),
                _ => Some(server_config(&certs, Some(suites[i - 2]))),
            };
            let (c, suite) = core(&stream, config.clone().map(|c| (certs.as_path(), c)));
            let l = ceiling(&stream, config.map(|c| (certs.as_path(), c)));
            row.1 = suite;
            row.2 = row.2.min(c);
            row.3 = row.3.min(l);
        }
    }
    let plain = best[0].2;
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10}",
        format!("stream ({})", stream.name),
        "packets",
        "core Mpps",
        "core Gb/s",
        "ceiling Gb/s",
        "core/ceil",
        "vs plain"
    );
    let mut rows = Vec::new();
    for (name, suite, c, l) in &best {
        println!(
            "{:<36} {:>10} {:>10.2} {:>10.2} {:>12.2} {:>10.2} {:>10.2}",
            name,
            stream.packets(),
            mpps(*c),
            gbit(*c),
            gbit(*l),
            l.as_secs_f64() / c.as_secs_f64(),
            plain.as_secs_f64() / c.as_secs_f64()
        );
        if let Some(s) = suite {
            println!("  negotiated: {s}");
        }
        rows.push(format!(
            "{{\"stream\":\"{name}\",\"suite\":{},\"packets\":{},\"bytes\":{},\"core_s\":{},\"ceiling_s\":{},\"core_mpps\":{:.4},\"core_gbps\":{:.4},\"ceiling_gbps\":{:.4},\"vs_plaintext\":{:.4}}}",
            suite.as_ref().map(|s| format!("\"{s}\"")).unwrap_or("null".into()),
            stream.packets(),
            stream.bytes(),
            c.as_secs_f64(),
            l.as_secs_f64(),
            mpps(*c),
            gbit(*c),
            gbit(*l),
            plain.as_secs_f64() / c.as_secs_f64()
        ));
    }
    let share = arg("--share").map(|t| share_cost(Path::new(&t), rounds.max(3)));
    if let Some(p) = arg("--json") {
        std::fs::write(
            &p,
            format!(
                "{{\"rounds\":{rounds},\"tls\":[{}],\"share\":[{}]}}\n",
                rows.join(",\n"),
                share.unwrap_or_default().join(",\n")
            ),
        )
        .unwrap();
    }
}
