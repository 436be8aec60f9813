#![no_main]
//! The pcap parser on arbitrary bytes after a valid pcap magic.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check(&[0xd4, 0xc3, 0xb2, 0xa1], data);
});
