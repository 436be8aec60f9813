use std::thread;

use bytes::Bytes;

use super::*;
use crate::parse::Record;
use crate::ring::Pop;

/// A batch of records with these (seconds) timestamps, each one byte `tag`.
fn batch(tag: u8, times: &[i64]) -> Batch {
    let records = times
        .iter()
        .enumerate()
        .map(|(i, &t)| Record {
            offset: i,
            caplen: 1,
            wirelen: 1,
            ts_sec: t,
            ts_nsec: 0,
            dlt: 1,
            interface: 0,
        })
        .collect();
    Batch::new(Bytes::from(vec![tag; times.len()]), records)
}

/// Every batch the ring received, until it finished, each handed to `each`
/// before it is released.
fn drain_batches(ring: &Ring, mut each: impl FnMut(&Batch)) {
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the merge never finished");
        match ring.pop(done) {
            Pop::Batch(b) => {
                done = b.cost();
                each(&b);
            }
            Pop::Empty => {
                done = 0;
                ring.wait(Duration::from_millis(20));
            }
            Pop::Finished => return,
        }
    }
}

/// Everything the ring received, as (tag, seconds), until it finished.
fn drain(ring: &Ring) -> Vec<(u8, i64)> {
    let mut out = Vec::new();
    drain_batches(ring, |b| {
        for i in 0..b.records.len() {
            let (r, data, _) = b.record(i).unwrap();
            out.push((data[0], r.ts_sec));
        }
    });
    out
}

fn run_merge(merge: &Arc<Merge>) -> (Arc<Ring>, thread::JoinHandle<()>) {
    let ring = Arc::new(Ring::new(usize::MAX).unwrap());
    let handle = {
        let (merge, ring) = (merge.clone(), ring.clone());
        thread::spawn(move || merge.run(&ring))
    };
    (ring, handle)
}

fn counters() -> Arc<Counters> {
    Arc::new(Counters::default())
}

#[test]
fn interleaved_senders_come_out_in_timestamp_order() {
    let merge = Merge::new(Duration::from_secs(5), 1 << 20);
    let producer = merge.producer();
    let (a, b) = (merge.lane(counters(), 0), merge.lane(counters(), 0));
    assert_eq!(a.push(batch(b'a', &[1, 3, 5, 7]), false), Push::Queued);
    assert_eq!(b.push(batch(b'b', &[2, 4]), false), Push::Queued);
    assert_eq!(b.push(batch(b'b', &[6, 8]), false), Push::Queued);
    let (ring, handle) = run_merge(&merge);
    drop((a, b, producer));
    let got = drain(&ring);
    handle.join().unwrap();
    let times: Vec<i64> = got.iter().map(|&(_, t)| t).collect();
    assert_eq!(times, (1..=8).collect::<Vec<_>>());
    assert_eq!(got[0].0, b'a');
    assert_eq!(got[1].0, b'b');
}

#[test]
fn a_quiet_sender_holds_the_others_for_the_window_only() {
    let window = Duration::from_millis(300);
    let merge = Merge::new(window, 1 << 20);
    let producer = merge.producer();
    let (busy, quiet) = (merge.lane(counters(), 0), merge.lane(counters(), 0));
    // The quiet lane is active (it delivered once) and now has nothing.
    let first = Instant::now();
    quiet.push(batch(b'q', &[1]), false);
    let (ring, handle) = run_merge(&merge);
    busy.push(batch(b'b', &[10, 11]), false);
    let mut got = Vec::new();
    while got.len() < 3 {
        match ring.pop(0) {
            Pop::Batch(b) => got.extend(b.records.iter().map(|r| r.ts_sec)),
            _ => {
                ring.wait(Duration::from_millis(20));
            }
        }
        assert!(first.elapsed() < Duration::from_secs(5));
    }
    // Released once the quiet lane had been quiet for the window, not before.
    assert!(first.elapsed() >= window, "{:?}", first.elapsed());
    assert_eq!(got, vec![1, 10, 11]);
    drop((busy, quiet, producer));
    drain(&ring);
    handle.join().unwrap();
}

#[test]
fn a_late_record_is_delivered_and_counted() {
    let merge = Merge::new(Duration::ZERO, 1 << 20);
    let producer = merge.producer();
    let late = counters();
    let (a, b) = (merge.lane(counters(), 0), merge.lane(late.clone(), 0));
    let (ring, handle) = run_merge(&merge);
    a.push(batch(b'a', &[100]), false);
    // Window 0: released at once, before b's older record arrives.
    while merge.used() > 0 && ring.used() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(50));
    b.push(batch(b'b', &[50]), false);
    drop((a, b, producer));
    let got = drain(&ring);
    handle.join().unwrap();
    assert_eq!(got, vec![(b'a', 100), (b'b', 50)]);
    assert_eq!(late.snapshot().late, 1);
}

