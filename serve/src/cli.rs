//! The command line: the flags (clap, derived from [`Args`], which also
//! gives `--help`), their values checked one by one, and [`Options`], what
//! the rest of the tool reads, with the combinations that make no sense
//! refused ([`conflicts`]).
//!
//! What "given" means is explicit: an option not given is `None` (or an
//! empty list), never "equal to its default", so that an option given
//! outside its mode is refused even with its default value. A flag given
//! twice is refused by clap, except the lists (`--listen`, `--connect`,
//! `--allow`, `--upstream`), which accumulate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Parser;
use ipnet::IpNet;
use pcapovertcp::endpoint::{Endpoint, Scheme, Spec, MAX_ENDPOINTS};
use pcapovertcp::share::ShareBy;
use pcapovertcp::tls::TlsOptions;
use rustls::pki_types::ServerName;

use crate::admit;
use crate::hub::SlowPolicy;
use crate::logging::LogFormat;

/// The default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:57012";
/// The default --client-buffer: 64 MiB.
const DEFAULT_CLIENT_BUFFER: usize = 64 << 20;
/// The default --max-buffer: 256 MiB for all client queues together.
const DEFAULT_MAX_BUFFER: usize = 256 << 20;
/// --spool-max when not given.
const DEFAULT_SPOOL_MAX: usize = 1 << 30;
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
/// The largest --shards.
const MAX_SHARDS: u16 = 1024;

const ABOUT: &str = "\
Serves a pcap or pcapng file as PCAP-over-IP to every client that connects,
or with --connect sends it to receivers that listen; over TLS with the
--tls-* options.";

const LONG_ABOUT: &str = "\
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

Every option can also be set by an environment variable, named after it:
PCAPOVERTCP_SERVE_ and the option's name in capitals with - as _ (e.g.
PCAPOVERTCP_SERVE_LISTEN=0.0.0.0:57012, PCAPOVERTCP_SERVE_ONCE=true,
PCAPOVERTCP_SERVE_VERBOSE=2); FILE or - is PCAPOVERTCP_SERVE_INPUT. Each
is shown below as [env: ...]. An option on the command line wins over its
variable. The lists (--listen, --connect, --allow) take several values
separated by commas in their variable; --upstream takes its own
comma-separated list.";

const USAGE: &str = "\
pcapovertcp-serve [options] FILE|-
       pcapovertcp-serve [options] --exec CMD | --upstream SPEC
       pcapovertcp-serve --stdout [options] - | --exec CMD | --upstream SPEC
       pcapovertcp-serve --connect HOST:PORT [--connect HOST:PORT ...] [options] FILE|-";

const AFTER_LONG_HELP: &str = "\
Options given twice are refused, except --listen, --connect, --allow and
--upstream, which add up (--upstream A --upstream B is --upstream A,B).
Options given outside their mode (--merge-window without --upstream,
--wait-clients with --connect, ...) are refused, whatever their value.
Long options also take their value as --option=VALUE.

Messages and counters:
  Each message is one line on standard error,
  `YYYY-MM-DDTHH:MM:SSZ pcapovertcp-serve: LEVEL message`, or with
  --log-format json one JSON object per line,
  {\"time\":\"YYYY-MM-DDTHH:MM:SSZ\",\"level\":\"INFO\",\"message\":\"...\"}.
  RUST_LOG sets the levels as for any env_logger program (e.g.
  RUST_LOG=debug); -v/-q set the tool's own. Lines about single clients
  (connected, left, refused, too slow) are at most 50 per 10 s; then one
  line says how many were not shown. SIGUSR1 prints the counters, and so
  does the end of the tool (also by SIGTERM or SIGINT, which end it with
  status 0): one line per client, then a total, e.g.
    counters: client=192.0.2.7:40312 state=open since=2025-06-01T12:00:00Z packets=1000 bytes=123456 dropped=20 dropped_bytes=2400 queued_bytes=0 peak_queued_bytes=1048576
    counters: total input_packets=1020 input_bytes=125880 clients=1 open=1 packets=1000 bytes=123456 dropped=20 dropped_bytes=2400
  packets/bytes: written to the client (bytes with the stream's header);
  dropped: packets not sent to it because its queue was full (or it was
  closed). A client there from the start of standard input whose stream
  ended has packets + dropped = input_packets. state: open, ended, lost
  (the connection broke), slow (closed by --slow-client=disconnect, or by
  --max-buffer), stalled (it took no byte for --write-timeout, or for 30 s
  at the end, see --slow-client).

Examples:
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
  # the same from the environment, as in a container, with JSON logs
  PCAPOVERTCP_SERVE_LISTEN=0.0.0.0:57100 PCAPOVERTCP_SERVE_LOG_FORMAT=json \\
      PCAPOVERTCP_SERVE_UPSTREAM=sensor1:57012,sensor2:57012 pcapovertcp-serve
  # one continuous pcap on standard output across the server's restarts
  pcapovertcp-serve --upstream tls://tap:57012 --stdout | suricata -r /dev/stdin
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
  # zstd-compressed across a thin link, Zeek listens
  # (pcapovertcp::tcp+zstd-listen://:57012)
  tcpdump -U -w - -i eth0 | pcapovertcp-serve --connect tcp+zstd://sensor:57012 -";

/// The flags as clap parses them, each value already checked on its own.
/// Its doc comments are `--help`: the first paragraph is the short help
/// (-h), the whole the long (--help).
#[derive(Parser, Debug)]
#[command(
    name = "pcapovertcp-serve",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    override_usage = USAGE,
    after_long_help = AFTER_LONG_HELP,
    max_term_width = 100
)]
pub struct Args {
    /// A pcap or pcapng file to serve, or - for standard input, relayed
    /// live.
    #[arg(value_name = "FILE|-", env = "PCAPOVERTCP_SERVE_INPUT")]
    input: Option<String>,

