//! pcapovertcp-serve: serves a pcap or pcapng file (or standard input) as
//! PCAP-over-IP to every client that connects: a PCAP-over-IP broker.
//!
//! From a file, each client gets the whole file from its start (optionally
//! several times, optionally rate-limited), at its own pace. From standard
//! input the stream is relayed live ([`hub`]): each client gets the stream's
//! header blocks, then the records that arrive after it connected, through
//! its own bounded queue and writer thread, so that a slow client holds up
//! neither the input nor the other clients.
//!
//! With --connect it dials out instead of listening (for receivers that
//! listen, as PolarProxy's --pcapoveripconnect or `tcpdump -w - | nc HOST
//! PORT` do): each target gets its own connection, redialled with backoff
//! until the receiver is up and whenever the connection breaks.
//!
//! With --tls-cert/--tls-key (listening) or the --tls* options (with
//! --connect) every connection is TLS ([`conn`]).
//!
//! Modules: [`admit`] (--allow, --max-clients), [`conn`] (connections,
//! TLS, dialling), [`file`] (serving a
//! file), [`input`] (the live inputs: standard input, --exec, --upstream,
//! and --shards), [`upstream`] (--upstream with one server, relayed as it
//! is), [`merged`] (--upstream with several, merged), [`hub`] (the live relay), [`serve`] (the listening and dialling
//! modes), [`stats`] (the counters), [`logging`] (messages and signals).

mod admit;
mod conn;
mod file;
mod header;
mod hub;
mod input;
mod logging;
mod merged;
mod serve;
mod stats;
mod upstream;
mod words;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ipnet::IpNet;
use pcapovertcp::endpoint::{Endpoint, Scheme, Spec};
use pcapovertcp::share::ShareBy;
use pcapovertcp::tls::TlsOptions;
use rustls::pki_types::ServerName;

use hub::SlowPolicy;

const USAGE: &str = "\
usage: pcapovertcp-serve [options] FILE|-
       pcapovertcp-serve [options] --exec CMD | --upstream SPEC
       pcapovertcp-serve --connect HOST:PORT [--connect HOST:PORT ...] [options] FILE|-

Serves a pcap or pcapng file as PCAP-over-IP to every client that connects,
or with --connect sends it to receivers that listen; over TLS with the
--tls-* options.
With -, relays standard input live (e.g. `tcpdump -U -w - | pcapovertcp-serve -`):
each client gets the stream's header, then the packets from when it joined.
Each client has its own queue and writer: a slow client holds up neither
the input nor the other clients (see --client-buffer, --slow-client). A
client whose connection is reset is gone within a second, even while the
input is idle; one that closes normally, at the next packet it is sent (a
reader that only closed its sending side, as ncat does at the end of its
stdin, keeps its stream).

