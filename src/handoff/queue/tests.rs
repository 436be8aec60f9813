use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use super::*;

/// A batch whose cost is exactly `len` bytes (its one record included).
fn batch(tag: u8, len: usize) -> Batch {
    let len = len.max(RECORD) - RECORD;
    let records = vec![Record {
        offset: 0,
        caplen: len as u32,
        wirelen: len as u32,
        ts_sec: i64::from(tag),
        ts_nsec: 0,
        dlt: 1,
        interface: 0,
    }];
    Batch::new(Bytes::from(vec![tag; len]), records)
}

const RECORD: usize = std::mem::size_of::<Record>();

#[test]
fn an_empty_hand_off_reports_empty_and_is_not_readable() {
    let hand_off = HandOff::new(1024).unwrap();
    assert!(matches!(hand_off.pop(0), Pop::Empty));
    assert!(!hand_off.wake_is_signalled());
}

#[test]
fn push_wakes_a_waiting_consumer_until_it_takes_the_batch() {
    let hand_off = HandOff::new(1024).unwrap();
    assert!(matches!(hand_off.pop(0), Pop::Empty));
    assert_eq!(hand_off.push(batch(1, 100), false), Push::Queued);
    assert!(hand_off.wake_is_signalled());
    assert_eq!(hand_off.push(batch(2, 100), false), Push::Queued);
    let Pop::Batch(b) = hand_off.pop(0) else {
        panic!("expected a batch")
    };
    assert_eq!(hand_off.used(), 200);
    // Quiet while the consumer works through what it has: it asks again
    // without waiting.
    assert!(!hand_off.wake_is_signalled());
    assert_eq!(hand_off.push(batch(3, 100), false), Push::Queued);
    assert!(
        !hand_off.wake_is_signalled(),
        "a busy consumer is not woken"
    );
    let Pop::Batch(c) = hand_off.pop(b.cost()) else {
        panic!("expected the second batch")
    };
    let Pop::Batch(d) = hand_off.pop(c.cost()) else {
        panic!("expected the third batch")
    };
    assert!(matches!(hand_off.pop(d.cost()), Pop::Empty));
    assert_eq!(hand_off.used(), 0);
    assert!(!hand_off.wake_is_signalled());
}

#[test]
fn the_end_is_seen_after_every_batch() {
    let hand_off = HandOff::new(1024).unwrap();
    hand_off.push(batch(1, 100), false);
    hand_off.push(batch(2, 100), false);
    hand_off.end();
    let Pop::Batch(a) = hand_off.pop(0) else {
        panic!()
    };
    let Pop::Batch(b) = hand_off.pop(a.cost()) else {
        panic!()
    };
    assert_eq!(b.parts[0].bytes[0], 2);
    assert!(matches!(hand_off.pop(b.cost()), Pop::Ended));
}

#[test]
fn the_end_wakes_a_waiting_consumer_and_stays_readable() {
    let hand_off = HandOff::new(1024).unwrap();
    assert!(matches!(hand_off.pop(0), Pop::Empty));
    hand_off.end();
    assert!(hand_off.wake_is_signalled(), "the end must wake Zeek");
    assert!(matches!(hand_off.pop(0), Pop::Ended));
    assert!(
        hand_off.wake_is_signalled(),
        "and keep it coming until it closes"
    );
}

#[test]
fn a_full_hand_off_blocks_the_producer_until_space_is_released() {
    let hand_off = Arc::new(HandOff::new(1000).unwrap());
    assert_eq!(hand_off.push(batch(1, 600), false), Push::Queued);
    let pushed = Arc::new(AtomicBool::new(false));
    let producer = {
        let (hand_off, pushed) = (hand_off.clone(), pushed.clone());
        thread::spawn(move || {
            let ok = hand_off.push(batch(2, 600), false) == Push::Queued;
            pushed.store(true, Ordering::SeqCst);
            ok
        })
    };
    // The consumer takes the first batch but still holds it: no space yet.
    let Pop::Batch(first) = hand_off.pop(0) else {
        panic!()
    };
    // Wait until the producer is parked on the condition variable.
    while !hand_off.lock().producer_waiting {
        thread::yield_now();
    }
    assert!(!pushed.load(Ordering::SeqCst));
    assert_eq!(hand_off.used(), 600);
    // Releasing the first batch lets the second in.
    let mut release = first.cost();
    let second = loop {
        match hand_off.pop(release) {
            Pop::Batch(b) => break b,
            Pop::Empty => thread::yield_now(),
            Pop::Ended => panic!("the producer did not finish"),
        }
        release = 0;
    };
    assert!(producer.join().unwrap());
    assert_eq!(second.parts[0].bytes[0], 2);
    assert_eq!(hand_off.used(), 600);
}