    /// Run CMD through `sh -c` and relay its standard output, a pcap or
    /// pcapng stream (e.g. `tcpdump -U -w - -i eth0 not port 57012`).
    ///
    /// When it ends, its exit status and last line on standard error are
    /// logged and it is run again after 100 ms, doubling up to 5 s (back to
    /// 100 ms after a run of 5 s or more). Output that is no pcap stream is
    /// logged ("not a pcap stream: first bytes ...") and counts as the
    /// command failing. Each run is a new stream: if its header (link type,
    /// timestamp resolution, pcapng interfaces) is byte for byte the
    /// clients', their streams go on (the new header is skipped); otherwise
    /// each client gets what is queued for it, then the end of its stream
    /// (logged), and gets the new header when it reconnects (a --connect
    /// target is redialled). Its lines on standard error are logged at
    /// debug level (-v).
    #[arg(
        long,
        value_name = "CMD",
        env = "PCAPOVERTCP_SERVE_EXEC",
        help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)"
    )]
    exec: Option<String>,

    /// Read one or more PCAP-over-IP servers with the plugin's own
    /// endpoint grammar, e.g. a:57012,b:57012 or tls://a:57012, and relay
    /// them; repeat to add servers (--upstream a:57012 --upstream b:57012
    /// is a:57012,b:57012).
    ///
    /// Servers are reconnected with backoff (100 ms doubling to 5 s). One
    /// server (HOST:PORT, tcp:// or tls://, no list, no ?share): its stream
    /// as it is, header included (timestamp resolution, byte order, pcapng
    /// interfaces); a restart with the same header goes on in the clients'
    /// streams, as with --exec. Its loss and its return are logged once
    /// each; TCP keepalive notices a server that vanished within about
    /// 22 s. Several servers: merged in timestamp order by the plugin's
    /// core; clients get pcapng: one section, one interface per input
    /// interface (each server's own, named after the server and its number
    /// there), nanosecond timestamps, each packet's captured bytes and wire
    /// length as the server sent them. ?share=I/N only in a single
    /// --upstream.
    #[arg(long, value_name = "SPEC", env = "PCAPOVERTCP_SERVE_UPSTREAM",
          value_parser = parse_spec, help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)")]
    upstream: Vec<Spec>,

    /// With several --upstream servers: how long the merge waits for a
    /// server that has nothing queued before it releases the others'
    /// packets past it (default 100, as PcapOverTcp::merge_window; 0 =
    /// arrival order).
    ///
    /// Longer for servers across a jittery link.
    #[arg(long, value_name = "MSEC", env = "PCAPOVERTCP_SERVE_MERGE_WINDOW",
          value_parser = parse_millis, help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)")]
    merge_window: Option<Duration>,

    /// With --exec: end when the command ends (status 0 if it succeeded),
    /// as at the end of standard input; with --upstream: no reconnecting,
    /// end once every server's stream has ended.
    #[arg(long, env = "PCAPOVERTCP_SERVE_ONCE", value_parser = BoolishValueParser::new(),
          help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)")]
    once: bool,

    /// TLS for tls:// in --upstream: the CAs that verify the servers
    /// (default: the system's).
    ///
    /// Separate from the --tls-* options, which are for serving.
    #[arg(
        long,
        value_name = "FILE",
        env = "PCAPOVERTCP_SERVE_UPSTREAM_TLS_CA",
        help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)"
    )]
    upstream_tls_ca: Option<PathBuf>,

    /// TLS for tls:// in --upstream: the client certificate to present
    /// (with --upstream-tls-key).
    #[arg(
        long,
        value_name = "FILE",
        env = "PCAPOVERTCP_SERVE_UPSTREAM_TLS_CERT",
        help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)"
    )]
    upstream_tls_cert: Option<PathBuf>,

    /// TLS for tls:// in --upstream: the key of --upstream-tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "PCAPOVERTCP_SERVE_UPSTREAM_TLS_KEY",
        help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)"
    )]
    upstream_tls_key: Option<PathBuf>,

    /// TLS for tls:// in --upstream: the name the servers' certificates
    /// must be valid for.
    #[arg(
        long,
        value_name = "NAME",
        env = "PCAPOVERTCP_SERVE_UPSTREAM_TLS_SERVER_NAME",
        help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)"
    )]
    upstream_tls_server_name: Option<String>,

    /// Listening, with a live input: serve share k of N (k = 0..N-1) on
    /// PORT+k of each --listen address.
    ///
    /// So that N workers each connect to one port (pcapovertcp::HOST:PORT+k)
    /// and each packet crosses the link once. Packets are assigned by the
    /// plugin's own flow hash (as ?share=k/N): both directions of a flow go
    /// to the same shard, each packet to exactly one shard; what is not IP
    /// goes to shard 0. With port 0, N consecutive free ports are picked.
    /// --wait-clients counts the clients of all shards together. From 1 to
    /// 1024.
    #[arg(long, value_name = "N", env = "PCAPOVERTCP_SERVE_SHARDS",
          value_parser = parse_shards, help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)")]
    shards: Option<u16>,

    /// How --shards hashes flows: address-pair or five-tuple (default
    /// address-pair, as PcapOverTcp::share_by).
    #[arg(long, value_name = "address-pair|five-tuple", env = "PCAPOVERTCP_SERVE_SHARD_BY",
          value_parser = parse_shard_by, help_heading = "Live inputs (instead of FILE or -; relayed as standard input is)")]
    shard_by: Option<ShareBy>,

    /// Address to listen on (default 127.0.0.1:57012; port 0 picks a free
    /// port; IPv6 as [::1]:57012); repeat to listen on several.
    ///
    /// With several, an IPv6 address listens for IPv6 only, so that
    /// 0.0.0.0:P and [::]:P go together. tcp+zstd://ADDR:PORT (tls+zstd://
    /// with --tls-cert) serves the stream zstd-compressed, for the plugin's
    /// tcp+zstd:// (tls+zstd://) over a thin link; plain clients use the
    /// others.
    #[arg(long, value_name = "[SCHEME://]ADDR:PORT", env = "PCAPOVERTCP_SERVE_LISTEN",
          value_delimiter = ',', value_parser = parse_listen_scheme)]
    listen: Vec<(Scheme, SocketAddr)>,

    /// Write the bound port to PATH once listening.
    ///
    /// One line per --listen, in their order; with --shards, one line per
    /// shard of each --listen: listen by listen, shard 0 first.
    #[arg(long, value_name = "PATH", env = "PCAPOVERTCP_SERVE_PORT_FILE")]
    port_file: Option<String>,

    /// Exit after N clients have been served (a file; default: never).
    #[arg(long, value_name = "N", env = "PCAPOVERTCP_SERVE_CLIENTS")]
    clients: Option<u64>,

    /// Start sending only once N clients are connected (default 1).
    ///
    /// So that N workers sharing one stream, ?share=I/N, all get it from
    /// its first packet. With -, standard input is not read before then.
    /// Listening only.
    #[arg(long, value_name = "N", env = "PCAPOVERTCP_SERVE_WAIT_CLIENTS",
          value_parser = parse_wait_clients)]
    wait_clients: Option<usize>,

    /// With a live input: each client's queue, at most BYTES of packets
    /// not yet sent to it (default 64M; suffixes K, M, G: KiB, MiB, GiB; at
    /// least 1M).
    #[arg(long, value_name = "BYTES", env = "PCAPOVERTCP_SERVE_CLIENT_BUFFER",
          value_parser = parse_buffer)]
    client_buffer: Option<usize>,

    /// With a live input: what to do with a client whose queue is full,
    /// drop (default) or disconnect.
    ///
    /// drop: whole packets are dropped for that client, counted in its
    /// counters, and it gets the packets again once it catches up;
    /// disconnect: the client is closed (a --connect target is redialled).
    /// At the end of standard input every client gets what is queued for
    /// it; one that takes nothing for 30 s is closed.
    #[arg(long, value_name = "drop|disconnect", env = "PCAPOVERTCP_SERVE_SLOW_CLIENT",
          value_parser = parse_slow_client)]
    slow_client: Option<SlowPolicy>,

    /// With a live input: all clients' queues together hold at most BYTES
    /// (default 256M; at least 1M).
    ///
    /// When they are full, the client with the largest queue loses its
    /// oldest queued packets (drop) or is closed (disconnect). Blocks that
    /// are no packets (pcapng interfaces, statistics, custom blocks) count
    /// as packets do; one that fits in no client's queue, even emptied of
    /// packets, closes that client. A joining client first gets the
    /// stream's header blocks, kept up to 1 MiB: past that, other blocks
    /// are not kept, and if an interface block is not kept, clients that
    /// join are refused until the input restarts.
    #[arg(long, value_name = "BYTES", env = "PCAPOVERTCP_SERVE_MAX_BUFFER",
          value_parser = parse_buffer)]
    max_buffer: Option<usize>,

    /// With a live input and --connect or --shards: a receiver whose queue
    /// is full (it is away, or catching up) spools to a file in DIR instead
    /// of dropping packets.
    ///
    /// A --connect target and a shard's consumer keep their queue while
    /// their connection is down; when they are back they get the stream's
    /// header, then what they missed, in order. Once a receiver's spool has
    /// begun, everything for it goes through the spool until it has taken
    /// all of it; the file is then removed.
    #[arg(long, value_name = "DIR", env = "PCAPOVERTCP_SERVE_SPOOL")]
    spool: Option<PathBuf>,

    /// All spool files together hold at most BYTES (default 1G; suffixes
    /// K, M, G); beyond it whole packets are dropped and counted.
    #[arg(long, value_name = "BYTES", env = "PCAPOVERTCP_SERVE_SPOOL_MAX",
          value_parser = parse_buffer)]
    spool_max: Option<usize>,

    /// Listening: serve at most N clients at once (default 64; 1 to
    /// 100000).
    ///
    /// Over TLS at most N more may be in their TLS handshake (which must
    /// end within 10 s of the connection). A client beyond it is closed at
    /// once. Each client has a thread and one or two file descriptors; at
    /// `ulimit -n` the tool pauses accepting for 100 ms at a time.
    #[arg(long, value_name = "N", env = "PCAPOVERTCP_SERVE_MAX_CLIENTS",
          value_parser = parse_max_clients)]
    max_clients: Option<usize>,

    /// Listening: only clients from SUBNET (192.0.2.0/24, 2001:db8::/32,
    /// or an address) are served; repeat for several.
    ///
    /// Default: every address. Others are closed at once.
    #[arg(long, value_name = "SUBNET", env = "PCAPOVERTCP_SERVE_ALLOW",
          value_delimiter = ',', value_parser = parse_allow)]
    allow: Vec<IpNet>,

    /// Listening: a client that takes no byte for SECS seconds while there
    /// is something to send it is closed (default 30; 1 to 86400), with a
    /// file or live.
    #[arg(long, value_name = "SECS", env = "PCAPOVERTCP_SERVE_WRITE_TIMEOUT",
          value_parser = parse_write_timeout)]
    write_timeout: Option<Duration>,

    /// Dial out to a receiver that listens, instead of listening; repeat
    /// for several receivers, each gets its own connection.
    ///
    /// Each is retried until the receiver is up (every 100 ms, doubling up
    /// to 5 s). A connection that breaks is redialled and gets a new
    /// stream: the file again from its start, or the header and the live
    /// records of standard input. With a file, exits once every receiver
    /// has all of it. With -, reading starts once the first receiver is
    /// connected. Not with --listen, --port-file or --clients.
    ///
    /// tls://HOST:PORT dials over TLS (as --tls); tcp+zstd://HOST:PORT
    /// (tls+zstd://) sends the stream zstd-compressed, for a receiver that
    /// listens with tcp+zstd-listen:// (tls+zstd-listen://) over a thin
    /// link. TLS is for every target or none.
    #[arg(long, value_name = "[SCHEME://]HOST:PORT", env = "PCAPOVERTCP_SERVE_CONNECT",
          value_delimiter = ',', value_parser = parse_connect)]
    connect: Vec<Endpoint>,

    /// Write the live input to standard output as one pcap or pcapng
    /// stream, instead of listening: for `suricata -r /dev/stdin`,
    /// `tcpdump -r -`, `zeek -r -`.
    ///
    /// One header, then every packet once, in order, across the input's
    /// restarts with the same header (an --upstream server's reconnects,
    /// --exec's restarts); several --upstream servers give one merged
    /// pcapng stream. It ends with the tool: at the end of the input
    /// (--once, the end of standard input), by SIGTERM/SIGINT (after the
    /// records being written: it ends on a whole one), or when the input
    /// restarts with a different header or the reader goes away (status 1,
    /// one line). A reader slower than the input loses whole packets, counted
    /// (--client-buffer, --slow-client). Not with --listen, --connect or a
    /// FILE.
    #[arg(long, env = "PCAPOVERTCP_SERVE_STDOUT", value_parser = BoolishValueParser::new())]
    stdout: bool,

    /// Send a file's packets N times (default 1; 0 = forever); pcap
    /// timestamps are shifted so time keeps moving forward.
    #[arg(long = "loop", value_name = "N", env = "PCAPOVERTCP_SERVE_LOOP")]
    loops: Option<u64>,

    /// Send a file at most PPS packets per second per client/target.
    #[arg(long, value_name = "PPS", env = "PCAPOVERTCP_SERVE_RATE", value_parser = parse_rate)]
    rate: Option<f64>,

    /// Listening: serve over TLS with this certificate chain (PEM; Zeek
    /// reads it with tls://HOST:PORT). With --connect: the client
    /// certificate to present (mutual TLS). Needs --tls-key.
    #[arg(long, value_name = "FILE", env = "PCAPOVERTCP_SERVE_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", env = "PCAPOVERTCP_SERVE_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// CA certificates (PEM). Listening: clients must present a
    /// certificate signed by one of them. With --connect: they verify the
    /// receiver's certificate (default: the system's CAs).
    #[arg(long, value_name = "FILE", env = "PCAPOVERTCP_SERVE_TLS_CA")]
    tls_ca: Option<PathBuf>,

    /// With --connect: the name the receiver's certificate must be valid
    /// for (default: the HOST of --connect).
    #[arg(long, value_name = "NAME", env = "PCAPOVERTCP_SERVE_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,

    /// With --connect: dial out over TLS even without the other --tls-*
    /// options (verified by the system's CAs); any --tls-* option implies
    /// it.
    #[arg(long, env = "PCAPOVERTCP_SERVE_TLS", value_parser = BoolishValueParser::new())]
    tls: bool,

    /// Serve the counters for Prometheus at http://ADDR:PORT/metrics (port
    /// 0 picks a free port; the address is logged).
    ///
    /// Totals (clients, packets, bytes, dropped), the live input's packets
    /// and bytes, and per open client its packets, bytes, dropped, queued
    /// bytes and since when it is connected; per --upstream server its
    /// packets, bytes, connections, outages and state (connecting, up,
    /// down). One scrape at a time, each with 2 s to send its request and
    /// take the answer.
    #[arg(long, value_name = "ADDR:PORT", env = "PCAPOVERTCP_SERVE_METRICS",
          value_parser = parse_listen)]
    metrics: Option<SocketAddr>,

    /// The form of messages on standard error: text (default) or json
    /// (one object per line with time, level and message).
    #[arg(long, value_name = "text|json", env = "PCAPOVERTCP_SERVE_LOG_FORMAT",
          value_parser = parse_log_format)]
    log_format: Option<LogFormat>,

    /// More messages (-vv: even more).
    #[arg(short, long, action = clap::ArgAction::Count, env = "PCAPOVERTCP_SERVE_VERBOSE")]
    verbose: u8,

    /// Warnings and errors only (-qq: errors only).
    #[arg(short, long, action = clap::ArgAction::Count, env = "PCAPOVERTCP_SERVE_QUIET")]
    quiet: u8,
}

