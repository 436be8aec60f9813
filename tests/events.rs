//! Facts for Zeek's scripts (src/shared/facts.rs), over real loopback sockets:
//! a lost feed is one fact however many reconnection attempts fail, and
//! its return another; refused senders are facts at most once per address
//! and window; senders' arrivals and departures carry their packets; a
//! pcapng stream's drop counts reach the sender's counters, Zeek's
//! statistics and the facts.

mod common;

use std::borrow::Cow;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{listening, pcap_header, push_record, within};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::DataLink;
use pcapovertcp::facts::{Fact, Refusal};
use pcapovertcp::{Config, Next, Source};

fn config() -> Config {
    Config {
        events: true,
        reconnect: true,
        reconnect_min: Duration::from_millis(5),
        reconnect_max: Duration::from_millis(20),
        ..Config::default()
    }
}

/// A little-endian Ethernet pcap header and `n` records of 60 bytes.
fn pcap(n: u32) -> Vec<u8> {
    let mut b = pcap_header();
    for i in 0..n {
        push_record(&mut b, 1_700_000_000 + i, 0, &[0; 60], 60);
    }
    b
}

/// Takes packets until `n` have been received (at most 10 s): the fact of
/// a read's drops comes before its records are counted.
fn receive(source: &mut Source, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while source.stats().received < n {
        assert!(Instant::now() < deadline, "{:?}", source.stats());
        while let Next::Packet(_) = source.next_packet() {}
        source.wait(Duration::from_millis(20));
    }
}

/// Takes packets and facts until `done` says the facts are complete (at
/// most 10 s); returns the facts.
fn facts_until(source: &mut Source, done: impl Fn(&[Fact]) -> bool) -> Vec<Fact> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut facts = Vec::new();
    loop {
        while let Next::Packet(_) = source.next_packet() {}
        facts.extend(source.take_facts());
        if done(&facts) {
            return facts;
        }
        assert!(
            Instant::now() < deadline,
            "facts after 10 s: {facts:?}; messages: {:?}",
            common::messages(source)
        );
        source.wait(Duration::from_millis(20));
    }
}

/// The `UpstreamDrops` facts' (dropped, total), in order.
fn upstream_drops(facts: &[Fact]) -> Vec<(u64, u64)> {
    facts
        .iter()
        .filter_map(|x| match x {
            Fact::UpstreamDrops { dropped, total, .. } => Some((*dropped, *total)),
            _ => None,
        })
        .collect()
}

fn count(facts: &[Fact], f: impl Fn(&Fact) -> bool) -> usize {
    facts.iter().filter(|x| f(x)).count()
}

#[test]
fn a_lost_feed_is_one_fact_however_many_attempts_fail_and_its_return_another() {
    within(Duration::from_secs(30), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = addr.to_string();
        let mut source = Source::start(&endpoint, config()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&pcap(3)).unwrap();
        // The server goes away: connection and port closed.
        drop(s);
        drop(listener);
        let lost = facts_until(&mut source, |f| {
            count(f, |x| matches!(x, Fact::FeedLost { .. })) > 0
        });
        // Attempts fail every 5-20 ms meanwhile: a dozen or more.
        thread::sleep(Duration::from_millis(400));
        let listener = TcpListener::bind(addr).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&pcap(2)).unwrap();
        let mut facts = lost;
        facts.extend(facts_until(&mut source, |f| {
            count(f, |x| matches!(x, Fact::SenderConnected { .. })) > 0
        }));
        source.close();
        let reason = "the server closed the connection".to_string();
        let connected = Fact::SenderConnected {
            source: endpoint.clone(),
            sender: endpoint.clone(),
        };
        assert_eq!(
            count(&facts, |x| matches!(x, Fact::FeedLost { .. })),
            1,
            "one fact per outage, not per attempt: {facts:?}"
        );
        assert_eq!(facts.len(), 5, "{facts:?}");
        assert_eq!(
            facts[..3],
            [
                connected.clone(),
                Fact::SenderLeft {
                    source: endpoint.clone(),
                    sender: endpoint.clone(),
                    packets: 3
                },
                Fact::FeedLost {
                    endpoint: endpoint.clone(),
                    reason
                },
            ],
        );
        assert!(
            matches!(&facts[3], Fact::FeedRestored { endpoint: e, outage }
                if *e == endpoint && *outage >= Duration::from_millis(400)),
            "{facts:?}"
        );
        assert_eq!(facts[4], connected);
    });
}

