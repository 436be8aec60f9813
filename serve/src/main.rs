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
//! Modules: [`cli`] (the command line and --help), [`admit`] (--allow, --max-clients), [`conn`] (connections,
//! TLS, dialling), [`file`] (serving a
//! file), [`input`] (the live inputs: standard input, --exec, --upstream,
//! and --shards), [`upstream`] (--upstream with one server, relayed as it
//! is), [`merged`] (--upstream with several, merged), [`hub`] (the live relay), [`serve`] (the listening and dialling
//! modes), [`stats`] (the counters), [`metrics`] (--metrics), [`output`] (where a
//! relay client's writer writes: a connection or --stdout), [`logging`]
//! (messages and signals).

mod admit;
mod cli;
mod conn;
mod file;
mod header;
mod hub;
mod inflight;
mod input;
mod logging;
mod merged;
mod metrics;
mod output;
mod serve;
mod spool;
mod stats;
mod upstream;
mod words;

use std::process::ExitCode;

use cli::Options;

/// Argument and set-up errors, before anything is served, are one plain
/// line (`pcapovertcp-serve: ...`); from then on, messages go through the
/// logger.
fn main() -> ExitCode {
    let o = match Options::parse_from(std::env::args_os().skip(1)) {
        Ok(o) => o,
        Err(e) => match e.line() {
            // --help, --version: clap prints them.
            None => {
                if let cli::Error::Clap(e) = e {
                    let _ = e.print();
                }
                return ExitCode::SUCCESS;
            }
            Some(line) => {
                eprintln!("pcapovertcp-serve: {line} (see --help)");
                return ExitCode::from(2);
            }
        },
    };
    if let Err(msg) = cli::conflicts(&o) {
        logging::fatal(o.log_format, &msg);
        return ExitCode::from(2);
    }
    logging::init(o.verbosity, o.log_format);
    // The plugin core's messages on this thread name the tool's flags.
    pcapovertcp::setting::use_names(words::serve);
    match serve::run(&o) {
        Ok(code) => code,
        Err(msg) => {
            logging::fatal(o.log_format, &msg);
            ExitCode::FAILURE
        }
    }
}