#[test]
fn oversized_batch_passes_an_empty_hand_off() {
    let hand_off = HandOff::new(100).unwrap();
    assert_eq!(hand_off.push(batch(1, 500), false), Push::Queued);
    assert_eq!(hand_off.used(), 500);
}

#[test]
fn close_releases_a_blocked_producer() {
    let hand_off = Arc::new(HandOff::new(100).unwrap());
    hand_off.push(batch(1, 100), false);
    let producer = {
        let hand_off = hand_off.clone();
        thread::spawn(move || hand_off.push(batch(2, 100), false))
    };
    while !hand_off.lock().producer_waiting {
        thread::yield_now();
    }
    hand_off.close();
    assert_eq!(
        producer.join().unwrap(),
        Push::Closed,
        "push after close must report it"
    );
}

/// Stress: a producer and a consumer on two threads, small capacity, many
/// batches of varying size; order, content and the byte bound must hold.
#[test]
fn stress_order_content_and_bound() {
    const N: usize = 20_000;
    let hand_off = Arc::new(HandOff::new(8 * 1024).unwrap());
    let producer = {
        let hand_off = hand_off.clone();
        thread::spawn(move || {
            for i in 0..N {
                let len = 1 + (i * 7919) % 3000;
                assert_eq!(
                    hand_off.push(batch((i % 251) as u8, len), false),
                    Push::Queued
                );
            }
            hand_off.end();
        })
    };
    let mut held = 0;
    let mut seen = 0;
    loop {
        match hand_off.pop(held) {
            Pop::Batch(b) => {
                let len = 1 + (seen * 7919) % 3000;
                assert_eq!(b.cost(), len.max(RECORD));
                assert!(b.parts[0].bytes.iter().all(|&x| x == (seen % 251) as u8));
                assert!(hand_off.used() <= hand_off.capacity(), "bound exceeded");
                held = b.cost();
                seen += 1;
            }
            Pop::Empty => {
                held = 0;
                thread::yield_now();
            }
            Pop::Ended => break,
        }
    }
    producer.join().unwrap();
    assert_eq!(seen, N);
}

#[test]
fn drop_when_full_drops_whole_batches_without_waiting() {
    let hand_off = HandOff::new(1000).unwrap();
    assert_eq!(hand_off.push(batch(1, 600), true), Push::Queued);
    // Does not fit: dropped at once, with its packet count.
    assert_eq!(hand_off.push(batch(2, 600), true), Push::Dropped(1));
    assert_eq!(hand_off.used(), 600);
    let Pop::Batch(first) = hand_off.pop(0) else {
        panic!()
    };
    assert_eq!(first.parts[0].bytes[0], 1);
    // Released: the next one fits again.
    assert!(matches!(hand_off.pop(first.cost()), Pop::Empty));
    assert_eq!(hand_off.push(batch(3, 600), true), Push::Queued);
}

#[test]
fn repeated_empty_pops_leave_the_fd_clear_and_a_push_still_signals() {
    let hand_off = HandOff::new(1024).unwrap();
    for _ in 0..3 {
        assert!(matches!(hand_off.pop(0), Pop::Empty));
        assert!(!hand_off.wake_is_signalled());
    }
    assert_eq!(hand_off.push(batch(1, 100), false), Push::Queued);
    assert!(hand_off.wake_is_signalled());
    let Pop::Batch(b) = hand_off.pop(0) else {
        panic!("expected a batch")
    };
    for _ in 0..3 {
        assert!(matches!(hand_off.pop(0), Pop::Empty));
    }
    assert!(!hand_off.wake_is_signalled());
    assert!(matches!(hand_off.pop(b.cost()), Pop::Empty));
    assert!(!hand_off.wake_is_signalled());
    assert_eq!(hand_off.push(batch(2, 100), false), Push::Queued);
    assert!(hand_off.wake_is_signalled());
}

