//! pcapovertcp-serve as users run it: the real binary on loopback, read back
//! through `Source` (or, with --connect, by a listener in the test).

#[path = "../../tests/common/mod.rs"]
mod common;
mod server;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_bytes, drain, loopback_listener, reference_packets, traces_dir, Expected};
use pcapovertcp::{Config, Source};
use server::Server;

/// Starts the server with `args`; returns it and the port it bound.
fn start(args: &[&str], stdin: Stdio) -> (Server, u16) {
    let server = Server::listen(args, stdin);
    let port = server.port;
    (server, port)
}

fn read_all(port: u16) -> Vec<Expected> {
    let config = Config {
        reconnect: false,
        ..Config::default()
    };
    drain(&mut Source::open(&format!("127.0.0.1:{port}"), config).unwrap())
}

#[test]
fn serves_a_file_looped_with_shifted_timestamps() {
    common::within(std::time::Duration::from_secs(120), || {
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = reference_packets(&path);
        let (mut server, port) = start(
            &["--clients", "1", "--loop", "3", path.to_str().unwrap()],
            Stdio::null(),
        );
        let got = read_all(port);
        server.wait_exit(Duration::from_secs(60));
        assert_eq!(got.len(), 3 * want.len());
        let span = want.last().unwrap().0 - want[0].0 + 1;
        for (round, chunk) in got.chunks(want.len()).enumerate() {
            for (g, w) in chunk.iter().zip(&want) {
                assert_eq!(
                    g.0,
                    w.0 + span * round as i64,
                    "seconds shifted by {span} per round"
                );
                assert_eq!((g.1, g.2, &g.3), (w.1, w.2, &w.3));
            }
        }
    })
}

#[test]
fn rate_limit_paces_the_packets() {
    common::within(std::time::Duration::from_secs(120), || {
        // 10 packets at 50 per second take at least ~0.18 s: the pacing is real.
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = reference_packets(&path);
        assert!(want.len() >= 10);
        let started = Instant::now();
        let (mut server, port) = start(
            &["--clients", "1", "--rate", "50", path.to_str().unwrap()],
            Stdio::null(),
        );
        let got = read_all(port);
        server.wait_exit(Duration::from_secs(60));
        assert_eq!(got, want);
        let min = Duration::from_secs_f64((want.len() - 1) as f64 / 50.0);
        assert!(
            started.elapsed() >= min,
            "{:?} < {min:?}",
            started.elapsed()
        );
    })
}