live inputs (instead of FILE or -; relayed as standard input is):
  --exec CMD          run CMD through `sh -c` and relay its standard output,
                      a pcap or pcapng stream (e.g. `tcpdump -U -w - -i eth0
                      not port 57012`). When it ends, its exit status and
                      last line on standard error are logged and it is run
                      again after 100 ms, doubling up to 5 s (back to 100 ms
                      after a run of 5 s or more). Output that is no pcap
                      stream is logged (\"not a pcap stream: first bytes
                      ...\") and counts as the command failing. Each run is
                      a new stream: if its header (link type, timestamp
                      resolution, pcapng interfaces) is byte for byte the
                      clients', their streams go on (the new header is
                      skipped); otherwise each client gets what is queued
                      for it, then the end of its stream (logged), and gets
                      the new header when it reconnects (a --connect target
                      is redialled). Its lines on standard error are logged
                      at debug level (-v).
  --upstream SPEC     read one or more PCAP-over-IP servers with the
                      plugin's own endpoint grammar, e.g. a:57012,b:57012
                      or tls://a:57012 (reconnected with backoff, 100 ms
                      doubling to 5 s), and relay them. One server
                      (HOST:PORT, tcp:// or tls://, no list, no ?share):
                      its stream as it is, header included (timestamp
                      resolution, byte order, pcapng interfaces); a
                      restart with the same header goes on in the
                      clients' streams, as with --exec. Its loss and its
                      return are logged once each; TCP keepalive notices
                      a server that vanished within about 22 s. Several
                      servers: merged in timestamp order by the plugin's
                      core; clients get pcapng: one section, one
                      interface per input interface (each server's own,
                      named after the server and its number there),
                      nanosecond timestamps, each packet's captured bytes
                      and wire length as the server sent them.
  --merge-window MSEC with several --upstream servers: how long the merge
                      waits for a server that has nothing queued before
                      it releases the others' packets past it (default
                      100, as PcapOverTcp::merge_window; 0 = arrival
                      order). Longer for servers across a jittery link.
  --once              with --exec: end when the command ends (status 0 if
                      it succeeded), as at the end of standard input; with
                      --upstream: no reconnecting, end once every server's
                      stream has ended
  --upstream-tls-ca FILE, --upstream-tls-cert FILE, --upstream-tls-key FILE,
  --upstream-tls-server-name NAME
                      TLS for tls:// in --upstream: the CAs that verify the
                      servers (default: the system's), the client
                      certificate and key to present, the name their
                      certificates must be valid for. Separate from the
                      --tls-* options, which are for serving.
  --shards N          listening, with a live input: serve share k of N
                      (k = 0..N-1) on PORT+k of each --listen address, so
                      that N workers each connect to one port
                      (pcapovertcp::HOST:PORT+k) and each packet crosses
                      the link once. Packets are assigned by the plugin's
                      own flow hash (as ?share=k/N): both directions of a
                      flow go to the same shard, each packet to exactly one
                      shard; what is not IP goes to shard 0. With port 0,
                      N consecutive free ports are picked. --wait-clients
                      counts the clients of all shards together.
  --shard-by address-pair|five-tuple
                      how --shards hashes flows (default address-pair, as
                      PcapOverTcp::share_by)

options:
  --listen ADDR:PORT  address to listen on (default 127.0.0.1:57012; port 0
                      picks a free port; IPv6 as [::1]:57012). Repeat to
                      listen on several addresses at once; then an IPv6
                      address listens for IPv6 only, so that 0.0.0.0:P and
                      [::]:P go together.
  --port-file PATH    write the bound port to PATH once listening (one line
                      per --listen, in their order; with --shards, one line
                      per shard of each --listen: listen by listen, shard
                      0 first)
  --clients N         exit after N clients have been served (a file;
                      default: never)
  --wait-clients N    start sending only once N clients are connected (so
                      that N workers sharing one stream, ?share=I/N, all
                      get it from its first packet); default 1. With -,
                      standard input is not read before then.
  --client-buffer BYTES
                      with -: each client's queue, at most BYTES of
                      packets not yet sent to it (default 64M; suffixes
                      K, M, G: KiB, MiB, GiB; at least 1M)
  --slow-client drop|disconnect
                      with -: what to do with a client whose queue is full.
                      drop (default): whole packets are dropped for that
                      client, counted in its counters, and it gets the
                      packets again once it catches up; disconnect: the
                      client is closed (a --connect target is redialled).
                      At the end of standard input every client gets what
                      is queued for it; one that takes nothing for 30 s is
                      closed.
  --max-buffer BYTES  with -: all clients' queues together hold at most
                      BYTES (default 256M; at least 1M). When they are
                      full, the client with the largest queue loses its
                      oldest queued packets (drop) or is closed
                      (disconnect). Blocks that are no packets (pcapng
                      interfaces, statistics, custom blocks) count as
                      packets do; one that fits in no client's queue, even
                      emptied of packets, closes that client. A joining
                      client first gets the stream's header blocks, kept up
                      to 1 MiB: past that, other blocks are not kept, and
                      if an interface block is not kept, clients that join
                      are refused until the input restarts.
  --max-clients N     listening: serve at most N clients at once (default
                      64); over TLS at most N more may be in their TLS
                      handshake (which must end within 10 s of the
                      connection). A client beyond it is closed at once.
                      Each client has a thread and one or two file
                      descriptors; at `ulimit -n` the tool pauses
                      accepting for 100 ms at a time.
  --allow SUBNET      listening: only clients from SUBNET (192.0.2.0/24,
                      2001:db8::/32, or an address) are served; repeat for
                      several. Default: every address. Others are closed
                      at once.
  --write-timeout SECS
                      listening: a client that takes no byte for SECS
                      seconds while there is something to send it is
                      closed (default 30; 1 to 86400), with a file or
                      live.
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
  --rate PPS          send a file at most PPS packets per second per
                      client/target
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
  -v, --verbose       more messages (-vv: even more)
  -q, --quiet         warnings and errors only (-qq: errors only)
  -h, --help          this text
  Long options also take their value as --option=VALUE.

messages and counters:
  Each message is one line on standard error,
  `YYYY-MM-DDTHH:MM:SSZ pcapovertcp-serve: LEVEL message`. RUST_LOG sets the
  levels as for any env_logger program (e.g. RUST_LOG=debug); -v/-q set the
  tool's own. Lines about single clients (connected, left, refused, too
  slow) are at most 50 per 10 s; then one line says how many were not
  shown. SIGUSR1 prints the counters, and so does the end of the tool
  (also by SIGTERM or SIGINT, which end it with status 0): one line per
  client, then a total, e.g.
    counters: client=192.0.2.7:40312 state=open since=2025-06-01T12:00:00Z packets=1000 bytes=123456 dropped=20 dropped_bytes=2400 queued_bytes=0 peak_queued_bytes=1048576
    counters: total input_packets=1020 input_bytes=125880 clients=1 open=1 packets=1000 bytes=123456 dropped=20 dropped_bytes=2400
  packets/bytes: written to the client (bytes with the stream's header);
  dropped: packets not sent to it because its queue was full (or it was
  closed). A client there from the start of standard input whose stream
  ended has packets + dropped = input_packets. state: open, ended, lost
  (the connection broke), slow (closed by --slow-client=disconnect, or by
  --max-buffer), stalled (it took no byte for --write-timeout, or for 30 s
  at the end, see --slow-client).

examples:
  # a file: each client gets all of it, at its own pace
  pcapovertcp-serve --listen 0.0.0.0:57012 trace.pcap
  # a file for ever, 10000 packets per second per client
  pcapovertcp-serve --listen 127.0.0.1:57012 --rate 10000 --loop 0 trace.pcap
  # a live capture to many clients (a broker), on IPv4 and IPv6; slow
  # clients lose packets (counted), the others get every one:
  tcpdump -U -w - -i eth0 | pcapovertcp-serve --listen 0.0.0.0:57012 --listen [::]:57012 -
  # ... closing a client that falls 16 MiB behind instead:
  tcpdump -U -w - -i eth0 | pcapovertcp-serve --client-buffer 16M --slow-client=disconnect -
  # clients this tool did not write: Wireshark's PCAP-over-IP, netcat
  tshark -i TCP@127.0.0.1:57012
  nc 127.0.0.1 57012 | tcpdump -r -
  # the counters, now
  kill -USR1 $(pidof pcapovertcp-serve)
  # four Zeek workers sharing one stream (pcapovertcp::HOST:57012?share=I/4)
  pcapovertcp-serve --listen 0.0.0.0:57012 --wait-clients 4 --clients 4 trace.pcap
  # a broker that runs the capture itself (restarted if it dies)
  pcapovertcp-serve --listen 0.0.0.0:57012 --exec 'tcpdump -U -w - -i eth0 not port 57012'
  # ... in four shards on 57012-57015, one per Zeek worker
  # (pcapovertcp::HOST:57012 ... pcapovertcp::HOST:57015):
  pcapovertcp-serve --listen 0.0.0.0:57012 --shards 4 --exec 'tcpdump -U -w - -i eth0'
  # two sensors merged in time order, relayed to many clients
  pcapovertcp-serve --listen 0.0.0.0:57100 --upstream sensor1:57012,sensor2:57012
  # dial out to receivers that listen
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

/// The default listening address.
const DEFAULT_LISTEN: &str = "127.0.0.1:57012";
/// The default --client-buffer: 64 MiB.
const DEFAULT_CLIENT_BUFFER: usize = 64 << 20;
/// The default --max-buffer: 256 MiB for all client queues together.
const DEFAULT_MAX_BUFFER: usize = 256 << 20;
/// The default --max-clients.
const DEFAULT_MAX_CLIENTS: usize = 64;
/// The largest --max-clients (each client has a thread and one or two
/// file descriptors).
const MAX_MAX_CLIENTS: usize = 100_000;
/// The default --write-timeout.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest --write-timeout, in seconds (a day).
const MAX_WRITE_TIMEOUT: u64 = 86_400;
/// The smallest --client-buffer: 1 MiB (the largest record, a pcapng block
/// of a 256 KiB packet, fits in it with room to spare).
const MIN_CLIENT_BUFFER: usize = 1 << 20;

pub struct Options {
    /// --listen, in order (the default when none).
    listen: Vec<SocketAddr>,
    listen_given: bool,
    connect: Vec<Endpoint>,
    port_file: Option<String>,
    clients: Option<u64>,
    wait_clients: usize,
    client_buffer: usize,
    /// --max-buffer: all client queues together.
    max_buffer: usize,
    slow_client: SlowPolicy,
    /// --max-clients, when given.
    max_clients: Option<usize>,
    /// --allow, in order; empty: every address.
    allow: Vec<IpNet>,
    /// --write-timeout, when given.
    write_timeout: Option<Duration>,
    loops: u64,
    rate: Option<f64>,
    /// FILE or -; empty with --exec or --upstream.
    input: String,
    exec: Option<String>,
    upstream: Option<String>,
    once: bool,
    shards: u16,
    shard_by: ShareBy,
    shard_by_given: bool,
    /// --merge-window: how long the merge of several --upstream servers
    /// waits for a quiet one.
    merge_window: std::time::Duration,
    upstream_tls: TlsOptions,
    /// --tls given.
    tls: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_server_name: Option<String>,
    /// -v (+1) and -q (-1) added up; None when neither was given.
    verbosity: Option<i32>,
}

impl Options {
    /// Whether the input is relayed live (not a file).
    fn live(&self) -> bool {
        self.input == "-" || self.exec.is_some() || self.upstream.is_some()
    }

    /// --max-clients, or its default.
    fn max_clients(&self) -> usize {
        self.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS)
    }

    /// --write-timeout, or its default.
    fn write_timeout(&self) -> Duration {
        self.write_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT)
    }

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

