//! consume ENDPOINT [PACKETS [MERGE_WINDOW_MS]]: reads PCAP-over-IP the way
//! the Zeek shim does and prints the packet count. Run under callgrind by
//! bench/run.py to count the core's instructions per packet (reader threads,
//! parser, merge, ring, hand-over) without the senders': it reads only each
//! packet's first byte, so that summing bytes does not swamp the count.
//!
//! ENDPOINT is the part of Zeek's interface name after `pcapovertcp::`:
//! `HOST:PORT` reads one stream to its end (one connect endpoint, straight
//! into the ring); `tcp-listen://HOST:PORT` accepts senders, whose streams
//! go through the merge. A listening source never ends by itself, so with
//! PACKETS it stops once that many packets have been taken. MERGE_WINDOW_MS
//! sets `merge_window` (default 100): under valgrind, whose threads run
//! one at a time and some fifty times slower, a wall-clock window expires
//! where it would not natively, so bench/run.py passes a long one (and then
//! `merge_max_hold`, wall clock too, is set to an hour).

use pcapovertcp::{Config, Next, Source};

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .expect("usage: consume ENDPOINT [PACKETS [MERGE_WINDOW_MS]]");
    let want: Option<u64> = args
        .next()
        .map(|n| n.parse().expect("consume: PACKETS is a count"));
    let mut config = Config {
        reconnect: false,
        ..Config::default()
    };
    if let Some(ms) = args.next() {
        let ms = ms.parse().expect("consume: MERGE_WINDOW_MS is a count");
        config.merge_window = std::time::Duration::from_millis(ms);
        // The hold is wall clock too: under valgrind it would expire where
        // natively it does not. With a window given, it never does.
        config.merge_max_hold = std::time::Duration::from_secs(3600);
    }
    let mut source = match Source::open(&endpoint, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("consume: {e}");
            std::process::exit(1);
        }
    };
    let (mut packets, mut sum) = (0u64, 0u64);
    while want.is_none_or(|w| packets < w) {
        match source.next_packet() {
            Next::Packet(p) => {
                packets += 1;
                sum = sum.wrapping_add(u64::from(p.data.first().copied().unwrap_or(0)));
            }
            Next::Empty => {
                source.wait(std::time::Duration::from_millis(100));
            }
            Next::Ended => break,
        }
    }
    let c = source.counters();
    source.close();
    println!(
        "packets={packets} checksum={sum} connects={} late={}",
        c.connects, c.late
    );
}
