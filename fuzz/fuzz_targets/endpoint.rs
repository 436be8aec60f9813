#![no_main]
//! Endpoint parsing: never panics, and what it accepts displays back to a
//! string that parses to the same endpoint.

use libfuzzer_sys::fuzz_target;
use pcapovertcp::endpoint::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(e) = Endpoint::parse(text) {
        assert!(e.port() != 0);
        assert!(!e.host().is_empty());
        let again = Endpoint::parse(&e.to_string()).expect("its own display parses");
        assert_eq!(again, e);
    }
});