/// What the tool runs with: the flags resolved, "given" kept where a mode
/// depends on it.
pub struct Options {
    /// --listen, in order; empty when none was given (see [`Self::listen`]).
    listen_given: Vec<SocketAddr>,
    /// The scheme of each --listen: tcp (none written), tls, or +zstd.
    listen_schemes: Vec<Scheme>,
    pub connect: Vec<Endpoint>,
    pub port_file: Option<String>,
    pub clients: Option<u64>,
    /// --wait-clients, when given.
    wait_clients: Option<usize>,
    pub client_buffer: usize,
    /// --max-buffer: all client queues together.
    pub max_buffer: usize,
    /// --spool DIR and --spool-max.
    pub spool: Option<(PathBuf, u64)>,
    pub slow_client: SlowPolicy,
    /// --max-clients, when given.
    max_clients: Option<usize>,
    /// --allow, in order; empty: every address.
    pub allow: Vec<IpNet>,
    /// --write-timeout, when given.
    write_timeout: Option<Duration>,
    pub loops: u64,
    pub rate: Option<f64>,
    /// FILE or -; empty with --exec or --upstream.
    pub input: String,
    pub exec: Option<String>,
    /// The --upstream servers as one spec (each --upstream's joined).
    pub upstream: Option<String>,
    pub once: bool,
    pub shards: u16,
    /// --shard-by, when given.
    shard_by: Option<ShareBy>,
    /// --merge-window, when given: how long the merge of several
    /// --upstream servers waits for a quiet one.
    merge_window: Option<Duration>,
    pub upstream_tls: TlsOptions,
    /// --stdout given.
    pub stdout: bool,
    /// --metrics, when given.
    pub metrics: Option<SocketAddr>,
    /// --tls given.
    pub tls: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub log_format: LogFormat,
    /// -v (+1) and -q (-1) added up; None when neither was given.
    pub verbosity: Option<i32>,
}