#[test]
fn a_refused_sender_is_one_fact_per_address_and_window_naming_why() {
    within(Duration::from_secs(30), || {
        let (mut source, endpoint, addr) = listening(
            "tcp-listen",
            Config {
                allowed_senders: vec!["10.0.0.0/8".parse().unwrap()],
                ..config()
            },
        );
        for _ in 0..5 {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(&pcap(1));
        }
        thread::sleep(Duration::from_millis(300));
        let facts = facts_until(&mut source, |f| !f.is_empty());
        source.close();
        assert_eq!(
            facts,
            [Fact::SenderRefused {
                source: endpoint,
                sender: "127.0.0.1".into(),
                refusal: Refusal::Acl,
                reason: "it is not in PcapOverTcp::allowed_senders".into(),
            }]
        );
    });
}

#[test]
fn a_sender_over_max_senders_is_refused_for_the_limit_and_senders_come_and_go() {
    within(Duration::from_secs(30), || {
        let (mut source, endpoint, addr) = listening(
            "tcp-listen",
            Config {
                max_senders: 1,
                ..config()
            },
        );
        let mut first = TcpStream::connect(addr).unwrap();
        first.write_all(&pcap(4)).unwrap();
        facts_until(&mut source, |f| {
            count(f, |x| matches!(x, Fact::SenderConnected { .. })) > 0
        });
        let mut second = TcpStream::connect(addr).unwrap();
        second.write_all(&pcap(1)).unwrap();
        let refused = facts_until(&mut source, |f| !f.is_empty());
        drop(first);
        let left = facts_until(&mut source, |f| !f.is_empty());
        source.close();
        assert!(
            matches!(
                &refused[..],
                [Fact::SenderRefused { refusal: Refusal::Limit, sender, reason, .. }]
                    if sender == "127.0.0.1" && reason.contains("max_senders (1)")
            ),
            "{refused:?}"
        );
        assert_eq!(
            left,
            [Fact::SenderLeft {
                source: endpoint,
                sender: "127.0.0.1".into(),
                packets: 4
            }]
        );
    });
}

/// A pcapng stream of two interfaces whose capture host reports drops:
/// EPB drop counts 2 and 3 on interface 0, 7 on interface 1, then ISBs
/// saying interface 0 dropped 10 + 1 in all and interface 1 only 4 (the
/// EPBs' 7 stand). 11 + 7 = 18 upstream drops.
fn pcapng_with_drops() -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    for _ in 0..2 {
        w.write_block(&Block::InterfaceDescription(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        }))
        .unwrap();
    }
    let data = [0u8; 60];
    for (i, (iface, drops)) in [(0, 2), (1, 7), (0, 0), (0, 3)].into_iter().enumerate() {
        w.write_block(&Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id: iface,
            timestamp: Duration::from_secs(1_700_000_000 + i as u64),
            original_len: 60,
            data: Cow::Borrowed(&data),
            options: vec![EnhancedPacketOption::DropCount(drops)],
        }))
        .unwrap();
    }
    for (iface, ifdrop, osdrop) in [(0, 10, 1), (1, 4, 0)] {
        w.write_block(&Block::InterfaceStatistics(InterfaceStatisticsBlock {
            interface_id: iface,
            timestamp: 0,
            options: vec![
                InterfaceStatisticsOption::IsbIfDrop(ifdrop),
                InterfaceStatisticsOption::IsbOsDrop(osdrop),
            ],
        }))
        .unwrap();
    }
    w.into_inner()
}

/// Serves `stream` once on a loopback port; returns the endpoint.
fn serve_once(stream: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(&stream);
            // Stay connected: the source must not see an outage.
            thread::sleep(Duration::from_secs(20));
        }
    });
    addr.to_string()
}

#[test]
fn a_capture_hosts_drops_reach_the_sender_zeeks_statistics_and_the_facts() {
    within(Duration::from_secs(30), || {
        let endpoint = serve_once(pcapng_with_drops());
        let mut source = Source::start(&endpoint, config()).unwrap();
        let facts = facts_until(&mut source, |f| {
            f.iter()
                .any(|x| matches!(x, Fact::UpstreamDrops { total, .. } if *total == 18))
        });
        receive(&mut source, 4);
        let sender = common::sender(&source, &endpoint);
        assert_eq!(sender.upstream_dropped, 18);
        assert_eq!(sender.records, 4);
        assert_eq!(sender.dropped, 0, "the reader itself lost nothing");
        assert_eq!(source.counters().upstream_dropped, 18);
        // In Zeek's terms: dropped, as Zeek's own pcapng reader counts them.
        assert_eq!(source.stats().dropped, 18);
        assert_eq!(source.stats().received, 4);
        // Told at once, then at most once a second: the read that brought
        // the whole stream is one fact.
        let drops = upstream_drops(&facts);
        assert_eq!(drops.iter().map(|d| d.0).sum::<u64>(), 18, "{facts:?}");
        source.close();
    });
}

