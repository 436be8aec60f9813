//! pcapovertcp-serve: serves a pcap or pcapng file (or standard input) as
//! PCAP-over-IP to every client that connects.
//!
//! From a file, each client gets the whole file from its start (optionally
//! several times, optionally rate-limited). From standard input the stream
//! is relayed live: each client gets the stream's header blocks, then the
//! records that arrive after it connected.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pcapovertcp::parse::{Limits, StreamParser};

const USAGE: &str = "\
usage: pcapovertcp-serve [options] FILE|-

Serves a pcap or pcapng file as PCAP-over-IP to every client that connects.
With -, relays standard input (e.g. `tcpdump -U -w - | pcapovertcp-serve -`).

options:
  --listen ADDR:PORT  address to listen on (default 127.0.0.1:57012; port 0
                      picks a free port)
  --port-file PATH    write the bound port to PATH once listening
  --clients N         exit after N clients have been served (default: never)
  --loop N            send a file's packets N times (default 1; 0 = forever);
                      pcap timestamps are shifted so time keeps moving forward
  --rate PPS          send at most PPS packets per second per client
  -h, --help          this text
";

struct Options {
    listen: SocketAddr,
    port_file: Option<String>,
    clients: Option<u64>,
    loops: u64,
    rate: Option<f64>,
    input: String,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        listen: "127.0.0.1:57012".parse().expect("valid literal"),
        port_file: None,
        clients: None,
        loops: 1,
        rate: None,
        input: String::new(),
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
                    .map_err(|_| format!("--listen {v}: expected ADDR:PORT"))?
            }
            "--port-file" => o.port_file = Some(value("--port-file")?),
            "--clients" => {
                let v = value("--clients")?;
                o.clients = Some(v.parse().map_err(|_| format!("--clients {v}"))?)
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

fn serve_file(
    mut out: TcpStream,
    framed: &Framed,
    loops: u64,
    rate: Option<f64>,
) -> io::Result<()> {
    let _ = out.set_nodelay(true);
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
    clients: Vec<TcpStream>,
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
            r.clients.retain_mut(|c| c.write_all(bytes).is_ok());
        }
        drop(r);
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
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
        {
            let relay = relay.clone();
            thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let mut r = relay.lock().unwrap_or_else(|e| e.into_inner());
                    let mut conn = conn;
                    if conn.write_all(&r.header).is_ok() {
                        r.clients.push(conn);
                    }
                }
            });
        }
        return match relay_stdin(relay) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pcapovertcp-serve: standard input: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let framed = match fs::read(&o.input)
        .map_err(|e| e.to_string())
        .and_then(frame)
    {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("pcapovertcp-serve: {}: {e}", o.input);
            return ExitCode::FAILURE;
        }
    };
    let mut workers = Vec::new();
    let mut served = 0u64;
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("pcapovertcp-serve: accept: {e}");
                continue;
            }
        };
        let framed = framed.clone();
        let (loops, rate) = (o.loops, o.rate);
        workers.push(thread::spawn(move || {
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            if let Err(e) = serve_file(conn, &framed, loops, rate) {
                eprintln!("pcapovertcp-serve: {peer}: {e}");
            }
        }));
        served += 1;
        if o.clients.is_some_and(|n| served >= n) {
            break;
        }
    }
    for w in workers {
        let _ = w.join();
    }
    ExitCode::SUCCESS
}