#[test]
fn relays_standard_input_live() {
    common::within(std::time::Duration::from_secs(120), || {
        let path = traces_dir().join("dns53.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let want = reference_packets(&path);
        let (mut server, port) = start(&["-"], Stdio::piped());
        let mut stdin = server.child.stdin.take().unwrap();
        // The capture's header arrives first; a client that connects gets it
        // (open() returns once it has), then the packets captured from then on.
        stdin.write_all(&bytes[..24]).unwrap();
        stdin.flush().unwrap();
        let config = Config {
            reconnect: false,
            ..Config::default()
        };
        let mut source = Source::open(&format!("127.0.0.1:{port}"), config).unwrap();
        stdin.write_all(&bytes[24..]).unwrap();
        drop(stdin); // end of the capture: the relay exits and closes the clients
        let got = drain(&mut source);
        server.wait_exit(Duration::from_secs(60));
        assert_eq!(got, want);
    })
}

#[test]
fn looping_a_file_without_packets_ends_instead_of_spinning() {
    common::within(std::time::Duration::from_secs(30), || {
        let path = traces_dir().join("empty.pcap");
        let (mut server, port) = start(
            &["--clients", "1", "--loop", "0", path.to_str().unwrap()],
            Stdio::null(),
        );
        // The header arrives, then the end of the stream: nothing to repeat.
        assert!(read_all(port).is_empty());
        assert!(server.wait_exit(Duration::from_secs(60)).success());
    })
}

/// Accepts one connection and reads it to its end.
fn receive_one(listener: &std::net::TcpListener) -> Vec<u8> {
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    got
}

/// The packets of a received pcap stream, read with `pcap-file`.
fn pcap_packet_count(bytes: &[u8]) -> usize {
    let mut r = pcap_file::pcap::PcapReader::new(bytes).unwrap();
    let mut n = 0;
    while let Some(p) = r.next_raw_packet() {
        p.unwrap();
        n += 1;
    }
    n
}

#[test]
fn connect_sends_the_file_to_a_listening_loopback_listener() {
    common::within(Duration::from_secs(60), || {
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = std::fs::read(&path).unwrap();
        let (listener, addr) = loopback_listener();
        let mut server =
            Server::spawn(&["--connect", &addr, path.to_str().unwrap()], Stdio::null());
        let got = receive_one(&listener);
        assert_eq!(got, want);
        assert_eq!(pcap_packet_count(&got), reference_packets(&path).len());
        assert!(server.wait_exit(Duration::from_secs(60)).success());
    })
}

#[test]
fn connect_retries_until_the_receiver_is_up() {
    common::within(Duration::from_secs(60), || {
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = std::fs::read(&path).unwrap();
        // A port that was free a moment ago: nothing listens there yet.
        let addr = loopback_listener().1;
        let mut server =
            Server::spawn(&["--connect", &addr, path.to_str().unwrap()], Stdio::null());
        std::thread::sleep(Duration::from_millis(500));
        let listener = std::net::TcpListener::bind(&addr).unwrap();
        let got = receive_one(&listener);
        assert_eq!(got, want);
        assert!(server.wait_exit(Duration::from_secs(60)).success());
        // One line for the outage and one for the connection, not one per attempt.
        let stderr = server.log();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.iter().filter(|l| l.contains("retrying")).count(),
            1,
            "{stderr}"
        );
        assert_eq!(
            lines.iter().filter(|l| l.ends_with("connected")).count(),
            1,
            "{stderr}"
        );
        // Every message names the target (the counter lines at exit aside:
        // their total names none).
        assert!(
            lines
                .iter()
                .filter(|l| !l.contains(" counters: "))
                .all(|l| l.contains(&addr)),
            "{stderr}"
        );
    })
}

#[test]
fn connect_to_two_receivers_sends_each_the_whole_file() {
    common::within(Duration::from_secs(60), || {
        let path = traces_dir().join("irc-dcc-send.pcapng");
        let want = std::fs::read(&path).unwrap();
        let (a, addr_a) = loopback_listener();
        let (b, addr_b) = loopback_listener();
        let mut server = Server::spawn(
            &[
                "--connect",
                &addr_a,
                "--connect",
                &addr_b,
                path.to_str().unwrap(),
            ],
            Stdio::null(),
        );
        let other = std::thread::spawn(move || receive_one(&b));
        let got_a = receive_one(&a);
        let got_b = other.join().unwrap();
        assert_bytes("receiver A", &got_a, &want, "");
        assert_bytes("receiver B", &got_b, &want, "");
        assert!(server.wait_exit(Duration::from_secs(60)).success());
    })
}

#[test]
fn connect_resends_the_file_after_a_broken_connection() {
    common::within(Duration::from_secs(60), || {
        // Paced, so the tool is still writing when the receiver goes away.
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = std::fs::read(&path).unwrap();
        let (listener, addr) = loopback_listener();
        let mut server = Server::spawn(
            &["--connect", &addr, "--rate", "20", path.to_str().unwrap()],
            Stdio::null(),
        );
        {
            let (mut first, _) = listener.accept().unwrap();
            let mut header = [0u8; 24];
            first.read_exact(&mut header).unwrap();
            assert_eq!(header[..], want[..24]);
        } // dropped mid-stream
          // A new stream: the header again, then every packet.
        let got = receive_one(&listener);
        assert_eq!(got, want);
        assert!(server.wait_exit(Duration::from_secs(60)).success());
        let stderr = server.log();
        assert_eq!(stderr.matches("connection lost").count(), 1, "{stderr}");
        assert_eq!(stderr.matches("connected").count(), 2, "{stderr}");
    })
}

