#![no_main]
//! Interface-name parsing (`Spec::parse`, and `Endpoint::parse` for one
//! endpoint): never panics, and what it accepts displays back to a string
//! that parses to the same value. Accepted values keep the grammar's rules:
//! 1..=64 distinct endpoints, port 0 and an empty host only for the listen
//! schemes (port 0 binds any free port), a share I/N with 1 <= I <= N <=
//! 1024.

use libfuzzer_sys::fuzz_target;
use pcapovertcp::endpoint::{Endpoint, Spec, MAX_ENDPOINTS, MAX_SHARE_COUNT};

fn check_endpoint(e: &Endpoint) {
    assert!(e.port() != 0 || e.scheme().is_listen());
    assert!(e.scheme().is_listen() || !e.host().is_empty());
    let shown = e.to_string();
    assert!(!shown.contains([',', '?']), "{shown:?}");
    let again = Endpoint::parse(&shown).expect("its own display parses");
    assert_eq!(&again, e);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = Spec::parse(text) {
        assert!((1..=MAX_ENDPOINTS).contains(&spec.endpoints.len()));
        spec.endpoints.iter().for_each(check_endpoint);
        if let Some(share) = spec.share {
            assert!(share.index < share.count && share.count <= 1024);
            assert!(share.count <= MAX_SHARE_COUNT);
        }
        let again = Spec::parse(&spec.to_string()).expect("its own display parses");
        assert_eq!(again, spec);
    }
    if let Ok(e) = Endpoint::parse(text) {
        check_endpoint(&e);
        // One endpoint is also a SPEC of one.
        let spec = Spec::parse(text).expect("a single endpoint is a spec");
        assert_eq!(spec.endpoints, vec![e]);
        assert_eq!(spec.share, None);
    }
});
