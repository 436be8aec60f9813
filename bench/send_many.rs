//! send_many HOST:PORT FILE...: bench/run.py's senders for the merge
//! section, one connection per FILE from one process (64 Python senders
//! spent more CPU starting and ending than sending; on a 2-core machine
//! that CPU came out of Zeek's). Each connection sends its file's 24-byte
//! pcap header; once all are connected this prints "ready" and waits for a
//! line on standard input, then every connection sends the rest of its
//! file at once (each from its own thread, by sendfile), closes its side
//! and waits for the receiver to close. The pause lets the bench connect
//! every sender before any packet flows: a merge only waits for the
//! connections it has. The threads exist before the line: spawned after
//! it, the 64th would start once 63 were already sending.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), files) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: send_many HOST:PORT FILE...");
        return ExitCode::from(2);
    };
    let mut conns = Vec::new();
    for path in &files {
        let opened = File::open(path).and_then(|mut file| {
            let mut header = [0u8; 24];
            file.read_exact(&mut header)?;
            let mut sock = TcpStream::connect(&addr)?;
            sock.write_all(&header)?;
            Ok((file, sock))
        });
        match opened {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("send_many: {path} to {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let go = std::sync::Arc::new(std::sync::Barrier::new(conns.len() + 1));
    let threads: Vec<_> = conns
        .into_iter()
        .map(|(mut file, mut sock)| {
            let go = go.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                go.wait();
                // File to socket: std copies with sendfile on Linux.
                std::io::copy(&mut file, &mut sock)?;
                sock.shutdown(Shutdown::Write)?;
                let mut sink = [0u8; 4096];
                while sock.read(&mut sink)? > 0 {}
                Ok(())
            })
        })
        .collect();
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return ExitCode::FAILURE;
    }
    go.wait();
    let mut failed = false;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("send_many: {addr}: {e}");
                failed = true;
            }
            Err(_) => failed = true,
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