#[test]
fn connect_relays_standard_input() {
    common::within(Duration::from_secs(60), || {
        let path = traces_dir().join("rotation.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let (a, addr_a) = loopback_listener();
        let (b, addr_b) = loopback_listener();
        let mut server = Server::spawn(
            &["--connect", &addr_a, "--connect", &addr_b, "-"],
            Stdio::piped(),
        );
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&bytes[..24]).unwrap();
        stdin.flush().unwrap();
        // Both receivers have the header: both are among the relay's clients.
        let (mut ca, _) = a.accept().unwrap();
        let (mut cb, _) = b.accept().unwrap();
        for c in [&mut ca, &mut cb] {
            let mut header = [0u8; 24];
            c.read_exact(&mut header).unwrap();
            assert_eq!(header[..], bytes[..24]);
        }
        stdin.write_all(&bytes[24..]).unwrap();
        drop(stdin); // end of the capture: the streams end
        for c in [&mut ca, &mut cb] {
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            assert_eq!(rest[..], bytes[24..]);
        }
        assert!(server.wait_exit(Duration::from_secs(60)).success());
    })
}

#[test]
fn connect_with_listen_or_port_file_is_rejected() {
    common::within(Duration::from_secs(30), || {
        let path = traces_dir().join("dns53.pcap");
        for extra in [
            ["--listen", "127.0.0.1:0"],
            ["--port-file", "/nonexistent/port"],
        ] {
            let args = [
                &["--connect", "127.0.0.1:9"][..],
                &extra,
                &[path.to_str().unwrap()],
            ]
            .concat();
            let (code, stderr) = run_failing(&args);
            assert_ne!(code, Some(0), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains("--connect") && stderr.contains(extra[0]),
                "{stderr}"
            );
        }
    })
}

#[test]
fn connect_relay_reads_nothing_before_a_receiver_is_up() {
    common::within(Duration::from_secs(60), || {
        // `tcpdump -w - | pcapovertcp-serve --connect ... -` started before
        // the receiver: the capture waits in the pipe, nothing is lost.
        let path = traces_dir().join("rotation.pcap");
        let bytes = std::fs::read(&path).unwrap();
        let addr = loopback_listener().1;
        let mut server = Server::spawn(&["--connect", &addr, "-"], Stdio::piped());
        let mut stdin = server.child.stdin.take().unwrap();
        stdin.write_all(&bytes).unwrap();
        drop(stdin);
        std::thread::sleep(Duration::from_millis(300));
        let listener = std::net::TcpListener::bind(&addr).unwrap();
        assert_eq!(receive_one(&listener), bytes);
        assert!(server.wait_exit(Duration::from_secs(60)).success());
    })
}

#[test]
fn wait_clients_holds_the_stream_back_until_enough_clients_are_connected() {
    common::within(Duration::from_secs(60), || {
        let path = traces_dir().join("http-vlan-0.pcap");
        let want = std::fs::read(&path).unwrap();
        let (mut server, port) = start(
            &[
                "--clients",
                "2",
                "--wait-clients",
                "2",
                path.to_str().unwrap(),
            ],
            Stdio::null(),
        );
        let connect = || {
            let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            c
        };
        // One client: not a byte, not even the stream's header, while it is
        // alone (the server has long accepted it when the read gives up).
        let mut first = connect();
        let mut byte = [0u8; 1];
        match first.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("the first client got {other:?} before a second one connected"),
        }
        // The second client starts the stream: each gets the whole file.
        let mut second = connect();
        for (name, c) in [("first", &mut first), ("second", &mut second)] {
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_bytes(&format!("{name} client"), &got, &want, "");
        }
        // --clients 2: both served, the server ends.
        assert!(server.wait_exit(Duration::from_secs(60)).success());
    })
}

