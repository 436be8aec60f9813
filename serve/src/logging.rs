//! Messages with a level and a timestamp, and the signals that print the
//! counters.
//!
//! Each message is one line on standard error:
//! `YYYY-MM-DDTHH:MM:SSZ pcapovertcp-serve: LEVEL message`, or with
//! --log-format json one JSON object, `{"time":...,"level":...,"message":...}`,
//! for log collectors that take JSON lines. The tool's own
//! messages are shown from INFO up by default; RUST_LOG (env_logger's
//! syntax, e.g. `RUST_LOG=debug` or `RUST_LOG=pcapovertcp_serve=debug,rustls=trace`)
//! sets the levels, and -v/-q (given last) move the tool's own level. The
//! counter lines are always shown.
//!
//! Lines about one client (connected, left, refused, too slow, ...) are
//! rate-limited together ([`client_line`]): at most CLIENT_LINES per
//! CLIENT_WINDOW, then one summary line per window with how many were not
//! shown, so that a storm of connections cannot flood the log.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::LevelFilter;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::output;
use crate::stats::{utc, Registry};

/// The log target of the counter lines.
const COUNTERS: &str = "counters";

/// At most this many lines about single clients are shown...
pub const CLIENT_LINES: u64 = 50;
/// ...per this interval; the rest are counted in one summary line.
pub const CLIENT_WINDOW: Duration = Duration::from_secs(10);
/// On SIGTERM/SIGINT, how long the segment being written to standard output
/// (--stdout) has to be taken by its reader before the tool exits anyway.
const STOP_WRITING: Duration = Duration::from_secs(5);

/// The current window of client lines: when it started, the lines shown
/// and the lines held back in it.
struct Window {
    start: Instant,
    shown: u64,
    held: u64,
}

static CLIENT_LOG: Mutex<Option<Window>> = Mutex::new(None);

/// A line about one client, rate-limited (see the module's text).
#[macro_export]
macro_rules! client_log {
    ($level:expr, $($arg:tt)+) => {
        $crate::logging::client_line($level, format_args!($($arg)+))
    };
}

/// Shows `args` at `level` unless CLIENT_LINES were shown in this window.
pub fn client_line(level: log::Level, args: fmt::Arguments<'_>) {
    if !log::log_enabled!(level) {
        return;
    }
    let show = {
        let mut w = CLIENT_LOG.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        roll(&mut w, now);
        let w = w.get_or_insert(Window {
            start: now,
            shown: 0,
            held: 0,
        });
        if w.shown < CLIENT_LINES {
            w.shown += 1;
            true
        } else {
            w.held += 1;
            false
        }
    };
    if show {
        log::log!(level, "{args}");
    }
}

/// Ends the window if it is over, with its summary line.
fn roll(w: &mut Option<Window>, now: Instant) {
    let Some(cur) = w else { return };
    if now.duration_since(cur.start) < CLIENT_WINDOW {
        return;
    }
    if cur.held > 0 {
        log::warn!(
            "{} more lines about single clients in the last {} s were not shown (at most {CLIENT_LINES} per {} s; SIGUSR1 prints every client's counters)",
            cur.held,
            now.duration_since(cur.start).as_secs(),
            CLIENT_WINDOW.as_secs()
        );
    }
    *w = None;
}

/// The summary line of a window that ended while no client line came.
fn summarise() {
    let mut w = CLIENT_LOG.lock().unwrap_or_else(|e| e.into_inner());
    roll(&mut w, Instant::now());
}

/// The form of each message line (--log-format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `TIME pcapovertcp-serve: LEVEL message`.
    #[default]
    Text,
    /// `{"time":"TIME","level":"LEVEL","message":"message"}`.
    Json,
}

/// `s` as a JSON string, quotes included (RFC 8259: `"`, `\\` and the
/// control characters escaped; everything else, UTF-8 included, as it is).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One message line in `format`, without its newline.
fn line(format: LogFormat, time: &str, level: log::Level, message: &str) -> String {
    match format {
        LogFormat::Text => format!("{time} pcapovertcp-serve: {level} {message}"),
        LogFormat::Json => format!(
            "{{\"time\":{},\"level\":{},\"message\":{}}}",
            json_string(time),
            json_string(level.as_str()),
            json_string(message)
        ),
    }
}

/// An error that ends the tool before or outside the logger (a bad
/// combination of options, a set-up failure), as one line in `format`:
/// `pcapovertcp-serve: message` as text.
pub fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("pcapovertcp-serve: {message}"),
        LogFormat::Json => eprintln!(
            "{}",
            line(format, &utc(SystemTime::now()), log::Level::Error, message)
        ),
    }
}

/// Sets up the logger. `verbosity`: the sum of -v (+1) and -q (-1), None
/// when neither was given.
pub fn init(verbosity: Option<i32>, format: LogFormat) {
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
    b.format(move |buf, record| {
        let message = record.args().to_string();
        let time = utc(SystemTime::now());
        writeln!(buf, "{}", line(format, &time, record.level(), &message))
    });
    b.target(env_logger::Target::Stderr);
    b.init();
    // The summary of held-back client lines comes even if no line follows.
    // Not essential: without the thread, it comes with the next line.
    let _ = thread::Builder::new()
        .name("log-summary".into())
        .spawn(|| loop {
            thread::sleep(CLIENT_WINDOW / 4);
            summarise();
        });
}

/// SIGUSR1 prints the counters; SIGTERM and SIGINT print them and end the
/// tool (status 0), --stdout's stream after whole records. Set up before
/// anything listens, so that a SIGUSR1 never finds the default action
/// (which ends the process).
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
                // --stdout: the segment being written is finished, and no
                // other begins, so that the stream ends on a whole record.
                let _stopped = match output::stop_writing(STOP_WRITING) {
                    Some(guard) => Some(guard),
                    None => {
                        log::warn!(
                            "{name}: standard output took nothing for {} s; exiting within a record",
                            STOP_WRITING.as_secs()
                        );
                        None
                    }
                };
                log::info!("{name}: exiting");
                registry.print();
                let _ = std::io::stderr().flush();
                std::process::exit(0);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_quotes_backslashes_and_control_characters() {
        let l = line(
            LogFormat::Json,
            "2026-01-02T03:04:05Z",
            log::Level::Warn,
            "a \"b\" c\\d\ne\u{1}f é",
        );
        assert_eq!(
            l,
            r#"{"time":"2026-01-02T03:04:05Z","level":"WARN","message":"a \"b\" c\\d\ne\u0001f é"}"#
        );
        assert_eq!(
            line(LogFormat::Text, "T", log::Level::Info, "m"),
            "T pcapovertcp-serve: INFO m"
        );
    }
}