#[test]
fn an_ended_lane_no_longer_holds_the_others_and_its_records_are_kept() {
    let merge = Merge::new(Duration::from_secs(60), 1 << 20);
    let producer = merge.producer();
    let (a, b) = (merge.lane(counters(), 0), merge.lane(counters(), 0));
    a.push(batch(b'a', &[1, 2]), false);
    b.push(batch(b'b', &[5]), false);
    drop(b); // b's connection ends: its record still comes, in order.
    let (ring, handle) = run_merge(&merge);
    a.push(batch(b'a', &[9]), false);
    drop((a, producer));
    let got = drain(&ring);
    handle.join().unwrap();
    assert_eq!(got, vec![(b'a', 1), (b'a', 2), (b'b', 5), (b'a', 9)]);
}

#[test]
fn the_merge_ends_only_after_every_producer() {
    let merge = Merge::new(Duration::ZERO, 1 << 20);
    let producer = merge.producer();
    let (ring, handle) = run_merge(&merge);
    thread::sleep(Duration::from_millis(50));
    assert!(matches!(ring.pop(0), Pop::Empty));
    drop(producer);
    assert!(drain(&ring).is_empty());
    handle.join().unwrap();
}

#[test]
fn stop_ends_the_merge_and_a_lane_waiting_for_budget() {
    let merge = Merge::new(Duration::ZERO, 100);
    let _producer = merge.producer();
    let lane = merge.lane(counters(), 0);
    // Held by nobody: the first read always fits, the second waits.
    assert_eq!(lane.push(batch(b'a', &[1; 200]), false), Push::Queued);
    let (_ring, handle) = run_merge(&merge);
    let waiter = {
        let merge = merge.clone();
        thread::spawn(move || {
            let lane = merge.lane(counters(), 0);
            lane.push(batch(b'b', &[1; 200]), false);
            lane.push(batch(b'b', &[1; 200]), false)
        })
    };
    thread::sleep(Duration::from_millis(100));
    merge.stop();
    assert_eq!(waiter.join().unwrap(), Push::Closed);
    handle.join().unwrap();
}

#[test]
fn a_flooding_lane_drops_within_its_share_and_the_other_keeps_room() {
    let merge = Merge::new(Duration::from_secs(60), 4000);
    let _producer = merge.producer();
    let (flood, slow) = (merge.lane(counters(), 0), merge.lane(counters(), 0));
    let cost = batch(b'f', &[1; 10]).cost();
    let mut dropped = 0;
    for _ in 0..100 {
        if let Push::Dropped(_) = flood.push(batch(b'f', &[1; 10]), true) {
            dropped += 1;
        }
    }
    assert!(dropped > 0);
    // The flooder holds about its half, not the whole budget.
    assert!(merge.used() <= 2000 + cost, "{}", merge.used());
    assert_eq!(slow.push(batch(b's', &[1; 10]), true), Push::Queued);
}

