//! pcapovertcp-serve as users run it: the real binary on loopback, read back
//! through `Source`.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{drain, reference_packets, traces_dir, Expected};
use pcapovertcp::{Config, Source};

/// A running pcapovertcp-serve, killed when dropped: a failing test must not
/// leave a server running (or holding the test run's output open).
struct Server(Child);

impl Server {
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the server with `args`; returns it and the port it bound.
fn start(args: &[&str], stdin: Stdio) -> (Server, u16) {
    let dir = std::env::temp_dir().join(format!("pcapovertcp-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let port_file = dir.join(format!("port-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&port_file);
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_pcapovertcp-serve"))
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            if let Ok(port) = text.trim().parse() {
                return (server, port);
            }
        }
        // Dropping `server` kills it.
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
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
        server.wait().unwrap();
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
        server.wait().unwrap();
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
        let mut stdin = server.0.stdin.take().unwrap();
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
        server.wait().unwrap();
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
        assert!(server.wait().unwrap().success());
    })
}