impl Options {
    /// The options of a command line (without the program's name), each
    /// value checked; not yet their combinations ([`conflicts`]). Err:
    /// clap's error (including --help), or one line.
    pub fn parse_from<I, T>(args: I) -> Result<Options, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let name = std::iter::once(std::ffi::OsString::from("pcapovertcp-serve"));
        let args = Args::try_parse_from(name.chain(args.into_iter().map(Into::into)))
            .map_err(Error::Clap)?;
        Options::from_args(args).map_err(Error::Line)
    }

    fn from_args(a: Args) -> Result<Options, String> {
        let inputs = usize::from(a.input.is_some())
            + usize::from(a.exec.is_some())
            + usize::from(!a.upstream.is_empty());
        if inputs > 1 {
            return Err("give one input: FILE, -, --exec or --upstream".into());
        }
        if inputs == 0 {
            return Err("missing FILE, -, --exec or --upstream".into());
        }
        let verbosity =
            (a.verbose > 0 || a.quiet > 0).then(|| i32::from(a.verbose) - i32::from(a.quiet));
        Ok(Options {
            listen_given: a.listen.iter().map(|&(_, addr)| addr).collect(),
            listen_schemes: a.listen.iter().map(|&(scheme, _)| scheme).collect(),
            connect: a.connect,
            port_file: a.port_file,
            clients: a.clients,
            wait_clients: a.wait_clients,
            client_buffer: a.client_buffer.unwrap_or(DEFAULT_CLIENT_BUFFER),
            max_buffer: a.max_buffer.unwrap_or(DEFAULT_MAX_BUFFER),
            spool: match (a.spool, a.spool_max) {
                (Some(dir), max) => Some((dir, max.unwrap_or(DEFAULT_SPOOL_MAX) as u64)),
                (None, Some(_)) => return Err("--spool-max needs --spool".into()),
                (None, None) => None,
            },
            slow_client: a.slow_client.unwrap_or(SlowPolicy::Drop),
            max_clients: a.max_clients,
            allow: a.allow,
            write_timeout: a.write_timeout,
            loops: a.loops.unwrap_or(1),
            rate: a.rate,
            input: a.input.unwrap_or_default(),
            exec: a.exec,
            upstream: join_upstreams(a.upstream)?,
            once: a.once,
            shards: a.shards.unwrap_or(1),
            shard_by: a.shard_by,
            merge_window: a.merge_window,
            upstream_tls: TlsOptions {
                ca_file: a.upstream_tls_ca,
                cert_file: a.upstream_tls_cert,
                key_file: a.upstream_tls_key,
                server_name: a.upstream_tls_server_name,
                ..TlsOptions::default()
            },
            stdout: a.stdout,
            metrics: a.metrics,
            tls: a.tls,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            tls_ca: a.tls_ca,
            tls_server_name: a.tls_server_name,
            log_format: a.log_format.unwrap_or_default(),
            verbosity,
        })
    }

    /// Whether the input is relayed live (not a file).
    pub fn live(&self) -> bool {
        self.input == "-" || self.exec.is_some() || self.upstream.is_some()
    }

    /// The addresses to listen on: --listen, or the default.
    pub fn listen(&self) -> Vec<SocketAddr> {
        if self.listen_given.is_empty() {
            vec![DEFAULT_LISTEN.parse().expect("valid literal")]
        } else {
            self.listen_given.clone()
        }
    }

    /// --wait-clients, or its default.
    pub fn wait_clients(&self) -> usize {
        self.wait_clients.unwrap_or(1)
    }

    /// --max-clients, or its default.
    pub fn max_clients(&self) -> usize {
        self.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS)
    }

    /// --write-timeout, or its default.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT)
    }

    /// --shard-by, or its default.
    pub fn shard_by(&self) -> ShareBy {
        self.shard_by.unwrap_or_default()
    }

    /// --merge-window, or the plugin's default.
    pub fn merge_window(&self) -> Duration {
        self.merge_window
            .unwrap_or(pcapovertcp::Config::default().merge_window)
    }

    /// Whether each of [`Self::listen`] serves its stream compressed.
    pub fn listen_zstd(&self) -> Vec<bool> {
        let given = self.listen_schemes.iter().map(|s| s.is_zstd());
        given
            .chain(std::iter::repeat(false))
            .take(self.listen().len())
            .collect()
    }

    /// Whether connections are TLS: any --tls* option, or a --connect
    /// target written tls:// or tls+zstd://.
    pub fn tls_wanted(&self) -> bool {
        self.tls
            || self.connect.iter().any(|t| t.scheme().is_tls())
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_ca.is_some()
            || self.tls_server_name.is_some()
    }

    /// The options in the terms of the plugin's TLS code.
    pub fn tls_options(&self) -> TlsOptions {
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

/// Why the command line was refused.
#[derive(Debug)]
pub enum Error {
    /// By clap: a value, a flag twice, an unknown flag; or --help/--version.
    Clap(clap::Error),
    /// A combination, as one line.
    Line(String),
}

impl Error {
    /// The one line to print after `pcapovertcp-serve: `, or None for
    /// --help and --version (clap prints those).
    pub fn line(&self) -> Option<String> {
        match self {
            Error::Line(s) => Some(s.clone()),
            Error::Clap(e) => {
                use clap::error::ErrorKind;
                if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                    return None;
                }
                // clap's first line is the error; its usage and tips
                // follow, which --help gives in full.
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                Some(first.strip_prefix("error: ").unwrap_or(first).to_string())
            }
        }
    }
}

