use std::thread;

use bytes::Bytes;

use super::*;
use crate::handoff::queue::Pop;
use crate::stream::parse::Record;

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

/// Every batch the hand-off received, until it ended, each handed to `each`
/// before it is released.
fn drain_batches(hand_off: &HandOff, mut each: impl FnMut(&Batch)) {
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the merge never finished");
        match hand_off.pop(done) {
            Pop::Batch(b) => {
                done = b.cost();
                each(&b);
            }
            Pop::Empty => {
                done = 0;
                hand_off.wait(Duration::from_millis(20));
            }
            Pop::Ended => return,
        }
    }
}

/// Everything the hand-off received, as (tag, seconds), until it ended.
fn drain(hand_off: &HandOff) -> Vec<(u8, i64)> {
    let mut out = Vec::new();
    drain_batches(hand_off, |b| {
        for i in 0..b.records.len() {
            let (r, data, _) = b.record(i).unwrap();
            out.push((data[0], r.ts_sec));
        }
    });
    out
}

fn run_merge(merge: &Arc<Merge>) -> (Arc<HandOff>, thread::JoinHandle<()>) {
    let hand_off = Arc::new(HandOff::new(usize::MAX).unwrap());
    let handle = {
        let (merge, hand_off) = (merge.clone(), hand_off.clone());
        thread::spawn(move || merge.run(&hand_off))
    };
    (hand_off, handle)
}

/// A hold no test reaches: the rules before the hold bound.
const FOREVER: Duration = Duration::from_secs(3600);

fn counters() -> Arc<Counters> {
    Arc::new(Counters::default())
}

#[test]
fn interleaved_senders_come_out_in_timestamp_order() {
    let merge = Merge::new(
        Timing::new(Duration::from_secs(5), FOREVER, Duration::ZERO),
        1 << 20,
    );
    let producer = merge.producer();
    let (a, b) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(counters(), 0, "test"),
    );
    assert_eq!(a.push(batch(b'a', &[1, 3, 5, 7]), false), Push::Queued);
    assert_eq!(b.push(batch(b'b', &[2, 4]), false), Push::Queued);
    assert_eq!(b.push(batch(b'b', &[6, 8]), false), Push::Queued);
    let (hand_off, handle) = run_merge(&merge);
    drop((a, b, producer));
    let got = drain(&hand_off);
    handle.join().unwrap();
    let times: Vec<i64> = got.iter().map(|&(_, t)| t).collect();
    assert_eq!(times, (1..=8).collect::<Vec<_>>());
    assert_eq!(got[0].0, b'a');
    assert_eq!(got[1].0, b'b');
}

#[test]
fn a_quiet_sender_holds_the_others_for_the_window_only() {
    let window = Duration::from_millis(300);
    let merge = Merge::new(Timing::new(window, FOREVER, Duration::ZERO), 1 << 20);
    let producer = merge.producer();
    let (busy, quiet) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(counters(), 0, "test"),
    );
    // The quiet lane is active (it delivered once) and now has nothing.
    let first = Instant::now();
    quiet.push(batch(b'q', &[1]), false);
    let (hand_off, handle) = run_merge(&merge);
    busy.push(batch(b'b', &[10, 11]), false);
    let mut got = Vec::new();
    while got.len() < 3 {
        match hand_off.pop(0) {
            Pop::Batch(b) => got.extend(b.records.iter().map(|r| r.ts_sec)),
            _ => {
                hand_off.wait(Duration::from_millis(20));
            }
        }
        assert!(first.elapsed() < Duration::from_secs(5));
    }
    // Released once the quiet lane had been quiet for the window, not before.
    assert!(first.elapsed() >= window, "{:?}", first.elapsed());
    assert_eq!(got, vec![1, 10, 11]);
    drop((busy, quiet, producer));
    drain(&hand_off);
    handle.join().unwrap();
}

