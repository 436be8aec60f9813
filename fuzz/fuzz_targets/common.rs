// Shared by the stream targets: parse the input whole and in two pieces (cut
// where the first byte says); the parser must never panic, must agree with
// itself however the bytes arrive, must only describe bytes it consumed, and
// must report a link type only once the stream's header is whole: never a
// placeholder (-1), never before a packet needs one, never changing.

use pcapovertcp::parse::{Limits, Record, StreamParser};

fn run(stream: &[u8], cut: usize) -> (Vec<(Record, Vec<u8>)>, Result<usize, ()>) {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut total = 0;
    let mut status = Ok(0);
    for piece in [&stream[..cut], &stream[cut..]] {
        pending.extend_from_slice(piece);
        let mut records = Vec::new();
        let before = p.link_type();
        let parsed = p.parse(&pending, &mut records);
        let after = p.link_type();
        assert_ne!(after, Some(-1), "a placeholder link type");
        if before.is_some() {
            assert_eq!(before, after, "the stream's link type changed");
        }
        if !records.is_empty() {
            assert!(after.is_some(), "packets before the link type is known");
        }
        match parsed {
            Ok(used) => {
                assert!(used <= pending.len());
                for r in records {
                    let end = r.offset + r.caplen as usize;
                    assert!(end <= used, "a record beyond the consumed bytes");
                    // Whole seconds are carried out of the fraction.
                    assert!(r.ts_nsec < 1_000_000_000, "a fraction of {} ns", r.ts_nsec);
                    out.push((Record { offset: 0, ..r }, pending[r.offset..end].to_vec()));
                }
                pending.drain(..used);
                total += used;
                status = Ok(total);
            }
            Err(_) => {
                for r in records {
                    let end = r.offset + r.caplen as usize;
                    assert!(end <= pending.len());
                    out.push((Record { offset: 0, ..r }, pending[r.offset..end].to_vec()));
                }
                return (out, Err(()));
            }
        }
    }
    (out, status)
}

/// Checks the parser on `data`, whose first byte picks the cut point and
/// whose rest, after `prefix`, is the stream.
pub fn check(prefix: &[u8], data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else { return };
    let mut stream = prefix.to_vec();
    stream.extend_from_slice(rest);
    let cut = (cut as usize * stream.len()) / 255;
    let (whole, whole_status) = run(&stream, stream.len());
    let (split, split_status) = run(&stream, cut);
    if whole_status.is_ok() && split_status.is_ok() {
        assert_eq!(whole, split, "the parse depends on where the stream was cut");
    }
}