#[test]
fn wait_clients_with_connect_or_zero_is_rejected() {
    common::within(Duration::from_secs(30), || {
        let path = traces_dir().join("dns53.pcap");
        for args in [
            &["--connect", "127.0.0.1:9", "--wait-clients", "2"][..],
            &["--listen", "127.0.0.1:0", "--wait-clients", "0"][..],
        ] {
            let all = [args, &[path.to_str().unwrap()]].concat();
            let (code, stderr) = run_failing(&all);
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("--wait-clients"), "{args:?}: {stderr}");
        }
    })
}

/// Runs the tool with `args` to its end (these fail before they listen or
/// dial): its exit code and stderr.
fn run_failing(args: &[&str]) -> (Option<i32>, String) {
    run_failing_env(&[], args)
}

/// As `run_failing`, with `env` added to its environment.
fn run_failing_env(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pcapovertcp-serve"))
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tool refuses `args` before it starts: exit `code`, and one line
/// on stderr, its own, containing `needle`.
fn assert_refused(args: &[&str], code: i32, needle: &str) {
    let (got, stderr) = run_failing(args);
    assert_eq!(got, Some(code), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("pcapovertcp-serve: ") && stderr.contains(needle),
        "{args:?}: {stderr}"
    );
}

#[test]
fn bad_tls_flag_combinations_exit_2_with_one_line() {
    common::within(Duration::from_secs(30), || {
        let path = traces_dir().join("dns53.pcap");
        let file = path.to_str().unwrap();
        let listen = ["--listen", "127.0.0.1:0"];
        let cases: &[(&[&str], &str)] = &[
            (
                &["--tls-cert", "c.pem"],
                "--tls-cert and --tls-key go together: set both or neither",
            ),
            (
                &["--tls-key", "k.pem"],
                "--tls-cert and --tls-key go together: set both or neither",
            ),
            (
                &["--tls-ca", "ca.pem"],
                "--tls-ca needs --tls-cert and --tls-key when listening",
            ),
            (
                &[
                    "--tls-cert",
                    "c.pem",
                    "--tls-key",
                    "k.pem",
                    "--tls-server-name",
                    "sensor",
                ],
                "--tls-server-name needs --connect",
            ),
            (&["--tls"], "--tls needs --connect"),
        ];
        let connect_cases: &[(&[&str], &str)] = &[
            (
                &["--tls-cert", "c.pem", "--tls-ca", "ca.pem"],
                "--tls-cert and --tls-key go together: set both or neither",
            ),
            (
                &["--tls-server-name", "not a name"],
                "--tls-server-name not a name: expected a DNS name or an IP address",
            ),
        ];
        let mut runs: Vec<Vec<&str>> = Vec::new();
        for (args, needle) in cases {
            let mut all = listen.to_vec();
            all.extend_from_slice(args);
            all.push(file);
            runs.push(all);
            runs.last_mut().unwrap().push(needle);
        }
        for (args, needle) in connect_cases {
            let mut all = vec!["--connect", "127.0.0.1:9"];
            all.extend_from_slice(args);
            all.push(file);
            all.push(needle);
            runs.push(all);
        }
        // Schemes that disagree with each other or with the --tls*
        // options, and a host that is no TLS server name.
        runs.push(vec![
            "--connect",
            "tcp-listen://127.0.0.1:9",
            file,
            "--connect tcp-listen://127.0.0.1:9: a listen scheme",
        ]);
        runs.push(vec![
            "--connect",
            "tls://127.0.0.1:9",
            "--connect",
            "127.0.0.2:9",
            file,
            "--connect 127.0.0.2:9: the other targets are TLS, and TLS is for every target or none: write it as tls://127.0.0.2:9",
        ]);
        runs.push(vec![
            "--connect",
            "tcp+zstd://127.0.0.1:9",
            "--tls",
            file,
            "--connect tcp+zstd://127.0.0.1:9: the --tls* options make every connection TLS: write tls+zstd://",
        ]);
        runs.push(vec![
            "--listen",
            "tls+zstd://127.0.0.1:0",
            file,
            "--listen tls+zstd://127.0.0.1:0: serving TLS needs --tls-cert and --tls-key",
        ]);
        runs.push(vec![
            "--listen",
            "udp://127.0.0.1:0",
            file,
            "unknown scheme \"udp\"; expected ADDR:PORT, or behind tcp://, tls://, tcp+zstd:// or tls+zstd://",
        ]);
        runs.push(vec![
            "--connect",
            "[fe80::1%lo]:9",
            "--tls",
            file,
            "\"fe80::1%lo\" is not a valid TLS server name; give the name in the receiver's certificate with --tls-server-name",
        ]);
        for mut args in runs {
            let needle = args.pop().unwrap();
            assert_refused(&args, 2, needle);
        }
    })
}

#[test]
fn unusable_tls_files_exit_1_with_one_line() {
    common::within(Duration::from_secs(30), || {
        let path = traces_dir().join("dns53.pcap");
        let file = path.to_str().unwrap();
        let cases: Vec<(Vec<&str>, String)> = vec![
            (
                vec![
                    "--listen",
                    "127.0.0.1:0",
                    "--tls-cert",
                    "/nonexistent/cert.pem",
                    "--tls-key",
                    "/nonexistent/key.pem",
                    file,
                ],
                "pcapovertcp-serve: cannot read --tls-cert /nonexistent/cert.pem: No such file or directory (os error 2)".into(),
            ),
            (
                // A pcap is no PEM certificate.
                vec![
                    "--listen",
                    "127.0.0.1:0",
                    "--tls-cert",
                    file,
                    "--tls-key",
                    file,
                    file,
                ],
                format!("pcapovertcp-serve: --tls-cert {file} holds no certificate in PEM form"),
            ),
            (
                vec![
                    "--connect",
                    "127.0.0.1:9",
                    "--tls-ca",
                    "/nonexistent/ca.pem",
                    file,
                ],
                "pcapovertcp-serve: cannot read --tls-ca /nonexistent/ca.pem: No such file or directory (os error 2)".into(),
            ),
        ];
        for (args, want) in cases {
            let (code, stderr) = run_failing(&args);
            assert_eq!(code, Some(1), "{args:?}: {stderr}");
            // One line, before listening or dialling.
            assert_eq!(stderr, format!("{want}\n"), "{args:?}");
        }
    })
}

/// An option given twice (other than the lists), or outside its mode even
/// with its default value, is refused with one line and status 2 before
/// anything is served. The old parser kept the last of two values and took
/// "given" for "not the default"; each case here then got past the parser
/// and failed later, at the unwritable port file or the missing CA (1).
#[test]
fn options_given_twice_or_outside_their_mode_exit_2_with_one_line() {
    common::within(Duration::from_secs(30), || {
        let path = traces_dir().join("dns53.pcap");
        let file = path.to_str().unwrap();
        // Each case would fail at start-up if it were accepted.
        let listen = [
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            "/nonexistent/port",
        ];
        let connect = [
            "--connect",
            "127.0.0.1:9",
            "--tls-ca",
            "/nonexistent/ca.pem",
        ];
        let cases: &[(&[&str], &[&str], &str)] = &[
            (
                &listen,
                &["--rate", "5", "--rate", "6", file],
                "the argument '--rate <PPS>' cannot be used multiple times",
            ),
            (
                &listen,
                &["--exec", "true", "--exec", "false"],
                "the argument '--exec <CMD>' cannot be used multiple times",
            ),
            (
                &listen,
                &["--once", "--once", "--exec", "true"],
                "the argument '--once' cannot be used multiple times",
            ),
            (
                &listen,
                &["--merge-window", "100", "-"],
                "--merge-window needs --upstream",
            ),
            (
                &connect,
                &["--wait-clients", "1", file],
                "--wait-clients needs --listen",
            ),
        ];
        for (mode, args, needle) in cases {
            let all: Vec<&str> = mode.iter().chain(args.iter()).copied().collect();
            assert_refused(&all, 2, needle);
        }
    })
}

#[test]
fn help_keeps_the_long_explanations_and_the_examples() {
    common::within(Duration::from_secs(30), || {
        let out = Command::new(env!("CARGO_BIN_EXE_pcapovertcp-serve"))
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for needle in [
            "Usage: pcapovertcp-serve [options] FILE|-",
            // A long explanation (--exec's restarts), the counters, the
            // examples.
            "doubling up to 5 s",
            "packets + dropped = input_packets",
            "Examples:",
            "--upstream sensor1:57012,sensor2:57012",
            "--upstream A --upstream B is --upstream A,B",
        ] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
    })
}

/// A flat JSON object of string values (what --log-format json writes),
/// parsed strictly: None unless `line` is exactly one such object.
fn json_object(line: &str) -> Option<Vec<(String, String)>> {
    fn string(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<String> {
        if chars.next()? != '"' {
            return None;
        }
        let mut s = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(s),
                '\\' => match chars.next()? {
                    '"' => s.push('"'),
                    '\\' => s.push('\\'),
                    '/' => s.push('/'),
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).map(|_| chars.next()).collect::<Option<_>>()?;
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    _ => return None,
                },
                c if u32::from(c) < 0x20 => return None,
                c => s.push(c),
            }
        }
    }
    let mut chars = line.chars().peekable();
    let mut fields = Vec::new();
    if chars.next()? != '{' {
        return None;
    }
    loop {
        let key = string(&mut chars)?;
        if chars.next()? != ':' {
            return None;
        }
        fields.push((key, string(&mut chars)?));
        match chars.next()? {
            ',' => continue,
            '}' => break,
            _ => return None,
        }
    }
    chars.next().is_none().then_some(fields)
}