/// Stress for the wake protocol: the consumer only ever waits on the fd
/// after `Empty` (never retries on a timer), as Zeek does, while the
/// producer pushes with random pauses and then ends. A lost wake-up
/// shows as a poll that times out.
#[test]
fn stress_no_lost_wakeups() {
    const N: usize = 20_000;
    let hand_off = Arc::new(HandOff::new(64 * 1024).unwrap());
    let producer = {
        let hand_off = hand_off.clone();
        thread::spawn(move || {
            let mut x: u32 = 0x2545_f491;
            for i in 0..N {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                match x % 8 {
                    0 => thread::yield_now(),
                    1 => thread::sleep(std::time::Duration::from_micros(50)),
                    _ => {}
                }
                let len = 1 + (x as usize) % 2000;
                assert_eq!(
                    hand_off.push(batch((i % 251) as u8, len), false),
                    Push::Queued
                );
            }
            hand_off.end();
        })
    };
    let (mut held, mut seen, mut waits) = (0, 0, 0);
    loop {
        match hand_off.pop(held) {
            Pop::Batch(b) => {
                assert!(b.parts[0].bytes.iter().all(|&x| x == (seen % 251) as u8));
                held = b.cost();
                seen += 1;
            }
            Pop::Empty => {
                held = 0;
                waits += 1;
                assert!(
                    hand_off.wait(std::time::Duration::from_secs(10)),
                    "lost wake-up after {seen} batches"
                );
            }
            Pop::Ended => break,
        }
    }
    producer.join().unwrap();
    assert_eq!(seen, N);
    assert!(waits > 0, "the consumer never had to wait: nothing tested");
}

#[test]
fn releasing_more_than_is_used_does_not_wrap_to_full() {
    let hand_off = HandOff::new(1024).unwrap();
    assert_eq!(hand_off.push(batch(1, 100), false), Push::Queued);
    let Pop::Batch(_) = hand_off.pop(0) else {
        panic!("expected a batch")
    };
    // A bookkeeping slip must not turn into a hand-off that looks full for
    // ever.
    assert!(matches!(hand_off.pop(500), Pop::Empty));
    assert_eq!(hand_off.used(), 0);
    assert_eq!(hand_off.push(batch(2, 1000), false), Push::Queued);
}

#[test]
fn notify_wakes_only_a_waiting_consumer() {
    let hand_off = HandOff::new(1024).unwrap();
    // A consumer that has not yet found the hand-off empty is busy: not woken.
    assert_eq!(hand_off.push(batch(1, 100), false), Push::Queued);
    let Pop::Batch(b) = hand_off.pop(0) else {
        panic!("expected a batch")
    };
    hand_off.notify();
    assert!(!hand_off.wake_is_signalled());
    // Once it waits, a notification wakes it, and its next pop clears it.
    assert!(matches!(hand_off.pop(b.cost()), Pop::Empty));
    hand_off.notify();
    assert!(hand_off.wake_is_signalled());
    assert!(matches!(hand_off.pop(0), Pop::Empty));
    assert!(!hand_off.wake_is_signalled());
}

#[test]
fn only_time_spent_waiting_for_room_counts_as_backpressure() {
    let hand_off = Arc::new(HandOff::new(1000).unwrap());
    assert_eq!(hand_off.push(batch(1, 800), false), Push::Queued);
    assert_eq!(hand_off.take_waited(), std::time::Duration::ZERO);
    let pusher = {
        let hand_off = hand_off.clone();
        thread::spawn(move || hand_off.push(batch(2, 800), false))
    };
    thread::sleep(std::time::Duration::from_millis(50));
    let Pop::Batch(first) = hand_off.pop(0) else {
        panic!("the first batch is queued");
    };
    let _ = hand_off.pop(first.cost());
    assert_eq!(pusher.join().unwrap(), Push::Queued);
    let waited = hand_off.take_waited();
    assert!(waited >= std::time::Duration::from_millis(40), "{waited:?}");
    assert_eq!(hand_off.take_waited(), std::time::Duration::ZERO);
}