/// The --upstream servers as one spec: a single --upstream as it is
/// (?share included), several joined as one list, as if given with commas.
fn join_upstreams(specs: Vec<Spec>) -> Result<Option<String>, String> {
    match specs.len() {
        0 => Ok(None),
        1 => Ok(Some(specs[0].to_string())),
        _ => {
            if specs.iter().any(|s| s.share.is_some()) {
                return Err("--upstream given several times with ?share=I/N: give the servers as one list in a single --upstream A,B?share=I/N".into());
            }
            let joined = Spec {
                endpoints: specs.into_iter().flat_map(|s| s.endpoints).collect(),
                share: None,
            }
            .to_string();
            // Parsed again: the list as a whole must hold (distinct
            // servers, at most MAX_ENDPOINTS).
            Spec::parse(&joined).map_err(|e| {
                format!("--upstream {joined}: {e} (the --upstream options together; at most {MAX_ENDPOINTS} servers)")
            })?;
            Ok(Some(joined))
        }
    }
}

/// A byte count with an optional binary suffix: 1048576, 1024K, 1M, 1MiB.
pub fn parse_bytes(v: &str) -> Option<usize> {
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

fn parse_spec(v: &str) -> Result<Spec, String> {
    // The plugin's own grammar; the core parses it again.
    Spec::parse(v).map_err(|e| e.to_string())
}

fn parse_millis(v: &str) -> Result<Duration, String> {
    v.parse()
        .map(Duration::from_millis)
        .map_err(|_| "expected milliseconds (0 = arrival order)".into())
}

fn parse_shards(v: &str) -> Result<u16, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_SHARDS).contains(n))
        .ok_or_else(|| format!("expected a number from 1 to {MAX_SHARDS}"))
}

