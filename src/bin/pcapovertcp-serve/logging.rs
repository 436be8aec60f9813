//! Messages with a level and a timestamp, and the signals that print the
//! counters.
//!
//! Each message is one line on standard error:
//! `YYYY-MM-DDTHH:MM:SSZ pcapovertcp-serve: LEVEL message`. The tool's own
//! messages are shown from INFO up by default; RUST_LOG (env_logger's
//! syntax, e.g. `RUST_LOG=debug` or `RUST_LOG=pcapovertcp_serve=debug,rustls=trace`)
//! sets the levels, and -v/-q (given last) move the tool's own level. The
//! counter lines are always shown.

use std::io::Write;
use std::sync::Arc;
use std::thread;
use std::time::SystemTime;

use log::LevelFilter;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::stats::{utc, Registry};

/// The log target of the counter lines.
const COUNTERS: &str = "counters";

/// Sets up the logger. `verbosity`: the sum of -v (+1) and -q (-1), None
/// when neither was given.
pub fn init(verbosity: Option<i32>) {
    let mut b = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => {
            b.parse_filters(&spec);
        }
        // Other crates' messages (rustls) from WARN up, the tool's from
        // INFO up.
        _ => {
            b.filter_level(LevelFilter::Warn);
            b.filter_module("pcapovertcp", LevelFilter::Info);
        }
    }
    if let Some(v) = verbosity {
        let level = match v {
            i32::MIN..=-2 => LevelFilter::Error,
            -1 => LevelFilter::Warn,
            0 => LevelFilter::Info,
            1 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        };
        b.filter_module("pcapovertcp", level);
        b.filter_module("pcapovertcp_serve", level);
    }
    b.filter_module(COUNTERS, LevelFilter::Info);
    b.format(|buf, record| {
        writeln!(
            buf,
            "{} pcapovertcp-serve: {} {}",
            utc(SystemTime::now()),
            record.level(),
            record.args()
        )
    });
    b.target(env_logger::Target::Stderr);
    b.init();
}

/// SIGUSR1 prints the counters; SIGTERM and SIGINT print them and end the
/// tool (status 0). Set up before anything listens, so that a SIGUSR1 never
/// finds the default action (which ends the process).
pub fn handle_signals(registry: Arc<Registry>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGUSR1, SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    registry.print();
                    continue;
                }
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                log::info!("{name}: exiting");
                registry.print();
                let _ = std::io::stderr().flush();
                std::process::exit(0);
            }
        })?;
    Ok(())
}