/// A byte count with an optional binary suffix: 1048576, 1024K, 1M, 1MiB.
fn parse_bytes(v: &str) -> Option<usize> {
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: usize = v[..digits].parse().ok()?;
    let shift = match v[digits..].to_ascii_lowercase().as_str() {
        "" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn parse_args() -> Result<Options, String> {
    parse_from(std::env::args().skip(1))
}

fn parse_from(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut args = args.into_iter();
    let mut o = Options {
        listen: Vec::new(),
        listen_given: false,
        connect: Vec::new(),
        port_file: None,
        clients: None,
        wait_clients: 1,
        client_buffer: DEFAULT_CLIENT_BUFFER,
        max_buffer: DEFAULT_MAX_BUFFER,
        slow_client: SlowPolicy::Drop,
        max_clients: None,
        allow: Vec::new(),
        write_timeout: None,
        loops: 1,
        rate: None,
        input: String::new(),
        exec: None,
        upstream: None,
        once: false,
        shards: 1,
        shard_by: ShareBy::AddressPair,
        shard_by_given: false,
        merge_window: pcapovertcp::Config::default().merge_window,
        upstream_tls: TlsOptions::default(),
        tls: false,
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
        tls_server_name: None,
        verbosity: None,
    };
    let mut input = None;
    while let Some(arg) = args.next() {
        // --name=VALUE as --name VALUE.
        let (name, mut inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .take()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value"))
        };
        let mut verbosity = |by: i32| o.verbosity = Some(o.verbosity.unwrap_or(0) + by);
        match name.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "-v" | "--verbose" => verbosity(1),
            "-q" | "--quiet" => verbosity(-1),
            // -vv, -qq
            _ if name.starts_with('-')
                && name.len() > 2
                && name[1..].bytes().all(|b| b == b'v') =>
            {
                verbosity(name.len() as i32 - 1)
            }
            _ if name.starts_with('-')
                && name.len() > 2
                && name[1..].bytes().all(|b| b == b'q') =>
            {
                verbosity(1 - name.len() as i32)
            }
            "--listen" => {
                let v = value("--listen")?;
                let addr = v.parse().map_err(|_| {
                    format!("--listen {v}: expected ADDR:PORT ([ADDR]:PORT for IPv6)")
                })?;
                o.listen.push(addr);
                o.listen_given = true
            }
            "--connect" => {
                let v = value("--connect")?;
                // The plugin's own endpoint grammar: HOST:PORT, [V6]:PORT.
                let target = Endpoint::parse(&v).map_err(|e| format!("--connect: {e}"))?;
                o.connect.push(target)
            }
            "--exec" => o.exec = Some(value("--exec")?),
            "--upstream" => {
                let v = value("--upstream")?;
                // The plugin's own grammar; the core parses it again.
                Spec::parse(&v).map_err(|e| format!("--upstream {v}: {e}"))?;
                o.upstream = Some(v)
            }
            "--once" => o.once = true,
            "--merge-window" => {
                let v = value("--merge-window")?;
                let ms: u64 = v.parse().map_err(|_| {
                    format!("--merge-window {v}: expected milliseconds (0 = arrival order)")
                })?;
                o.merge_window = std::time::Duration::from_millis(ms)
            }
            "--shards" => {
                let v = value("--shards")?;
                o.shards = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| format!("--shards {v}: expected a number from 1 to 1024"))?
            }
            "--shard-by" => {
                let v = value("--shard-by")?;
                o.shard_by_given = true;
                o.shard_by = match v.as_str() {
                    "address-pair" => ShareBy::AddressPair,
                    "five-tuple" => ShareBy::FiveTuple,
                    _ => {
                        return Err(format!(
                            "--shard-by {v}: expected address-pair or five-tuple"
                        ))
                    }
                }
            }
            "--upstream-tls-ca" => o.upstream_tls.ca_file = Some(value(&name)?.into()),
            "--upstream-tls-cert" => o.upstream_tls.cert_file = Some(value(&name)?.into()),
            "--upstream-tls-key" => o.upstream_tls.key_file = Some(value(&name)?.into()),
            "--upstream-tls-server-name" => o.upstream_tls.server_name = Some(value(&name)?),
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
            "--client-buffer" => {
                let v = value("--client-buffer")?;
                o.client_buffer = parse_bytes(&v)
                    .filter(|&n| n >= MIN_CLIENT_BUFFER)
                    .ok_or_else(|| {
                        format!("--client-buffer {v}: expected a number of bytes of at least 1M (suffixes K, M, G)")
                    })?
            }
            "--max-buffer" => {
                let v = value("--max-buffer")?;
                o.max_buffer = parse_bytes(&v)
                    .filter(|&n| n >= MIN_CLIENT_BUFFER)
                    .ok_or_else(|| {
                        format!("--max-buffer {v}: expected a number of bytes of at least 1M (suffixes K, M, G)")
                    })?
            }
            "--max-clients" => {
                let v = value("--max-clients")?;
                o.max_clients = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (1..=MAX_MAX_CLIENTS).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "--max-clients {v}: expected a number from 1 to {MAX_MAX_CLIENTS}"
                            )
                        })?,
                )
            }
            "--allow" => {
                let v = value("--allow")?;
                o.allow.push(admit::parse_subnet(&v).ok_or_else(|| {
                    format!("--allow {v}: expected a subnet (192.0.2.0/24, 2001:db8::/32) or an address")
                })?)
            }
            "--write-timeout" => {
                let v = value("--write-timeout")?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_WRITE_TIMEOUT).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "--write-timeout {v}: expected seconds from 1 to {MAX_WRITE_TIMEOUT}"
                        )
                    })?;
                o.write_timeout = Some(Duration::from_secs(secs))
            }
            "--slow-client" => {
                let v = value("--slow-client")?;
                o.slow_client = match v.as_str() {
                    "drop" => SlowPolicy::Drop,
                    "disconnect" => SlowPolicy::Disconnect,
                    _ => return Err(format!("--slow-client {v}: expected drop or disconnect")),
                }
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
        if inline.is_some() {
            return Err(format!("{name} takes no value"));
        }
    }
    if o.listen.is_empty() {
        o.listen
            .push(DEFAULT_LISTEN.parse().expect("valid literal"));
    }
    let inputs = usize::from(input.is_some())
        + usize::from(o.exec.is_some())
        + usize::from(o.upstream.is_some());
    if inputs > 1 {
        return Err("give one input: FILE, -, --exec or --upstream".into());
    }
    o.input = match input {
        Some(i) => i,
        None if inputs == 1 => String::new(),
        None => return Err("missing FILE, -, --exec or --upstream".into()),
    };
    Ok(o)
}

