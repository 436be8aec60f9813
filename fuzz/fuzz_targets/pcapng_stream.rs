#![no_main]
//! The pcapng parser on arbitrary bytes after a section header block type.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check(&[0x0a, 0x0d, 0x0d, 0x0a], data);
});
