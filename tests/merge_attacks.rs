//! What one sender's timestamps can do to the others, over real loopback
//! sockets into a listening source: a sender that trickles packets dated
//! years behind, an honest one whose clock is seconds behind, and one that
//! sends a packet dated 2100. Each must harm only itself: the good
//! sender's packets are all delivered within the documented bound
//! (`merge_max_hold`), none is counted late for it, and the offender's
//! packets are counted for the offender.
//!
//! Good senders date their packets by this host's clock, as a live capture
//! does (`merge_max_skew` is measured from it). Every test is bounded by
//! `within`.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{connect_from, listening, sender, within};
use pcap_file::pcap::{PcapHeader, PcapWriter};
use pcapovertcp::{Config, Next, Opening, Source};

/// A microsecond little-endian pcap stream: pcap-file's header, then
/// packets a few at a time (`take` hands over what was written since).
struct Pcap {
    out: Vec<u8>,
}

impl Pcap {
    fn new() -> Pcap {
        let header = PcapHeader {
            snaplen: 65535,
            endianness: pcap_file::Endianness::Little,
            ts_resolution: pcap_file::TsResolution::MicroSecond,
            ..Default::default()
        };
        let out = PcapWriter::with_header(Vec::new(), header)
            .unwrap()
            .into_writer();
        Pcap { out }
    }

    /// A 60-byte packet whose first byte is `tag`, at `ts` since the epoch.
    fn packet(&mut self, tag: u8, ts: Duration) {
        let mut data = vec![0u8; 60];
        data[0] = tag;
        // A record header as pcap-file's writer lays it out (little-endian).
        let fields = [ts.as_secs() as u32, ts.subsec_micros(), 60, 60];
        for f in fields {
            self.out.extend_from_slice(&f.to_le_bytes());
        }
        self.out.extend_from_slice(&data);
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// The good sender: `reads` reads of `per_read` packets, 50 ms apart,
/// dated by this host's clock; when each read was written.
fn good_sender(to: SocketAddr, reads: usize, per_read: usize) -> thread::JoinHandle<Vec<Instant>> {
    thread::spawn(move || {
        let mut s = connect_from("127.0.0.3", to);
        let mut pcap = Pcap::new();
        s.write_all(&pcap.take()).unwrap();
        let mut written = Vec::new();
        for _ in 0..reads {
            let t = now();
            for i in 0..per_read {
                pcap.packet(b'g', t + Duration::from_micros(i as u64));
            }
            s.write_all(&pcap.take()).unwrap();
            written.push(Instant::now());
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(200));
        written
    })
}

/// A sender that keeps sending, one packet every `every`, each dated
/// `behind` this host's clock; until `stop`.
fn laggard(
    to: SocketAddr,
    behind: Duration,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut s = connect_from("127.0.0.2", to);
        let mut pcap = Pcap::new();
        while !stop.load(Ordering::Relaxed) {
            pcap.packet(b'l', now() - behind);
            if s.write_all(&pcap.take()).is_err() {
                return;
            }
            thread::sleep(every);
        }
    })
}

/// Takes packets until `want` good ones arrived (within `limit`); when each
/// good packet arrived, in order.
fn good_arrivals(source: &mut Source, want: usize, limit: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + limit;
    let mut at = Vec::new();
    while at.len() < want {
        match source.next_packet() {
            Next::Packet(p) => {
                if p.data.first() == Some(&b'g') {
                    at.push(Instant::now());
                }
            }
            Next::Empty => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {want} good packets arrived within {limit:?}",
                    at.len()
                );
                source.wait(Duration::from_millis(10));
            }
            Next::Ended => panic!("the source ended"),
        }
    }
    at
}

/// The longest a good packet waited: packet k came in read k / per_read,
/// written at `written[k / per_read]`, and arrived at `arrived[k]`.
fn worst_wait(arrived: &[Instant], written: &[Instant], per_read: usize) -> Duration {
    arrived
        .iter()
        .enumerate()
        .map(|(k, a)| a.saturating_duration_since(written[k / per_read]))
        .max()
        .unwrap_or_default()
}