/// Options that make no sense together, as one line.
fn conflicts(o: &Options) -> Result<(), String> {
    input_conflicts(o).map_err(str::to_string)?;
    if o.shards > 1 {
        if let Some(a) = o
            .listen
            .iter()
            .find(|a| a.port() != 0 && u32::from(a.port()) + u32::from(o.shards) > 65536)
        {
            return Err(format!(
                "--shards {}: --listen {a}: the ports of the shards go past 65535",
                o.shards
            ));
        }
    }
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

/// The live inputs' options.
fn input_conflicts(o: &Options) -> Result<(), &'static str> {
    if o.once && o.exec.is_none() && o.upstream.is_none() {
        return Err(
            "--once needs --exec or --upstream (standard input and files end by themselves)",
        );
    }
    if o.shards > 1 && !o.live() {
        return Err("--shards needs a live input (-, --exec or --upstream): a file is served whole to each client");
    }
    if o.shards > 1 && !o.connect.is_empty() {
        return Err("--shards needs --listen: each shard is a listening port");
    }
    if o.shard_by_given && o.shards <= 1 {
        return Err("--shard-by needs --shards");
    }
    if o.merge_window != pcapovertcp::Config::default().merge_window && o.upstream.is_none() {
        return Err("--merge-window needs --upstream (it orders several servers' packets)");
    }
    let t = &o.upstream_tls;
    if o.upstream.is_none()
        && (t.ca_file.is_some()
            || t.cert_file.is_some()
            || t.key_file.is_some()
            || t.server_name.is_some())
    {
        return Err("the --upstream-tls-* options need --upstream");
    }
    if t.cert_file.is_some() != t.key_file.is_some() {
        return Err("--upstream-tls-cert and --upstream-tls-key go together: set both or neither");
    }
    Ok(())
}