#[test]
fn a_late_record_is_delivered_and_counted() {
    let merge = Merge::new(
        Timing::new(Duration::ZERO, FOREVER, Duration::ZERO),
        1 << 20,
    );
    let producer = merge.producer();
    let late = counters();
    let (a, b) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(late.clone(), 0, "test"),
    );
    let (hand_off, handle) = run_merge(&merge);
    a.push(batch(b'a', &[100]), false);
    // Window 0: released at once, before b's older record arrives.
    while merge.used() > 0 && hand_off.used() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(50));
    b.push(batch(b'b', &[50]), false);
    drop((a, b, producer));
    let got = drain(&hand_off);
    handle.join().unwrap();
    assert_eq!(got, vec![(b'a', 100), (b'b', 50)]);
    assert_eq!(late.snapshot().late, 1);
}

#[test]
fn an_ended_lane_no_longer_holds_the_others_and_its_records_are_kept() {
    let merge = Merge::new(
        Timing::new(Duration::from_secs(60), FOREVER, Duration::ZERO),
        1 << 20,
    );
    let producer = merge.producer();
    let (a, b) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(counters(), 0, "test"),
    );
    a.push(batch(b'a', &[1, 2]), false);
    b.push(batch(b'b', &[5]), false);
    drop(b); // b's connection ends: its record still comes, in order.
    let (hand_off, handle) = run_merge(&merge);
    a.push(batch(b'a', &[9]), false);
    drop((a, producer));
    let got = drain(&hand_off);
    handle.join().unwrap();
    assert_eq!(got, vec![(b'a', 1), (b'a', 2), (b'b', 5), (b'a', 9)]);
}

#[test]
fn the_merge_ends_only_after_every_producer() {
    let merge = Merge::new(
        Timing::new(Duration::ZERO, FOREVER, Duration::ZERO),
        1 << 20,
    );
    let producer = merge.producer();
    let (hand_off, handle) = run_merge(&merge);
    thread::sleep(Duration::from_millis(50));
    assert!(matches!(hand_off.pop(0), Pop::Empty));
    drop(producer);
    assert!(drain(&hand_off).is_empty());
    handle.join().unwrap();
}