fn parse_shard_by(v: &str) -> Result<ShareBy, String> {
    match v {
        "address-pair" => Ok(ShareBy::AddressPair),
        "five-tuple" => Ok(ShareBy::FiveTuple),
        _ => Err("expected address-pair or five-tuple".into()),
    }
}

/// --listen: ADDR:PORT, optionally behind tcp://, tls://, tcp+zstd:// or
/// tls+zstd://.
fn parse_listen_scheme(v: &str) -> Result<(Scheme, SocketAddr), String> {
    let (scheme, addr) = match v.split_once("://") {
        None => (Scheme::Tcp, v),
        Some((name, addr)) => {
            let scheme = [Scheme::Tcp, Scheme::Tls, Scheme::TcpZstd, Scheme::TlsZstd]
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    format!("unknown scheme \"{name}\"; expected ADDR:PORT, or behind tcp://, tls://, tcp+zstd:// or tls+zstd://")
                })?;
            (scheme, addr)
        }
    };
    Ok((scheme, parse_listen(addr)?))
}

fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| "expected ADDR:PORT ([ADDR]:PORT for IPv6)".into())
}

fn parse_wait_clients(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| "expected a number of at least 1".into())
}

fn parse_buffer(v: &str) -> Result<usize, String> {
    parse_bytes(v)
        .filter(|&n| n >= MIN_CLIENT_BUFFER)
        .ok_or_else(|| "expected a number of bytes of at least 1M (suffixes K, M, G)".into())
}

fn parse_slow_client(v: &str) -> Result<SlowPolicy, String> {
    match v {
        "drop" => Ok(SlowPolicy::Drop),
        "disconnect" => Ok(SlowPolicy::Disconnect),
        _ => Err("expected drop or disconnect".into()),
    }
}

fn parse_max_clients(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_MAX_CLIENTS).contains(n))
        .ok_or_else(|| format!("expected a number from 1 to {MAX_MAX_CLIENTS}"))
}

fn parse_allow(v: &str) -> Result<IpNet, String> {
    admit::parse_subnet(v)
        .ok_or_else(|| "expected a subnet (192.0.2.0/24, 2001:db8::/32) or an address".into())
}

fn parse_write_timeout(v: &str) -> Result<Duration, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_WRITE_TIMEOUT).contains(n))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("expected seconds from 1 to {MAX_WRITE_TIMEOUT}"))
}

fn parse_connect(v: &str) -> Result<Endpoint, String> {
    // The plugin's own endpoint grammar: HOST:PORT, [V6]:PORT.
    Endpoint::parse(v).map_err(|e| e.to_string())
}

fn parse_rate(v: &str) -> Result<f64, String> {
    let r: f64 = v.parse().map_err(|_| "expected packets per second")?;
    if r.is_nan() || r <= 0.0 {
        return Err("must be positive".into());
    }
    Ok(r)
}

fn parse_log_format(v: &str) -> Result<LogFormat, String> {
    match v {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".into()),
    }
}

