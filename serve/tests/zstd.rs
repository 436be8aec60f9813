//! Compression for thin links over real loopback sockets: the packet
//! source's `tcp+zstd://` and `tcp+zstd-listen://` endpoints against the
//! real pcapovertcp-serve (`--connect tcp+zstd://`, `--listen
//! tcp+zstd://`), both ways round, a live relay that must not be held back,
//! the mismatches an operator meets (a compressed sender on a plain
//! endpoint and the other way round), and a decoder window bomb. The TLS
//! variant is in tls.rs, beside its certificates.

#[path = "../../tests/common/mod.rs"]
mod common;
mod server;

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::{collect, drain, listening, reference_packets, traces_dir, within, Log};
use log::Level;
use pcapovertcp::{Config, Source};
use server::Server;

/// Real traces: pcap little- and big-endian, nanoseconds, pcapng with
/// several interfaces, and the largest of them.
const TRACES: [&str; 4] = [
    "http/206_example_b.pcap",
    "irc-dcc-send.pcapng",
    "pcapng-multi-interface.pcapng",
    "smb/dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap",
];

#[test]
fn serve_connect_tcp_zstd_delivers_every_packet_to_tcp_zstd_listen() {
    within(Duration::from_secs(120), || {
        let (mut source, _name, addr) = listening("tcp+zstd-listen", Config::default());
        let target = format!("tcp+zstd://{addr}");
        for trace in TRACES {
            let path = traces_dir().join(trace);
            let want = reference_packets(&path);
            let mut server = Server::spawn(
                &["--connect", &target, path.to_str().unwrap()],
                Stdio::null(),
            );
            let got = collect(&mut source, want.len(), Duration::from_secs(30));
            assert_eq!(got.len(), want.len(), "{trace}: how many packets");
            assert!(got == want, "{trace}: the packets differ from the file's");
            assert!(
                server.wait_success(Duration::from_secs(30)),
                "{trace}: {}",
                server.log()
            );
            assert!(
                server
                    .log()
                    .contains(&format!("{target}: sent the whole file")),
                "{}",
                server.log()
            );
        }
        let c = source.counters();
        assert_eq!((c.corrupt, c.truncated), (0, 0), "{c:?}");
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn a_live_compressed_relay_is_not_held_back() {
    // A live capture (standard input) that pauses: what was written before
    // the pause reaches the receiver during it, not when more comes.
    within(Duration::from_secs(60), || {
        let (mut source, _name, addr) = listening("tcp+zstd-listen", Config::default());
        let path = traces_dir().join("dns53.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let want = reference_packets(&path);
        let mut server = Server::spawn(
            &["--connect", &format!("tcp+zstd://{addr}"), "-"],
            Stdio::piped(),
        );
        let mut stdin = server.child.stdin.take().unwrap();
        // The header and the first packet (dns53.pcap: 24 + 16 + 74 bytes).
        let first = 24 + 16 + (u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize);
        stdin.write_all(&bytes[..first]).unwrap();
        stdin.flush().unwrap();
        let got = collect(&mut source, 1, Duration::from_secs(10));
        assert!(
            got[..] == want[..1],
            "the first packet, while stdin is open"
        );
        stdin.write_all(&bytes[first..]).unwrap();
        drop(stdin);
        let rest = collect(&mut source, want.len() - 1, Duration::from_secs(10));
        assert!(rest[..] == want[1..], "the rest");
        assert!(
            server.wait_success(Duration::from_secs(30)),
            "{}",
            server.log()
        );
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn tcp_zstd_connect_reads_serve_listen_tcp_zstd_and_plain_stays_plain() {
    within(Duration::from_secs(60), || {
        for trace in TRACES {
            let path = traces_dir().join(trace);
            let want = reference_packets(&path);
            for (listen, scheme) in [
                ("tcp+zstd://127.0.0.1:0", "tcp+zstd"),
                ("127.0.0.1:0", "tcp"),
            ] {
                let (mut server, ports) = Server::listen_ports(
                    None,
                    listen,
                    &["--clients", "1", path.to_str().unwrap()],
                    Stdio::null(),
                    1,
                );
                let endpoint = format!("{scheme}://127.0.0.1:{}", ports[0]);
                let config = Config {
                    reconnect: false,
                    ..Config::default()
                };
                let mut source = Source::open(&endpoint, config)
                    .unwrap_or_else(|e| panic!("{endpoint}: {e}\n{}", server.log()));
                let got = drain(&mut source);
                assert_eq!(got.len(), want.len(), "{trace} over {scheme}");
                assert!(got == want, "{trace} over {scheme}: the packets differ");
                assert!(
                    server.wait_success(Duration::from_secs(30)),
                    "{}",
                    server.log()
                );
                let c = source.counters();
                assert_eq!((c.connects, c.corrupt, c.truncated), (1, 0, 0), "{c:?}");
            }
        }
    })
}

#[test]
fn a_compressed_sender_on_a_plain_listener_is_one_line_saying_what_to_do() {
    within(Duration::from_secs(30), || {
        let (mut source, name, addr) = listening("tcp-listen", Config::default());
        let path = traces_dir().join("dns53.pcap");
        let _server = Server::spawn(
            &[
                "--connect",
                &format!("tcp+zstd://{addr}"),
                path.to_str().unwrap(),
            ],
            Stdio::null(),
        );
        let line = Log::default().wait_for(
            &source,
            Level::Warn,
            &["zstd-compressed"],
            Duration::from_secs(10),
        );
        assert!(
            line.starts_with(&format!("{name}: sender 127.0.0.1:"))
                && line.contains("sends a zstd-compressed stream (its first bytes are a zstd frame): use tcp+zstd:// or tcp+zstd-listen:// for it"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(source.counters().records, 0);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn a_plain_sender_on_a_compressed_listener_is_one_line_saying_what_to_do() {
    within(Duration::from_secs(30), || {
        let (mut source, name, addr) = listening("tcp+zstd-listen", Config::default());
        let path = traces_dir().join("dns53.pcap");
        let _server = Server::spawn(
            &["--connect", &addr.to_string(), path.to_str().unwrap()],
            Stdio::null(),
        );
        let line =
            Log::default().wait_for(&source, Level::Warn, &["not zstd"], Duration::from_secs(10));
        assert!(
            line.starts_with(&format!("{name}: sender 127.0.0.1:"))
                && line.contains("the peer sends uncompressed PCAP-over-IP, not zstd: drop the +zstd from this end's scheme"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(source.counters().records, 0);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn a_window_bomb_is_refused_and_memory_stays_bounded() {
    within(Duration::from_secs(30), || {
        let (mut source, name, addr) = listening("tcp+zstd-listen", Config::default());
        let before = common::rss_kib();
        // A zstd frame header asking for a 64 MiB window (log 10 + 16),
        // which zstd's own default limit (2^27) would grant, then raw
        // blocks holding a valid pcap stream: a decoder without our bound
        // would fill the window and deliver the packets.
        let mut bomb = TcpStream::connect(addr).unwrap();
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3];
        let trace = std::fs::read(traces_dir().join("dns53.pcap")).unwrap();
        let mut pcap = trace.clone();
        while pcap.len() < 16 << 20 {
            pcap.extend_from_slice(&trace[24..]);
        }
        for block in pcap.chunks(64 * 1024) {
            // A raw block (type 0), never the last one.
            let header = (block.len() as u32) << 3;
            frame.extend_from_slice(&header.to_le_bytes()[..3]);
            frame.extend_from_slice(block);
        }
        // The source closes it after the frame header: the rest may not go.
        let _ = bomb.write_all(&frame);
        let line = Log::default().wait_for(
            &source,
            Level::Warn,
            &["window larger than 8 MiB"],
            Duration::from_secs(10),
        );
        assert!(
            line.starts_with(&format!("{name}: sender 127.0.0.1:")),
            "{line}"
        );
        let grown = common::rss_kib().saturating_sub(before);
        assert!(grown < 64 * 1024, "the process grew by {grown} KiB");
        assert_eq!(source.counters().records, 0);
        common::closes_promptly(&mut source, "open");
    })
}

#[test]
fn upstream_reads_a_compressed_server_and_serves_it_plain() {
    // A relay in the middle of a thin link: it reads tcp+zstd:// from the
    // far side and serves its plain clients.
    within(Duration::from_secs(60), || {
        let path = traces_dir().join("irc-dcc-send.pcapng");
        let want = reference_packets(&path);
        let (mut far, far_ports) = Server::listen_ports(
            None,
            "tcp+zstd://127.0.0.1:0",
            &["--clients", "1", path.to_str().unwrap()],
            Stdio::null(),
            1,
        );
        let upstream = format!("tcp+zstd://127.0.0.1:{}", far_ports[0]);
        let (mut near, near_ports) = Server::listen_ports(
            None,
            "127.0.0.1:0",
            &["--upstream", &upstream, "--once"],
            Stdio::null(),
            1,
        );
        let config = Config {
            reconnect: false,
            ..Config::default()
        };
        let endpoint = format!("127.0.0.1:{}", near_ports[0]);
        let mut source = Source::open(&endpoint, config)
            .unwrap_or_else(|e| panic!("{endpoint}: {e}\n{}\n{}", near.log(), far.log()));
        let got = drain(&mut source);
        assert_eq!(got.len(), want.len(), "{}", near.log());
        assert!(got == want, "the packets differ");
        assert!(far.wait_success(Duration::from_secs(30)), "{}", far.log());
        assert!(near.wait_success(Duration::from_secs(30)), "{}", near.log());
    })
}

#[test]
fn each_shard_port_of_a_compressed_listen_is_compressed() {
    within(Duration::from_secs(60), || {
        let path = traces_dir().join("http/206_example_b.pcap");
        let mut want = reference_packets(&path);
        let cmd = format!("cat {}", path.display());
        let (mut server, ports) = Server::listen_ports(
            None,
            "tcp+zstd://127.0.0.1:0",
            &[
                "--shards",
                "2",
                "--wait-clients",
                "2",
                "--once",
                "--exec",
                &cmd,
            ],
            Stdio::null(),
            2,
        );
        let config = Config {
            reconnect: false,
            ..Config::default()
        };
        let mut sources: Vec<Source> = ports
            .iter()
            .map(|p| Source::start(&format!("tcp+zstd://127.0.0.1:{p}"), config.clone()).unwrap())
            .collect();
        let mut got = Vec::new();
        for source in &mut sources {
            got.extend(drain(source));
            let c = source.counters();
            assert_eq!((c.connects, c.corrupt), (1, 0), "{c:?}");
        }
        assert!(
            server.wait_success(Duration::from_secs(30)),
            "{}",
            server.log()
        );
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the shards' packets differ from the trace's");
    })
}