#[test]
fn stop_ends_the_merge_and_a_lane_waiting_for_budget() {
    let merge = Merge::new(Timing::new(Duration::ZERO, FOREVER, Duration::ZERO), 100);
    let _producer = merge.producer();
    let lane = merge.lane(counters(), 0, "test");
    // Held by nobody: the first read always fits, the second waits.
    assert_eq!(lane.push(batch(b'a', &[1; 200]), false), Push::Queued);
    let (_hand_off, handle) = run_merge(&merge);
    let waiter = {
        let merge = merge.clone();
        thread::spawn(move || {
            let lane = merge.lane(counters(), 0, "test");
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
    let merge = Merge::new(
        Timing::new(Duration::from_secs(60), FOREVER, Duration::ZERO),
        4000,
    );
    let _producer = merge.producer();
    let (flood, slow) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(counters(), 0, "test"),
    );
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
    let merge = Merge::new(
        Timing::new(Duration::from_millis(10), FOREVER, Duration::ZERO),
        2 * cost,
    );
    let producer = merge.producer();
    let late = counters();
    let (a, b) = (
        Arc::new(merge.lane(late.clone(), 0, "test")),
        merge.lane(counters(), 0, "test"),
    );
    assert_eq!(a.push(batch(b'a', &[1, 2]), false), Push::Queued);
    let second = {
        let a = a.clone();
        thread::spawn(move || a.push(batch(b'a', &[3, 4]), false))
    };
    let (hand_off, handle) = run_merge(&merge);
    // The first batch reaches the hand-off; the second read is held back.
    let first = loop {
        match hand_off.pop(0) {
            Pop::Batch(x) => break x,
            _ => {
                hand_off.wait(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(first.records.len(), 2);
    b.push(batch(b'b', &[5, 6]), false);
    thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(hand_off.pop(0), Pop::Empty),
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
        match hand_off.pop(done) {
            Pop::Batch(x) => {
                done = x.cost();
                got.extend(x.records.iter().map(|r| r.ts_sec));
            }
            Pop::Empty => {
                done = 0;
                hand_off.wait(Duration::from_millis(20));
            }
            Pop::Ended => break,
        }
    }
    handle.join().unwrap();
    assert_eq!(got, vec![3, 4, 5, 6]);
    assert_eq!(late.snapshot().late, 0);
}

/// Queues `batch` on `lane` as if read at `at`: the merge's decisions turn
/// on when reads came, and a test that sleeps for them is at the mercy of
/// the scheduler (one late wake-up reads as a quiet sender).
fn push_at(merge: &Merge, lane: &Lane, batch: Batch, at: Instant) {
    assert_eq!(lane.push(batch, false), Push::Queued);
    let mut st = lock(&merge.state);
    let l = st.lanes.iter_mut().find(|l| l.id == lane.id);
    let l = l.expect("an open lane is never forgotten");
    l.last_push = at;
    l.queue.back_mut().expect("just queued").arrived = at;
}

/// One pass of the merge thread at `now`, without the thread: the seconds
/// it released and why it stopped.
fn release_at(merge: &Merge, now: Instant) -> (Vec<i64>, Step) {
    let mut st = lock(&merge.state);
    st.forget_ended();
    let mut out = Outgoing::default();
    let step = st.release(now, &merge.timing, &mut out);
    let times = out.take().records.iter().map(|r| r.ts_sec).collect();
    (times, step)
}

#[test]
fn a_sender_that_keeps_sending_is_waited_for_whatever_the_window() {
    // The earliest sender's lane is empty between its reads; the later
    // sender's reads have waited far longer than the window. It must still
    // not be released past the earlier sender while that one keeps sending.
    // Driven at explicit instants, not by sleeping: 5 ms between reads
    // stays 5 ms however loaded the machine.
    let window = Duration::from_millis(300);
    let merge = Merge::new(Timing::new(window, FOREVER, Duration::ZERO), 1 << 20);
    let producer = merge.producer();
    let late = counters();
    let (early, later) = (
        merge.lane(late.clone(), 0, "test"),
        merge.lane(counters(), 0, "test"),
    );
    let t0 = Instant::now();
    push_at(&merge, &later, batch(b'l', &[100, 101]), t0);
    let mut read = t0 + window * 2;
    push_at(&merge, &early, batch(b'e', &[0]), read);
    for t in 0..20 {
        if t > 0 {
            read += Duration::from_millis(5);
            push_at(&merge, &early, batch(b'e', &[t]), read);
        }
        // The later reads waited from t0, longer than the window, and still
        // wait until the early sender has been quiet for a window.
        let (got, step) = release_at(&merge, read);
        assert_eq!(got, [t], "at read {t}");
        assert!(
            matches!(step, Step::Wait(Some(until)) if until == read + window),
            "at read {t}: {step:?}"
        );
    }
    let (got, _) = release_at(&merge, read + window - Duration::from_millis(1));
    assert_eq!(got, [] as [i64; 0], "within the window after the last read");
    let (got, _) = release_at(&merge, read + window);
    assert_eq!(
        got,
        [100, 101],
        "once the early sender was quiet for the window"
    );
    drop((early, later, producer));
    assert!(matches!(
        release_at(&merge, read + window),
        (_, Step::Ended)
    ));
    assert_eq!(late.snapshot().late, 0);
}

#[test]
fn interleaved_runs_reach_the_hand_off_in_few_batches_each_packet_marked_with_its_input() {
    // Three senders whose packets alternate: every run is one packet. They
    // must not become one hand-off batch each (a lock, an allocation and a
    // wake-up per packet), and each packet keeps its bytes and its input.
    const LANES: u8 = 3;
    const READS: i64 = 3;
    const PER_READ: i64 = 1000;
    let merge = Merge::new(
        Timing::new(Duration::from_secs(5), FOREVER, Duration::ZERO),
        1 << 30,
    );
    let producer = merge.producer();
    let lanes: Vec<Lane> = (0..LANES)
        .map(|i| merge.lane(counters(), u32::from(i), "test"))
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
    let (hand_off, handle) = run_merge(&merge);
    drop((lanes, producer));
    let (mut batches, mut got) = (0, Vec::new());
    drain_batches(&hand_off, |b| {
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
    // No more hand-off batches than the senders' reads.
    assert!(
        batches <= usize::from(LANES) * READS as usize,
        "{batches} hand_off batches for {total} packets"
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
    let merge = Merge::new(
        Timing::new(Duration::from_secs(5), FOREVER, Duration::ZERO),
        1 << 20,
    );
    let producer = merge.producer();
    let (a, b) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(counters(), 1, "test"),
    );
    assert_eq!(a.push(at(b'a', &[500, 900]), false), Push::Queued);
    assert_eq!(b.push(at(b'b', &[200, 700]), false), Push::Queued);
    let (hand_off, handle) = run_merge(&merge);
    drop((a, b, producer));
    let got: Vec<u8> = drain(&hand_off).into_iter().map(|(tag, _)| tag).collect();
    handle.join().unwrap();
    assert_eq!(got, b"baba");
}

/// Every record the hand-off receives until it ends, as (tag, seconds,
/// when it came out), collected by a thread of its own.
fn collect_timed(hand_off: &Arc<HandOff>) -> thread::JoinHandle<Vec<(u8, i64, Instant)>> {
    let hand_off = hand_off.clone();
    thread::spawn(move || {
        let mut got = Vec::new();
        drain_batches(&hand_off, |b| {
            let now = Instant::now();
            for i in 0..b.records.len() {
                let (r, data, _) = b.record(i).unwrap();
                got.push((data[0], r.ts_sec, now));
            }
        });
        got
    })
}

/// A sender that keeps sending packets dated long before everyone else's
/// (a trickle, or a clock years behind) is waited for, since it is not
/// quiet: without a hold, it kept a good sender's packets back for as long
/// as it trickled. With one, the good packets go after the hold, and from
/// then on the trickler is behind the front and waited for no more; its
/// packets are late, counted for it alone.
#[test]
fn a_trickling_sender_holds_the_others_no_longer_than_the_hold() {
    let hold = Duration::from_millis(300);
    let merge = Merge::new(
        Timing::new(Duration::from_millis(100), hold, Duration::ZERO),
        1 << 20,
    );
    let producer = merge.producer();
    let (trickler_counts, good_counts) = (counters(), counters());
    let trickler = Arc::new(merge.lane(trickler_counts.clone(), 0, "trickler"));
    let good = merge.lane(good_counts.clone(), 1, "good");
    let (hand_off, handle) = run_merge(&merge);
    let collector = collect_timed(&hand_off);
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (trickler, stop) = (trickler.clone(), stop.clone());
        thread::spawn(move || {
            // Six years behind, one packet every 30 ms: never quiet for
            // the 100 ms window.
            let mut t = 1_000;
            while !stop.load(Ordering::Relaxed) {
                trickler.push(batch(b't', &[t]), false);
                t += 1;
                thread::sleep(Duration::from_millis(30));
            }
        })
    };
    thread::sleep(Duration::from_millis(50));
    // Twenty reads of the good sender, 50 ms apart, each timed from its push.
    let mut pushed = Vec::new();
    let base = 200_000_000;
    for i in 0..20 {
        pushed.push(Instant::now());
        good.push(batch(b'g', &[base + i]), false);
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(hold);
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    drop((good, producer));
    drop(trickler);
    let good_out: Vec<_> = collector
        .join()
        .unwrap()
        .into_iter()
        .filter(|g| g.0 == b'g')
        .collect();
    handle.join().unwrap();

    assert_eq!(
        good_out.len(),
        20,
        "good packets delivered: {}",
        good_out.len()
    );
    for (i, (_, ts, at)) in good_out.iter().enumerate() {
        let waited = at.duration_since(pushed[(*ts - base) as usize]);
        assert!(
            waited < hold + Duration::from_millis(250),
            "good packet {i} waited {waited:?}, more than the hold of {hold:?}"
        );
    }
    // The first hold (300 ms) puts the trickler behind the front; after
    // one more hold behind it, it is waited for no more: the good packets
    // pushed from 700 ms on do not wait for it (a window at most).
    let later: Vec<Duration> = good_out[14..]
        .iter()
        .map(|(_, ts, at)| at.duration_since(pushed[(*ts - base) as usize]))
        .collect();
    assert!(
        later.iter().all(|w| *w < Duration::from_millis(150)),
        "once behind, the trickler still held the others: {later:?}"
    );
    assert_eq!(good_counts.snapshot().late, 0);
    assert!(trickler_counts.snapshot().late > 0);
    assert!(
        trickler_counts.snapshot().lag > Duration::from_secs(100_000_000),
        "the trickler's lag: {:?}",
        trickler_counts.snapshot().lag
    );
    assert_eq!(good_counts.snapshot().lag, Duration::ZERO);
}

/// A packet dated 2100 would move Zeek's network time to 2100 and make
/// every later packet of every sender late: it is dropped, and counted as
/// skewed for its own sender, with one line that names it.
#[test]
fn a_packet_dated_far_after_the_clock_is_dropped_and_counted_for_its_sender() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let merge = Merge::new(
        Timing::new(Duration::from_millis(50), FOREVER, Duration::from_secs(300)),
        1 << 20,
    );
    let producer = merge.producer();
    let (bad_counts, good_counts) = (counters(), counters());
    let bad = merge.lane(bad_counts.clone(), 0, "bad");
    let good = merge.lane(good_counts.clone(), 1, "good");
    let (hand_off, handle) = run_merge(&merge);
    let log = crate::shared::messages::Messages::default();
    let log = Arc::new(log);
    crate::shared::logger::routed(&log, || {
        bad.push(batch(b'b', &[now, 4_102_444_800, now + 3]), false);
        bad.push(batch(b'b', &[i64::MAX]), false);
    });
    good.push(batch(b'g', &[now + 1]), false);
    // The good sender pauses past the window: what the bad one queued goes.
    thread::sleep(Duration::from_millis(300));
    good.push(batch(b'g', &[now + 5]), false);
    drop((bad, good, producer));
    let got: Vec<(u8, i64)> = drain(&hand_off);
    handle.join().unwrap();
    let times: Vec<i64> = got.iter().map(|&(_, t)| t - now).collect();
    assert_eq!(times, vec![0, 1, 3, 5]);
    assert_eq!(good_counts.snapshot().late, 0);
    assert_eq!(bad_counts.snapshot().skewed, 2);
    let lines: Vec<String> = log.take().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("bad: dropped 1 packet dated up to 2"),
        "{}",
        lines[0]
    );
}

#[test]
fn heap_keys_order_as_time_then_lane_and_give_both_back() {
    let times: [Ts; 7] = [
        (i64::MIN, 0),
        (-1, 999_999_999),
        (0, 0),
        (0, 1),
        (1, 0),
        (1_700_000_000, 500),
        (i64::MAX, 999_999_999),
    ];
    let mut keys = Vec::new();
    for &t in &times {
        for lane in [0usize, 1, 63, 4096] {
            let k = heap_key(t, lane);
            assert_eq!((ts_of(k), lane_of(k)), (t, lane));
            keys.push(((t, lane), k));
        }
    }
    let mut by_tuple = keys.clone();
    by_tuple.sort_by_key(|(tuple, _)| *tuple);
    keys.sort_by_key(|(_, k)| *k);
    assert_eq!(keys, by_tuple);
}

#[test]
fn senders_that_connected_long_before_their_first_packets_are_merged_from_the_first() {
    // Both senders sent their headers, then nothing for longer than the
    // window (as senders do that connect and wait for traffic); then both
    // start, the second 50 ms after the first. The second's first packets
    // are older than the first's later ones: they must not be late.
    let window = Duration::from_millis(300);
    let merge = Merge::new(Timing::new(window, FOREVER, Duration::ZERO), 1 << 20);
    let producer = merge.producer();
    let (a_counters, b_counters) = (counters(), counters());
    let (a, b) = (
        merge.lane(a_counters.clone(), 0, "a"),
        merge.lane(b_counters.clone(), 1, "b"),
    );
    let (hand_off, handle) = run_merge(&merge);
    thread::sleep(window * 2);
    a.push(batch(b'a', &[0, 2, 4, 6]), false);
    thread::sleep(Duration::from_millis(50));
    b.push(batch(b'b', &[1, 3, 5, 7]), false);
    drop((a, b, producer));
    let got: Vec<i64> = drain(&hand_off).into_iter().map(|(_, t)| t).collect();
    handle.join().unwrap();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    assert_eq!(
        (a_counters.snapshot().late, b_counters.snapshot().late),
        (0, 0)
    );
}

#[test]
fn a_sender_that_never_sends_holds_the_others_for_one_window_only() {
    let window = Duration::from_millis(200);
    let merge = Merge::new(Timing::new(window, FOREVER, Duration::ZERO), 1 << 20);
    let producer = merge.producer();
    let (a, silent) = (
        merge.lane(counters(), 0, "a"),
        merge.lane(counters(), 1, "silent"),
    );
    let (hand_off, handle) = run_merge(&merge);
    let started = Instant::now();
    a.push(batch(b'a', &[0]), false);
    let first = wait_for_records(&hand_off, 1);
    let waited = started.elapsed();
    assert!(
        waited >= window,
        "released after {waited:?}, before the window"
    );
    // The silent sender's window has passed: the next packet is not held.
    let again = Instant::now();
    a.push(batch(b'a', &[1]), false);
    let second = wait_for_records(&hand_off, 1);
    let waited_again = again.elapsed();
    assert!(
        waited_again < window,
        "the silent sender held the others again: {waited_again:?}"
    );
    assert_eq!((first, second), (vec![0], vec![1]));
    drop((a, silent, producer));
    merge.stop();
    handle.join().unwrap();
}

/// Takes `n` records from the hand-off (within 10 s): their times.
fn wait_for_records(hand_off: &HandOff, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {got:?} within 10 s");
        match hand_off.pop(0) {
            Pop::Batch(b) => {
                got.extend(b.records.iter().map(|r| r.ts_sec));
                // Given back at once: the budget is not what is tested.
                hand_off.pop(b.cost());
            }
            _ => thread::sleep(Duration::from_millis(1)),
        }
    }
    got
}

#[test]
fn a_sender_whose_socket_holds_unread_bytes_is_waited_for_past_the_window() {
    // A reader thread that has not had a core for longer than the window
    // (64 senders on 2 cores) leaves its lane empty with its sender's bytes
    // in the socket: that sender is not quiet, and the others must not be
    // released past it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let socket = Arc::new(listener.accept().unwrap().0);
    std::io::Write::write_all(&mut peer, b"x").unwrap();
    let window = Duration::from_millis(20);
    let merge = Merge::new(Timing::new(window, FOREVER, Duration::ZERO), 1 << 20);
    let producer = merge.producer();
    let late = counters();
    let (behind, other) = (
        merge.lane(late.clone(), 0, "test"),
        merge.lane(counters(), 0, "test"),
    );
    behind.watch(Arc::downgrade(&socket));
    behind.push(batch(b'a', &[1]), false);
    other.push(batch(b'b', &[3]), false);
    let (hand_off, handle) = run_merge(&merge);
    let mut got: Vec<i64> = Vec::new();
    let until = Instant::now() + 25 * window;
    while Instant::now() < until {
        if let Pop::Batch(b) = hand_off.pop(0) {
            got.extend(b.records.iter().map(|r| r.ts_sec));
        }
        hand_off.wait(Duration::from_millis(10));
    }
    assert_eq!(
        got,
        vec![1],
        "released past a sender whose bytes were still unread"
    );
    // Its reader catches up: everything in order, nothing late.
    behind.push(batch(b'a', &[2]), false);
    drop((behind, other, producer));
    got.extend(drain(&hand_off).iter().map(|&(_, t)| t));
    handle.join().unwrap();
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(late.snapshot().late, 0);
}

#[test]
fn a_closed_socket_is_no_reason_to_wait() {
    // The lane's socket is gone (its connection ended before its lane):
    // the window rules alone.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let socket = Arc::new(listener.accept().unwrap().0);
    let watch = Arc::downgrade(&socket);
    drop((socket, peer));
    assert!(!unread(&watch));
    let window = Duration::from_millis(20);
    let merge = Merge::new(Timing::new(window, FOREVER, Duration::ZERO), 1 << 20);
    let producer = merge.producer();
    let (gone, other) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(counters(), 0, "test"),
    );
    gone.watch(watch);
    gone.push(batch(b'a', &[1]), false);
    other.push(batch(b'b', &[3]), false);
    let (hand_off, handle) = run_merge(&merge);
    let mut got: Vec<i64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "never released past a quiet lane"
        );
        if let Pop::Batch(b) = hand_off.pop(0) {
            got.extend(b.records.iter().map(|r| r.ts_sec));
        }
        hand_off.wait(Duration::from_millis(10));
    }
    assert_eq!(got, vec![1, 3]);
    drop((gone, other, producer));
    drain(&hand_off);
    handle.join().unwrap();
}

#[test]
fn the_tournament_gives_the_earliest_head_and_the_next_one_elsewhere() {
    // Against a sort, through the winner's lane emptying and moving on,
    // for lane counts that fill the leaves and that do not.
    for lanes in [1usize, 2, 3, 5, 16, 17, 64] {
        let mut heads = Heads::new(lanes);
        let mut want: Vec<Option<Ts>> = vec![None; lanes];
        let mut seed = 0x9e37_79b9_u64 ^ lanes as u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (i, head) in want.iter_mut().enumerate() {
            if random() % 4 != 0 {
                *head = Some(((random() % 8) as i64 - 4, (random() % 3) as u32));
                heads.put(i, heap_key(head.unwrap(), i));
            }
        }
        heads.play();
        for _ in 0..500 {
            let mut sorted: Vec<u128> = (0..lanes)
                .filter_map(|i| want[i].map(|t| heap_key(t, i)))
                .collect();
            sorted.sort();
            assert_eq!(heads.top(), sorted.first().copied(), "{lanes} lanes");
            assert_eq!(heads.second(), sorted.get(1).copied(), "{lanes} lanes");
            // The merge only ever replaces the winner's head.
            let Some(top) = heads.top() else {
                break;
            };
            let lane = lane_of(top);
            want[lane] = match random() % 9 {
                0 => None,
                _ => Some(((random() % 8) as i64 - 4, (random() % 3) as u32)),
            };
            heads.replace(lane, want[lane]);
        }
    }
}

#[test]
fn a_sender_ahead_of_the_others_is_released_in_runs_that_stop_at_the_next_head() {
    // One lane is far ahead within each read, then interleaves: the runs it
    // makes must stop at the other lane's head, and ties go to the first lane.
    let merge = Merge::new(
        Timing::new(Duration::from_secs(5), FOREVER, Duration::ZERO),
        1 << 20,
    );
    let producer = merge.producer();
    let (a, b) = (
        merge.lane(counters(), 0, "test"),
        merge.lane(counters(), 1, "test"),
    );
    assert_eq!(
        a.push(batch(b'a', &[1, 2, 3, 4, 5, 6, 9, 11, 12]), false),
        Push::Queued
    );
    assert_eq!(a.push(batch(b'a', &[13, 14, 20]), false), Push::Queued);
    assert_eq!(
        b.push(batch(b'b', &[6, 7, 8, 10, 12, 13]), false),
        Push::Queued
    );
    let (hand_off, handle) = run_merge(&merge);
    drop((a, b, producer));
    let got = drain(&hand_off);
    handle.join().unwrap();
    let want: Vec<(u8, i64)> = [
        (b'a', 1),
        (b'a', 2),
        (b'a', 3),
        (b'a', 4),
        (b'a', 5),
        (b'a', 6),
        (b'b', 6),
        (b'b', 7),
        (b'b', 8),
        (b'a', 9),
        (b'b', 10),
        (b'a', 11),
        (b'a', 12),
        (b'b', 12),
        (b'a', 13),
        (b'b', 13),
        (b'a', 14),
        (b'a', 20),
    ]
    .to_vec();
    assert_eq!(got, want);
}