#[test]
fn with_shares_only_share_0_counts_upstream_drops_in_zeeks_statistics() {
    within(Duration::from_secs(30), || {
        for (index, want) in [(0, 18), (1, 0)] {
            let endpoint = serve_once(pcapng_with_drops());
            let mut source =
                Source::start(&format!("{endpoint}?share={index}/2"), config()).unwrap();
            facts_until(&mut source, |f| {
                f.iter().any(|x| matches!(x, Fact::UpstreamDrops { .. }))
            });
            // Every worker's sender counters show the capture host's drops;
            // Zeek's `dropped` of a cluster counts them once.
            assert_eq!(common::sender(&source, &endpoint).upstream_dropped, 18);
            assert_eq!(source.stats().dropped, want, "share {index}/2");
            source.close();
        }
    });
}

#[test]
fn without_events_no_fact_is_kept() {
    within(Duration::from_secs(30), || {
        let endpoint = serve_once(pcapng_with_drops());
        let mut source = Source::start(
            &endpoint,
            Config {
                events: false,
                ..config()
            },
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while common::sender(&source, &endpoint).upstream_dropped < 18 {
            assert!(Instant::now() < deadline);
            while let Next::Packet(_) = source.next_packet() {}
            source.wait(Duration::from_millis(20));
        }
        assert_eq!(source.take_facts(), []);
        source.close();
    });
}

#[test]
fn upstream_drops_are_told_at_most_once_a_second_per_connection_and_at_its_end() {
    within(Duration::from_secs(30), || {
        // A header of one interface, then 20 packet blocks each reporting
        // one drop, written 20 ms apart: 20 reads within 0.4 s.
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        w.write_block(&Block::InterfaceDescription(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        }))
        .unwrap();
        let header = w.into_inner();
        let data = [0u8; 60];
        let blocks: Vec<Vec<u8>> = (0..20u64)
            .map(|i| {
                let mut w = PcapNgWriter::new(Vec::new()).unwrap();
                w.write_block(&Block::InterfaceDescription(InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: 0,
                    options: vec![],
                }))
                .unwrap();
                let skip = w.get_ref().len();
                w.write_block(&Block::EnhancedPacket(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_secs(1_700_000_000 + i),
                    original_len: 60,
                    data: Cow::Borrowed(&data),
                    options: vec![EnhancedPacketOption::DropCount(1)],
                }))
                .unwrap();
                w.into_inner().split_off(skip)
            })
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let mut source = Source::start(&endpoint, config()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&header).unwrap();
        for b in &blocks {
            s.write_all(b).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        drop(s);
        let facts = facts_until(&mut source, |f| {
            count(f, |x| matches!(x, Fact::FeedLost { .. })) > 0
        });
        source.close();
        let told = upstream_drops(&facts);
        // The first at once; the rest, within the second, at the end.
        assert_eq!(told.len(), 2, "{told:?}");
        assert_eq!(told[0].0 + told[1].0, 20, "{told:?}");
        assert_eq!(told[1].1, 20, "{told:?}");
    });
}

#[test]
fn an_endpoint_never_reached_while_another_feeds_is_said_once_and_is_no_outage() {
    within(Duration::from_secs(30), || {
        let up = serve_once(pcap(3));
        let down = format!("127.0.0.1:{}", common::closed_port());
        let mut source = Source::start(&format!("{up},{down}"), config()).unwrap();
        // The source runs on `up` while `down` is tried every 5-20 ms: a
        // dozen attempts or more.
        receive(&mut source, 3);
        thread::sleep(Duration::from_millis(400));
        let facts = source.take_facts();
        let said = source.take_messages();
        let down_counters = common::sender(&source, &down);
        source.close();
        // What the operator sees of `down` once the source runs (before,
        // it may be one of the endpoints the start-up waits for).
        let about_down: Vec<&String> = said
            .iter()
            .filter(|(level, m)| *level <= log::Level::Warn && m.starts_with(&down))
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            about_down,
            [&format!(
                "{down}: not reached yet (cannot connect to {down}: Connection refused (os error 111); is the PCAP-over-IP server running?); the source runs on its other endpoints and keeps trying this one"
            )],
            "{said:?}"
        );
        assert_eq!(down_counters.outages, 0, "{down_counters:?}");
        assert_eq!(
            count(&facts, |x| matches!(x, Fact::FeedLost { .. })),
            0,
            "{facts:?}"
        );
    });
}