#[test]
fn a_lane_held_back_by_the_buffer_is_waited_for_beyond_the_window() {
    // Each lane's share is one batch: the first sender's second read waits
    // until Zeek has taken its first. That sender is not quiet, it is
    // held back by us: the later sender must not be released past it, however
    // long the window has run.
    let cost = batch(b'a', &[1, 2]).cost();
    let merge = Merge::new(Duration::from_millis(10), 2 * cost);
    let producer = merge.producer();
    let late = counters();
    let (a, b) = (
        Arc::new(merge.lane(late.clone(), 0)),
        merge.lane(counters(), 0),
    );
    assert_eq!(a.push(batch(b'a', &[1, 2]), false), Push::Queued);
    let second = {
        let a = a.clone();
        thread::spawn(move || a.push(batch(b'a', &[3, 4]), false))
    };
    let (ring, handle) = run_merge(&merge);
    // The first batch reaches the ring; the second read is held back.
    let first = loop {
        match ring.pop(0) {
            Pop::Batch(x) => break x,
            _ => {
                ring.wait(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(first.records.len(), 2);
    b.push(batch(b'b', &[5, 6]), false);
    thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(ring.pop(0), Pop::Empty),
        "the later sender was released past one held back by the buffer"
    );
    // Zeek takes the first batch: the held-back read goes on, in order.
    let done = first.cost();
    drop(first);
    assert_eq!(second.join().unwrap(), Push::Queued);
    drop((b, producer));
    drop(a);
    let mut got: Vec<i64> = Vec::new();
    let mut done = done;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the merge never finished");
        match ring.pop(done) {
            Pop::Batch(x) => {
                done = x.cost();
                got.extend(x.records.iter().map(|r| r.ts_sec));
            }
            Pop::Empty => {
                done = 0;
                ring.wait(Duration::from_millis(20));
            }
            Pop::Finished => break,
        }
    }
    handle.join().unwrap();
    assert_eq!(got, vec![3, 4, 5, 6]);
    assert_eq!(late.snapshot().late, 0);
}

#[test]
fn a_sender_that_keeps_sending_is_waited_for_whatever_the_window() {
    // The earliest sender's lane is empty between its reads; the later
    // sender's reads have waited far longer than the window. It must still
    // not be released past the earlier sender while that one keeps sending.
    let merge = Merge::new(Duration::from_millis(50), 1 << 20);
    let producer = merge.producer();
    let late = counters();
    let (early, later) = (merge.lane(late.clone(), 0), merge.lane(counters(), 0));
    later.push(batch(b'l', &[100, 101]), false);
    thread::sleep(Duration::from_millis(200));
    let (ring, handle) = run_merge(&merge);
    for t in 0..20 {
        early.push(batch(b'e', &[t]), false);
        thread::sleep(Duration::from_millis(10));
    }
    drop((early, later, producer));
    let got: Vec<i64> = drain(&ring).into_iter().map(|(_, t)| t).collect();
    handle.join().unwrap();
    let mut want: Vec<i64> = (0..20).collect();
    want.extend([100, 101]);
    assert_eq!(got, want);
    assert_eq!(late.snapshot().late, 0);
}

#[test]
fn interleaved_runs_reach_the_ring_in_few_batches_each_packet_marked_with_its_input() {
    // Three senders whose packets alternate: every run is one packet. They
    // must not become one ring batch each (a lock, an allocation and a
    // wake-up per packet), and each packet keeps its bytes and its input.
    const LANES: u8 = 3;
    const READS: i64 = 3;
    const PER_READ: i64 = 1000;
    let merge = Merge::new(Duration::from_secs(5), 1 << 30);
    let producer = merge.producer();
    let lanes: Vec<Lane> = (0..LANES)
        .map(|i| merge.lane(counters(), u32::from(i)))
        .collect();
    for (i, lane) in lanes.iter().enumerate() {
        for read in 0..READS {
            let times: Vec<i64> = (0..PER_READ)
                .map(|k| (read * PER_READ + k) * i64::from(LANES) + i as i64)
                .collect();
            assert_eq!(
                lane.push(batch(b'a' + i as u8, &times), false),
                Push::Queued
            );
        }
    }
    let (ring, handle) = run_merge(&merge);
    drop((lanes, producer));
    let (mut batches, mut got) = (0, Vec::new());
    drain_batches(&ring, |b| {
        batches += 1;
        for i in 0..b.records.len() {
            let (r, data, part) = b.record(i).unwrap();
            assert_eq!(data[0], b'a' + part.input as u8, "bytes of another input");
            got.push((r.ts_sec, part.input));
        }
    });
    handle.join().unwrap();
    let total = i64::from(LANES) * READS * PER_READ;
    let want: Vec<(i64, u32)> = (0..total).map(|t| (t, (t % 3) as u32)).collect();
    assert_eq!(got, want);
    // No more ring batches than the senders' reads.
    assert!(
        batches <= usize::from(LANES) * READS as usize,
        "{batches} ring batches for {total} packets"
    );
}

#[test]
fn packets_within_one_microsecond_are_ordered_by_nanoseconds() {
    // As mergecap orders them: by the finest time the inputs carry.
    let at = |tag: u8, nsec: &[u32]| {
        let mut b = batch(tag, &vec![1; nsec.len()]);
        for (r, &n) in b.records.iter_mut().zip(nsec) {
            r.ts_nsec = n;
        }
        b
    };
    let merge = Merge::new(Duration::from_secs(5), 1 << 20);
    let producer = merge.producer();
    let (a, b) = (merge.lane(counters(), 0), merge.lane(counters(), 1));
    assert_eq!(a.push(at(b'a', &[500, 900]), false), Push::Queued);
    assert_eq!(b.push(at(b'b', &[200, 700]), false), Push::Queued);
    let (ring, handle) = run_merge(&merge);
    drop((a, b, producer));
    let got: Vec<u8> = drain(&ring).into_iter().map(|(tag, _)| tag).collect();
    handle.join().unwrap();
    assert_eq!(got, b"baba");
}