/// Every option from the environment (PCAPOVERTCP_SERVE_*, FILE as
/// PCAPOVERTCP_SERVE_INPUT), and --log-format json: each line on standard
/// error one JSON object with time, level and message. The old tool read no
/// environment: without arguments it exited at once (missing FILE).
#[test]
fn options_come_from_the_environment_and_json_logs_are_one_object_per_line() {
    common::within(Duration::from_secs(30), || {
        let path = traces_dir().join("dns53.pcap");
        let dir =
            std::env::temp_dir().join(format!("pcapovertcp-serve-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port_file = dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        let mut server = Server::run(
            Command::new(env!("CARGO_BIN_EXE_pcapovertcp-serve"))
                .env("PCAPOVERTCP_SERVE_LISTEN", "127.0.0.1:0")
                .env("PCAPOVERTCP_SERVE_PORT_FILE", &port_file)
                .env("PCAPOVERTCP_SERVE_CLIENTS", "1")
                .env("PCAPOVERTCP_SERVE_LOG_FORMAT", "json")
                .env("PCAPOVERTCP_SERVE_INPUT", &path)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline && server.child.try_wait().unwrap().is_none(),
                "the server did not start: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let got = read_all(port);
        assert_eq!(got, reference_packets(&path));
        // --clients 1 (from the environment): it ends after this client.
        assert!(server.wait_exit(Duration::from_secs(60)).success());
        let stderr = server.log();
        let mut messages = Vec::new();
        for line in stderr.lines() {
            let fields = json_object(line).unwrap_or_else(|| panic!("not a JSON object: {line}"));
            let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["time", "level", "message"], "{line}");
            assert_eq!(fields[0].1.len(), "2026-01-01T00:00:00Z".len(), "{line}");
            assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&fields[1].1.as_str()));
            messages.push(fields[2].1.clone());
        }
        let listening = format!("listening on 127.0.0.1:{port}");
        assert!(messages.contains(&listening), "{stderr}");
        assert!(
            messages.iter().any(|m| m.starts_with("counters: total")),
            "{stderr}"
        );
    })
}

