//! consume HOST:PORT: reads one PCAP-over-IP stream to its end the way the
//! Zeek shim does, touching every byte, and prints the packet count. Run
//! under callgrind by bench/run to count the core's instructions per packet
//! without the sender's.

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
                sum = p
                    .data
                    .iter()
                    .fold(sum, |a, &b| a.wrapping_add(u64::from(b)));
            }
            Next::Empty => std::thread::yield_now(),
            Next::Ended => break,
        }
    }
    println!("packets={packets} checksum={sum}");
}