/// Options that make no sense together, as one line.
pub fn conflicts(o: &Options) -> Result<(), String> {
    input_conflicts(o).map_err(str::to_string)?;
    stdout_conflicts(o).map_err(str::to_string)?;
    if o.shards > 1 {
        if let Some(a) = o
            .listen()
            .into_iter()
            .find(|a| a.port() != 0 && u32::from(a.port()) + u32::from(o.shards) > 65536)
        {
            return Err(format!(
                "--shards {}: --listen {a}: the ports of the shards go past 65535",
                o.shards
            ));
        }
    }
    scheme_conflicts(o)?;
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

/// The schemes of --connect and --listen against the --tls* options: TLS
/// is for every connection or none, and a scheme written says which.
fn scheme_conflicts(o: &Options) -> Result<(), String> {
    if let Some(t) = o.connect.iter().find(|t| t.scheme().is_listen()) {
        return Err(format!(
            "--connect {t}: a listen scheme; --connect dials a receiver that listens: write tcp://, tls://, tcp+zstd:// or tls+zstd://"
        ));
    }
    let options = o.tls
        || o.tls_cert.is_some()
        || o.tls_key.is_some()
        || o.tls_ca.is_some()
        || o.tls_server_name.is_some();
    if o.connect.iter().any(|t| t.scheme().is_tls()) {
        // A target written without a scheme follows the --tls* options;
        // with none given, it would be plain among TLS ones.
        let plain = o
            .connect
            .iter()
            .find(|t| t.scheme() == Scheme::TcpZstd || (t.scheme() == Scheme::Tcp && !options));
        if let Some(t) = plain {
            return Err(format!(
                "--connect {t}: the other targets are TLS, and TLS is for every target or none: write it as tls://{} (or tls+zstd://)",
                host_port(t)
            ));
        }
    } else if options {
        if let Some(t) = o.connect.iter().find(|t| t.scheme() == Scheme::TcpZstd) {
            return Err(format!(
                "--connect {t}: the --tls* options make every connection TLS: write tls+zstd:// for a compressed one"
            ));
        }
    }
    let serving_tls = o.tls_cert.is_some();
    for (scheme, addr) in o.listen_schemes.iter().zip(&o.listen_given) {
        if scheme.is_tls() && !serving_tls {
            return Err(format!(
                "--listen {scheme}://{addr}: serving TLS needs --tls-cert and --tls-key"
            ));
        }
        if *scheme == Scheme::TcpZstd && serving_tls {
            return Err(format!(
                "--listen {scheme}://{addr}: --tls-cert makes every connection TLS: write tls+zstd:// for a compressed one"
            ));
        }
    }
    Ok(())
}

/// HOST:PORT of `t`, [V6]:PORT for an IPv6 address.
fn host_port(t: &Endpoint) -> String {
    if t.host().contains(':') {
        format!("[{}]:{}", t.host(), t.port())
    } else {
        format!("{}:{}", t.host(), t.port())
    }
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
    if o.shard_by.is_some() && o.shards <= 1 {
        return Err("--shard-by needs --shards");
    }
    if o.spool.is_some() && (!o.live() || (o.connect.is_empty() && o.shards <= 1)) {
        return Err("--spool needs a live input (-, --exec or --upstream) and --connect or --shards: it keeps the queues of receivers the tool knows");
    }
    if o.merge_window.is_some() && o.upstream.is_none() {
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

/// --stdout: a live input, and no option about connections.
fn stdout_conflicts(o: &Options) -> Result<(), &'static str> {
    if !o.stdout {
        return Ok(());
    }
    if !o.live() {
        return Err("--stdout needs a live input (-, --exec or --upstream): a file is already a pcap stream");
    }
    if !o.listen_given.is_empty() || !o.connect.is_empty() || o.shards > 1 {
        return Err("--stdout excludes --listen, --connect and --shards: the stream goes to standard output");
    }
    if o.port_file.is_some()
        || o.clients.is_some()
        || o.wait_clients.is_some()
        || o.max_clients.is_some()
        || !o.allow.is_empty()
        || o.write_timeout.is_some()
        || o.tls_wanted()
    {
        return Err("--stdout excludes the options about clients and connections (--port-file, --clients, --wait-clients, --max-clients, --allow, --write-timeout, --tls*)");
    }
    Ok(())
}

/// Options that exclude --connect.
fn connect_conflicts(o: &Options) -> Result<(), &'static str> {
    if o.max_clients.is_some() || !o.allow.is_empty() || o.write_timeout.is_some() {
        return Err("--max-clients, --allow and --write-timeout need --listen: they are about the clients that connect");
    }
    if !o.listen_given.is_empty() {
        return Err("--connect and --listen exclude each other: with --connect the tool dials out and does not listen");
    }
    if o.port_file.is_some() {
        return Err(
            "--port-file needs --listen: with --connect there is no listening port to write",
        );
    }
    if o.wait_clients.is_some() {
        return Err("--wait-clients needs --listen: with --connect the tool dials its targets");
    }
    if o.clients.is_some() {
        return Err(
            "--clients needs --listen: with --connect the tool ends once every target has the file",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse_from(args).map_err(|e| e.line().unwrap_or_default())
    }

    /// `args` parse, and their combination is refused with a line holding
    /// `needle`.
    fn refused(args: &[&str], needle: &str) {
        let e = match parse(args) {
            Ok(o) => conflicts(&o).err().unwrap_or_default(),
            Err(e) => e,
        };
        assert!(e.contains(needle), "{args:?}: {e:?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks of the derived definitions (names, conflicts).
        use clap::CommandFactory;
        Args::command().debug_assert();
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
        assert_eq!(o.listen().len(), 2);
        assert!(o.listen()[1].is_ipv6());
        assert_eq!(o.slow_client, SlowPolicy::Disconnect);
        assert_eq!(o.client_buffer, 1 << 20);
        assert_eq!(o.verbosity, Some(1));
        let o = parse(&["x.pcap"]).unwrap();
        assert_eq!(o.listen(), vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(o.verbosity, None);
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
            (
                &["--slow-client", "wait", "-"][..],
                "'wait' for '--slow-client",
            ),
            (&["--client-buffer", "512K", "-"][..], "at least 1M"),
            (&["--tls=yes", "-"][..], "'--tls'"),
            (&["--listen", "[::1]", "-"][..], "'[::1]' for '--listen"),
            (&["--max-clients", "0", "-"][..], "from 1 to 100000"),
            (&["--max-buffer", "64K", "-"][..], "at least 1M"),
            (
                &["--allow", "10.0.0.0/33", "-"][..],
                "'10.0.0.0/33' for '--allow",
            ),
            (&["--write-timeout", "0", "-"][..], "from 1 to 86400"),
            (&["--shards", "1025", "-"][..], "from 1 to 1024"),
            (&["--upstream", "a:1?share=3/2"][..], "--upstream"),
            (&["--rate", "0", "x.pcap"][..], "must be positive"),
            (&["--bogus", "-"][..], "--bogus"),
            (&["x.pcap", "y.pcap"][..], "y.pcap"),
            (&[][..], "missing FILE, -, --exec or --upstream"),
            (&["--exec", "true", "-"][..], "give one input"),
        ] {
            let e = parse(args).err().unwrap();
            assert!(e.contains(needle), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{args:?}: {e}");
        }
    }

    /// `--upstream A --upstream B` is one list of both (the old parser
    /// kept only B).
    #[test]
    fn upstream_given_twice_accumulates_into_one_list() {
        let o = parse(&["--upstream", "a:1", "--upstream", "b:2,c:3"]).unwrap();
        assert_eq!(o.upstream.as_deref(), Some("a:1,b:2,c:3"));
        let o = parse(&["--upstream", "tls://a:1?share=0/2"]).unwrap();
        assert_eq!(o.upstream.as_deref(), Some("tls://a:1?share=0/2"));
        refused(&["--upstream", "a:1", "--upstream", "a:1"], "a:1");
        refused(
            &["--upstream", "a:1?share=0/2", "--upstream", "b:2"],
            "single --upstream",
        );
    }

    #[test]
    fn lists_accumulate_and_other_options_given_twice_are_refused() {
        let o = parse(&["--connect", "127.0.0.1:1", "--connect", "127.0.0.1:2", "-"]).unwrap();
        assert_eq!(o.connect.len(), 2);
        for (args, needle) in [
            (
                &["--exec", "a", "--exec", "b"][..],
                "'--exec <CMD>' cannot be used multiple times",
            ),
            (
                &["--rate", "1", "--rate", "2", "x.pcap"][..],
                "'--rate <PPS>' cannot be used multiple times",
            ),
            (
                &["--once", "--once", "--exec", "a"][..],
                "'--once' cannot be used multiple times",
            ),
            (
                &["--slow-client", "drop", "--slow-client", "disconnect", "-"][..],
                "--slow-client",
            ),
            (
                &[
                    "--merge-window",
                    "5",
                    "--merge-window",
                    "6",
                    "--upstream",
                    "a:1,b:2",
                ][..],
                "--merge-window",
            ),
            (
                &["--tls-cert", "a", "--tls-cert", "b", "-"][..],
                "--tls-cert",
            ),
            (
                &["--port-file", "a", "--port-file", "b", "-"][..],
                "--port-file",
            ),
        ] {
            let e = parse(args).err().unwrap();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    /// An option outside its mode is refused even with its default value
    /// (the old parser took "given" for "not the default").
    #[test]
    fn options_given_without_their_mode_are_refused_whatever_their_value() {
        refused(
            &["--merge-window", "100", "-"],
            "--merge-window needs --upstream",
        );
        refused(
            &["--merge-window", "100", "--exec", "x"],
            "--merge-window needs --upstream",
        );
        refused(
            &["--connect", "127.0.0.1:9", "--wait-clients", "1", "-"],
            "--wait-clients needs --listen",
        );
        refused(
            &["--shard-by", "address-pair", "--exec", "x"],
            "--shard-by needs --shards",
        );
        let o = parse(&["--merge-window", "100", "--upstream", "a:1,b:2"]).unwrap();
        assert!(conflicts(&o).is_ok());
        assert_eq!(o.merge_window(), Duration::from_millis(100));
    }

    #[test]
    fn stdout_needs_a_live_input_and_no_connections() {
        let o = parse(&["--stdout", "--upstream", "a:1"]).unwrap();
        assert!(o.stdout && conflicts(&o).is_ok());
        refused(&["--stdout", "x.pcap"], "--stdout needs a live input");
        refused(
            &["--stdout", "--listen", "127.0.0.1:0", "-"],
            "--stdout excludes",
        );
        refused(
            &["--stdout", "--connect", "127.0.0.1:9", "-"],
            "--stdout excludes",
        );
        refused(&["--stdout", "--port-file", "p", "-"], "--stdout excludes");
    }

    /// Every option has its variable, named after it, and docs/broker.md's
    /// table lists each.
    #[test]
    fn every_option_has_a_documented_environment_variable() {
        use clap::CommandFactory;
        let readme = include_str!("../../docs/broker.md");
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let name = arg
                .get_env()
                .and_then(|e| e.to_str())
                .unwrap_or_else(|| panic!("{id} has no environment variable"));
            let long = arg.get_long().unwrap_or("input").replace('-', "_");
            assert_eq!(name, format!("PCAPOVERTCP_SERVE_{}", long.to_uppercase()));
            assert!(
                readme.contains(&format!("`{name}`")),
                "docs/broker.md lacks {name}"
            );
        }
    }
}
