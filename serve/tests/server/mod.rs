//! The real pcapovertcp-serve as the serve tests run it: one wrapper for
//! all of them, so a fix to how it is started, waited for or cleaned up
//! is made once.
#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A running pcapovertcp-serve, killed when dropped (a failing test must
/// not leave one running, or holding the test run's output open); its
/// stderr goes to a file, read with `log()`.
pub struct Server {
    pub child: Child,
    pub log: PathBuf,
    /// The port it listens on; 0 unless started with `listen`.
    pub port: u16,
}

/// This test process's scratch directory, and a number for a new file.
fn scratch() -> (PathBuf, usize) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("pcapovertcp-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (dir, NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Server {
    /// Starts the tool with `args` as given, standard input `stdin`.
    pub fn spawn(args: &[&str], stdin: Stdio) -> Server {
        Server::spawn_limited(None, args, stdin)
    }

    /// As `spawn`, under `ulimit -n FD_LIMIT` when given.
    pub fn spawn_limited(fd_limit: Option<u32>, args: &[&str], stdin: Stdio) -> Server {
        let bin = env!("CARGO_BIN_EXE_pcapovertcp-serve");
        let mut command = match fd_limit {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
        };
        Server::run(command.args(args).stdin(stdin))
    }

    /// Runs `command` (the tool, its arguments, environment and standard
    /// input set), standard output discarded, standard error to a log.
    pub fn run(command: &mut Command) -> Server {
        let (dir, n) = scratch();
        let log = dir.join(format!("serve-{n}.log"));
        let child = command
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server {
            child,
            log,
            port: 0,
        }
    }

    /// Listening on a port of 127.0.0.1 the system picks (read back from
    /// `--port-file`), then `args`.
    pub fn listen(args: &[&str], stdin: Stdio) -> Server {
        Server::listen_limited(None, args, stdin)
    }

    /// As `listen`, under `ulimit -n FD_LIMIT` when given.
    pub fn listen_limited(fd_limit: Option<u32>, args: &[&str], stdin: Stdio) -> Server {
        Server::listen_ports(fd_limit, "127.0.0.1:0", args, stdin, 1).0
    }

    /// Listening on `listen`, then `args`; waits for `n` ports in its port
    /// file (--shards: one a shard). The server's `port` is the first.
    pub fn listen_ports(
        fd_limit: Option<u32>,
        listen: &str,
        args: &[&str],
        stdin: Stdio,
        n: usize,
    ) -> (Server, Vec<u16>) {
        let (dir, k) = scratch();
        let port_file = dir.join(format!("port-{k}"));
        let port_arg = port_file.to_str().unwrap();
        let mut all = vec!["--listen", listen, "--port-file", port_arg];
        all.extend_from_slice(args);
        let mut server = Server::spawn_limited(fd_limit, &all, stdin);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The file is written whole, a line a port.
            let ports: Vec<u16> = std::fs::read_to_string(&port_file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if ports.len() >= n {
                server.port = ports[0];
                return (server, ports);
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start: {}",
                server.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (within `limit`) until the log has `n` lines containing
    /// `needle`; returns them.
    pub fn wait_lines(&self, needle: &str, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let lines: Vec<String> = self
                .log()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} lines with {needle:?} from pcapovertcp-serve within {limit:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (within `limit`) for a line of the log containing `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> String {
        self.wait_lines(needle, 1, limit).swap_remove(0)
    }

    pub fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits (within `limit`) for the tool to end by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not end within {limit:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (within `limit`) for the tool to end by itself; whether it
    /// succeeded.
    pub fn wait_success(&mut self, limit: Duration) -> bool {
        self.wait_exit(limit).success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