/// A laggard (trickling years behind, or steadily seconds behind) beside a
/// good sender: every good packet arrives within the hold of being
/// written, none is late, and the laggard's packets are late for it.
fn a_laggard_holds_the_good_sender_no_longer_than_the_hold(behind: Duration, every: Duration) {
    let hold = Duration::from_millis(500);
    let config = Config {
        merge_window: Duration::from_millis(100),
        merge_max_hold: hold,
        ..Config::default()
    };
    let (mut source, _, addr) = listening("tcp-listen", config);
    let stop = Arc::new(AtomicBool::new(false));
    let lag = laggard(addr, behind, every, stop.clone());
    thread::sleep(Duration::from_millis(200));
    let (reads, per_read) = (30, 20);
    let good = good_sender(addr, reads, per_read);
    let arrived = good_arrivals(&mut source, reads * per_read, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    let written = good.join().unwrap();
    lag.join().unwrap();
    let worst = worst_wait(&arrived, &written, per_read);
    let slack = Duration::from_millis(400);
    assert!(
        worst < hold + slack,
        "a good packet waited {worst:?} with a sender {behind:?} behind (hold {hold:?})"
    );
    let good = sender(&source, "127.0.0.3");
    assert_eq!(good.late, 0, "good sender: {good:?}");
    let bad = sender(&source, "127.0.0.2");
    assert!(bad.late > 0, "laggard: {bad:?}");
    assert!(bad.lag >= behind / 2, "laggard's lag: {:?}", bad.lag);
    assert!(good.lag < hold, "good sender's lag: {:?}", good.lag);
}

#[test]
fn a_sender_trickling_packets_years_behind_holds_the_others_no_longer_than_the_hold() {
    within(Duration::from_secs(40), || {
        let six_years = Duration::from_secs(6 * 365 * 86_400);
        a_laggard_holds_the_good_sender_no_longer_than_the_hold(
            six_years,
            Duration::from_millis(30),
        );
    });
}

#[test]
fn a_sender_whose_clock_is_two_seconds_behind_holds_the_others_no_longer_than_the_hold() {
    within(Duration::from_secs(40), || {
        a_laggard_holds_the_good_sender_no_longer_than_the_hold(
            Duration::from_secs(2),
            Duration::from_millis(10),
        );
    });
}

/// A sender that sends one packet dated 2100 (and one at the end of time)
/// among its ordinary ones: they are dropped and counted as skewed for it,
/// with one line; the good sender's packets are neither late nor lost, and
/// no delivered packet is dated after this host's clock.
#[test]
fn a_packet_dated_2100_is_dropped_and_makes_no_other_senders_packet_late() {
    within(Duration::from_secs(30), || {
        let config = Config {
            merge_window: Duration::from_millis(100),
            ..Config::default()
        };
        let (mut source, _, addr) = listening("tcp-listen", config);
        let mut bad = connect_from("127.0.0.2", addr);
        let mut pcap = Pcap::new();
        pcap.packet(b'b', now());
        pcap.packet(b'b', Duration::from_secs(4_102_444_800)); // 2100-01-01
        pcap.packet(b'b', now());
        pcap.packet(b'b', Duration::new(u64::from(u32::MAX), 999_999_000));
        bad.write_all(&pcap.take()).unwrap();
        let (reads, per_read) = (20, 20);
        let good = good_sender(addr, reads, per_read);
        let mut delivered = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let started = now();
        while delivered.iter().filter(|&&(tag, _)| tag == b'g').count() < reads * per_read {
            match source.next_packet() {
                Next::Packet(p) => delivered.push((p.data[0], p.ts_sec)),
                Next::Empty => {
                    assert!(Instant::now() < deadline, "good packets missing");
                    source.wait(Duration::from_millis(10));
                }
                Next::Ended => panic!("the source ended"),
            }
        }
        good.join().unwrap();
        let limit = (started + Duration::from_secs(60)).as_secs() as i64;
        assert!(
            delivered.iter().all(|&(_, ts)| ts < limit),
            "a packet dated in the future was delivered"
        );
        assert_eq!(delivered.iter().filter(|&&(t, _)| t == b'b').count(), 2);
        let good = sender(&source, "127.0.0.3");
        assert_eq!(good.late, 0, "good sender: {good:?}");
        let bad_counts = sender(&source, "127.0.0.2");
        assert_eq!(bad_counts.skewed, 2, "bad sender: {bad_counts:?}");
        let lines: Vec<String> = source
            .take_messages()
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.contains("merge_max_skew"))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("tcp-listen://127.0.0.1:0: sender 127.0.0.2:")
                && lines[0].contains(" dated up to "),
            "{}",
            lines[0]
        );
        drop(bad);
    });
}