/// Options that exclude --connect.
fn connect_conflicts(o: &Options) -> Result<(), &'static str> {
    if o.max_clients.is_some() || !o.allow.is_empty() || o.write_timeout.is_some() {
        return Err("--max-clients, --allow and --write-timeout need --listen: they are about the clients that connect");
    }
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

/// Argument and set-up errors, before anything is served, are one plain
/// line (`pcapovertcp-serve: ...`); from then on, messages go through the
/// logger.
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
    logging::init(o.verbosity);
    // The plugin core's messages on this thread name the tool's flags.
    pcapovertcp::setting::use_names(words::serve);
    match serve::run(&o) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("pcapovertcp-serve: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_from(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("65536"), Some(65536));
        assert_eq!(parse_bytes("64K"), Some(65536));
        assert_eq!(parse_bytes("1MiB"), Some(1 << 20));
        assert_eq!(parse_bytes("2g"), Some(2 << 30));
        assert_eq!(parse_bytes("1.5M"), None);
        assert_eq!(parse_bytes("M"), None);
    }

    #[test]
    fn options_take_inline_values_and_repeat() {
        let o = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--listen=[::1]:0",
            "--slow-client=disconnect",
            "--client-buffer",
            "1M",
            "-vv",
            "-q",
            "-",
        ])
        .unwrap();
        assert_eq!(o.listen.len(), 2);
        assert!(o.listen[1].is_ipv6());
        assert_eq!(o.slow_client, SlowPolicy::Disconnect);
        assert_eq!(o.client_buffer, 1 << 20);
        assert_eq!(o.verbosity, Some(1));
        let o = parse(&["x.pcap"]).unwrap();
        assert_eq!(o.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(
            (o.client_buffer, o.slow_client),
            (64 << 20, SlowPolicy::Drop)
        );
    }

    #[test]
    fn client_bounds_have_defaults_and_take_values() {
        let o = parse(&["x.pcap"]).unwrap();
        assert_eq!(
            (o.max_clients(), o.max_buffer, o.write_timeout()),
            (64, 256 << 20, Duration::from_secs(30))
        );
        assert!(o.allow.is_empty());
        let o = parse(&[
            "--max-clients=3",
            "--max-buffer",
            "16M",
            "--allow",
            "192.0.2.0/24",
            "--allow=::1",
            "--write-timeout",
            "5",
            "-",
        ])
        .unwrap();
        assert_eq!(
            (o.max_clients(), o.max_buffer, o.write_timeout()),
            (3, 16 << 20, Duration::from_secs(5))
        );
        assert_eq!(o.allow.len(), 2);
        let o = parse(&["--connect", "127.0.0.1:9", "--max-clients", "3", "-"]).unwrap();
        assert!(conflicts(&o).unwrap_err().contains("--max-clients"));
    }

    #[test]
    fn bad_values_are_refused() {
        for (args, needle) in [
            (&["--slow-client", "wait", "-"][..], "--slow-client wait"),
            (&["--client-buffer", "512K", "-"][..], "at least 1M"),
            (&["--tls=yes", "-"][..], "--tls takes no value"),
            (&["--listen", "[::1]", "-"][..], "--listen [::1]"),
            (&["--max-clients", "0", "-"][..], "from 1 to 100000"),
            (&["--max-buffer", "64K", "-"][..], "at least 1M"),
            (&["--allow", "10.0.0.0/33", "-"][..], "--allow 10.0.0.0/33"),
            (&["--write-timeout", "0", "-"][..], "from 1 to 86400"),
        ] {
            let e = parse(args).err().unwrap();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