/// An option from the environment counts as given (its mode is checked),
/// and the command line wins over the environment.
#[test]
fn environment_options_are_checked_and_the_command_line_wins() {
    common::within(Duration::from_secs(30), || {
        let run = run_failing_env;
        // (Were it accepted, the unwritable port file would end it.)
        let (code, stderr) = run(
            &[("PCAPOVERTCP_SERVE_MERGE_WINDOW", "100")],
            &[
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                "/nonexistent/port",
                "-",
            ],
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("--merge-window needs --upstream"),
            "{stderr}"
        );
        let (code, stderr) = run(&[("PCAPOVERTCP_SERVE_RATE", "0")], &["x.pcap"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("'0' for '--rate <PPS>'"), "{stderr}");
        // The command line's --log-format text wins over json; an error
        // after parsing is in the chosen format.
        let bad = [
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            "/nonexistent/port",
            "-",
        ];
        let json = [("PCAPOVERTCP_SERVE_LOG_FORMAT", "json")];
        let (code, stderr) = run(&json, &bad);
        assert_eq!(code, Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        let fields = json_object(last).unwrap_or_else(|| panic!("{stderr}"));
        assert_eq!(fields[1].1, "ERROR", "{stderr}");
        assert!(
            fields[2].1.contains("cannot write /nonexistent/port"),
            "{stderr}"
        );
        let mut text = bad.to_vec();
        text.extend(["--log-format", "text"]);
        let (code, stderr) = run(&json, &text);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.ends_with("pcapovertcp-serve: cannot write /nonexistent/port: No such file or directory (os error 2)\n"),
            "{stderr}"
        );
    })
}

/// The replay recipes (docs/broker.md's, and the README's read of a served
/// file) run Zeek with allow_network_time_forward=F:
/// with the default, a live source moves network time to the wall clock
/// while idle and an old trace gives other logs than `zeek -r`.
#[test]
fn the_readmes_replay_recipes_keep_network_time_on_the_packets() {
    let readme = include_str!("../../README.md");
    let broker = include_str!("../../docs/broker.md");
    let start = broker
        .find("**Replay a trace**")
        .expect("the replay recipe");
    let block = &broker[start..];
    let block = &block[..block.find("**Sensor relay**").expect("the next recipe")];
    let zeeks: Vec<&str> = block
        .lines()
        .filter(|l| l.starts_with("zeek -i pcapovertcp::"))
        .collect();
    assert!(!zeeks.is_empty(), "no zeek command in the replay recipe");
    for line in zeeks {
        assert!(line.contains("allow_network_time_forward=F"), "{line}");
    }
    let run = readme
        .lines()
        .find(|l| l.starts_with("zeek -i pcapovertcp::127.0.0.1:57012 PcapOverTcp::reconnect=F"))
        .expect("the recipe that reads a served file as zeek -r would");
    assert!(run.contains("allow_network_time_forward=F"), "{run}");
}

/// The unit file shipped for the tool: `systemd-analyze verify` finds
/// nothing to say (an unknown or misspelt key is a warning there, so its
/// output must be empty), and `systemd-analyze security` rates its
/// hardening (DynamicUser, the capabilities --exec captures need and no
/// others, ProtectSystem=strict, ...) below 3 of 10, "OK".
#[test]
fn the_unit_file_verifies_and_is_hardened() {
    common::within(Duration::from_secs(120), || {
        let unit = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pcapovertcp-serve.service"
        ))
        .unwrap();
        for key in [
            "DynamicUser=yes",
            "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
            "ProtectSystem=strict",
        ] {
            assert!(unit.lines().any(|l| l == key), "{key}");
        }
        // The built tool, and no environment file, so that it runs here.
        let unit: String = unit
            .lines()
            .map(|l| {
                if l.starts_with("ExecStart=") {
                    format!("ExecStart={}\n", env!("CARGO_BIN_EXE_pcapovertcp-serve"))
                } else if l.starts_with("EnvironmentFile=") {
                    "EnvironmentFile=-/nonexistent/pcapovertcp-serve.env\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("pcapovertcp-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pcapovertcp-serve.service");
        std::fs::write(&path, unit).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--generators=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian: systemd)");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.trim().is_empty(), "{said}");
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for pcapovertcp-serve.service: "))
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level: {text}"));
        assert!(level < 3.0, "exposure {level}: {text}");
    })
}
