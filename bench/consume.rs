//! consume HOST:PORT: reads one PCAP-over-IP stream to its end the way the
//! Zeek shim does and prints the packet count. Run under callgrind by
//! bench/run to count the core's instructions per packet (reader thread,
//! parser, ring, hand-over) without the sender's: it reads only each
//! packet's first byte, so that summing bytes does not swamp the count.

use pcapovertcp::{Config, Next, Source};

fn main() {
    let endpoint = std::env::args().nth(1).expect("usage: consume HOST:PORT");
    let config = Config {
        reconnect: false,
        ..Config::default()
    };
    let mut source = match Source::open(&endpoint, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("consume: {e}");
            std::process::exit(1);
        }
    };
    let (mut packets, mut sum) = (0u64, 0u64);
    loop {
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
    println!("packets={packets} checksum={sum}");
}