/// 16 senders each declare 60 interfaces of 256 KiB of options (240 MiB
/// in all) before one packet: the source keeps 24 bytes of each, so its
/// memory stays within docs/options.md's bound (the read buffers, 1 MiB each),
/// where it used to keep every block whole.
#[test]
fn fat_interface_blocks_from_many_senders_cost_only_their_read_buffers() {
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::{Block, PcapNgWriter};
    use std::borrow::Cow;
    within(Duration::from_secs(60), || {
        let (source, _, addr) = listening("tcp-listen", Config::default());
        let comment = "x".repeat(65_000);
        let fat = Block::InterfaceDescription(InterfaceDescriptionBlock {
            linktype: pcap_file::DataLink::ETHERNET,
            snaplen: 0,
            options: (0..4)
                .map(|_| InterfaceDescriptionOption::Comment(Cow::Owned(comment.clone())))
                .collect(),
        });
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        let header_len = w.get_ref().len();
        w.write_block(&fat).unwrap();
        let bytes = w.into_inner();
        let (shb, one) = bytes.split_at(header_len);
        let (shb, one) = (shb.to_vec(), one.to_vec());
        let before = common::rss_kib() / 1024;
        let senders: Vec<_> = (0..16)
            .map(|i| {
                let (shb, one) = (shb.clone(), one.clone());
                thread::spawn(move || {
                    let mut s = connect_from(&format!("127.0.1.{}", i + 1), addr);
                    s.write_all(&shb).unwrap();
                    for _ in 0..60 {
                        s.write_all(&one).unwrap();
                    }
                    s
                })
            })
            .collect();
        let streams: Vec<TcpStream> = senders.into_iter().map(|t| t.join().unwrap()).collect();
        // Every block has been read once every sender is connected.
        let deadline = Instant::now() + Duration::from_secs(20);
        while source.senders().iter().map(|(_, s)| s.bytes).sum::<u64>()
            < 16 * (shb.len() + 60 * one.len()) as u64
        {
            assert!(Instant::now() < deadline, "the blocks were not all read");
            source.wait(Duration::from_millis(20));
        }
        let grown = (common::rss_kib() / 1024).saturating_sub(before);
        assert!(
            grown < 16 * 2 + 16,
            "240 MiB of interface blocks from 16 senders grew RSS by {grown} MiB"
        );
        drop(streams);
    });
}

/// The same rule for a list of connect endpoints: one server trickles
/// packets dated years back, the other streams live ones; the live
/// server's packets wait no longer than the hold.
#[test]
fn a_trickling_server_holds_the_other_connect_endpoints_no_longer_than_the_hold() {
    within(Duration::from_secs(40), || {
        let trickle = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let name = format!(
            "{},{}",
            trickle.local_addr().unwrap(),
            live.local_addr().unwrap()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let trickler = {
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut s, _) = trickle.accept().unwrap();
                let mut pcap = Pcap::new();
                let six_years = Duration::from_secs(6 * 365 * 86_400);
                while !stop.load(Ordering::Relaxed) {
                    pcap.packet(b'l', now() - six_years);
                    if s.write_all(&pcap.take()).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(30));
                }
            })
        };
        let (reads, per_read) = (30, 20);
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = {
            let written = written.clone();
            thread::spawn(move || {
                let (mut s, _) = live.accept().unwrap();
                let mut pcap = Pcap::new();
                s.write_all(&pcap.take()).unwrap();
                thread::sleep(Duration::from_millis(200));
                for _ in 0..reads {
                    let t = now();
                    for i in 0..per_read {
                        pcap.packet(b'g', t + Duration::from_micros(i as u64));
                    }
                    s.write_all(&pcap.take()).unwrap();
                    written.lock().unwrap().push(Instant::now());
                    thread::sleep(Duration::from_millis(50));
                }
                thread::sleep(Duration::from_millis(500));
            })
        };
        let hold = Duration::from_millis(500);
        let config = Config {
            merge_window: Duration::from_millis(100),
            merge_max_hold: hold,
            reconnect: false,
            ..Config::default()
        };
        let mut source = Source::start(&name, config).unwrap();
        assert!(matches!(
            source.wait_open(Duration::from_secs(5)),
            Opening::Open(_)
        ));
        let arrived = good_arrivals(&mut source, reads * per_read, Duration::from_secs(20));
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        trickler.join().unwrap();
        let written = written.lock().unwrap().clone();
        let worst = worst_wait(&arrived, &written, per_read);
        assert!(
            worst < hold + Duration::from_millis(400),
            "a live server's packet waited {worst:?} beside a trickling one (hold {hold:?})"
        );
        let live_name = name.split(',').nth(1).unwrap();
        assert_eq!(sender(&source, live_name).late, 0);
    });
}
