//! --metrics ADDR:PORT: the counters in Prometheus' text exposition format,
//! for a scrape (`GET /metrics`; other paths get 404).
//!
//! Scrapes are answered one at a time on the metrics thread: a scraper has
//! SCRAPE_TIMEOUT to send its request (at most MAX_REQUEST bytes are read)
//! and to take the answer, so one that stalls delays the next scrape by at
//! most that, and costs no thread.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::stats::Registry;

/// How long a scraper has to send its request, and to take the answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of a request that is read (its headers are not needed).
pub const MAX_REQUEST: usize = 8 * 1024;

/// Answers scrapes on `listener` from now on, on its own thread.
pub fn serve(listener: TcpListener, registry: Arc<Registry>) -> io::Result<()> {
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for tcp in listener.incoming() {
                match tcp {
                    Ok(tcp) => {
                        if let Err(e) = answer(tcp, &registry) {
                            log::debug!("metrics: a scrape failed: {e}");
                        }
                    }
                    // Out of descriptors, or a connection reset before it
                    // was taken: the next one is tried after a pause.
                    Err(e) => {
                        log::debug!("metrics: accept failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

/// Reads one request (up to its blank line, at most MAX_REQUEST bytes) and
/// answers it.
fn answer(mut tcp: TcpStream, registry: &Registry) -> io::Result<()> {
    tcp.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    tcp.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", registry.prometheus()),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "not found: the metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "GET /metrics\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes())?;
    tcp.write_all(body.as_bytes())?;
    tcp.flush()
}
