//! One list of options: every `PcapOverTcp::` option is declared in six
//! places (scripts/init.zeek with its default, the bif, the bridge's
//! `Options`, the shim that fills it, the zeekctl plugin and the table of
//! docs/options.md). This test fails when they disagree on a name, or when
//! that table states another default than init.zeek.

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let (_, rest) = text
        .split_once(start)
        .unwrap_or_else(|| panic!("no {start:?}"));
    rest.split_once(end).map_or(rest, |(body, _)| body)
}

/// init.zeek: `const NAME[: TYPE] = DEFAULT &redef;`, as (name, default).
fn init_zeek() -> Vec<(String, String)> {
    read("scripts/init.zeek")
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("const "))
        .filter_map(|l| {
            let (decl, rest) = l.split_once(" = ")?;
            let default = rest.strip_suffix(" &redef;")?;
            let name = decl.split(':').next()?.trim();
            Some((name.to_string(), default.trim().to_string()))
        })
        .collect()
}

/// The bif's `const NAME: TYPE;`.
fn bif() -> BTreeSet<String> {
    read("cpp/pcapovertcp.bif")
        .lines()
        .filter_map(|l| l.strip_prefix("const "))
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect()
}

/// The shim: `options.NAME = BifConst::PcapOverTcp::NAME` and the options
/// read by name (`find_const("PcapOverTcp::NAME")`).
fn shim() -> BTreeSet<String> {
    let text = read("cpp/PcapOverTcpSource.cc");
    let mut names = BTreeSet::new();
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("options.") {
            if let Some((name, value)) = rest.split_once(" = ") {
                if value.starts_with("BifConst::PcapOverTcp::") {
                    names.insert(name.to_string());
                }
            }
        }
        if let Some((_, rest)) = l.split_once("find_const") {
            if let Some((_, rest)) = rest.split_once("\"PcapOverTcp::") {
                if let Some((name, _)) = rest.split_once('"') {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

/// The bridge's `struct Options` fields.
fn bridge() -> BTreeSet<String> {
    between(&read("src/ffi.rs"), "struct Options {", "}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect()
}

/// zeekctl/pcapovertcp.py's `OPTIONS = { "NAME": "KIND", ... }`.
fn zeekctl() -> BTreeSet<String> {
    between(&read("zeekctl/pcapovertcp.py"), "OPTIONS = {", "}")
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split_once('"').map(|(n, _)| n.to_string()))
        .collect()
}

/// docs/options.md's table: each row's names and its default.
fn readme() -> Vec<(Vec<String>, String)> {
    let doc = read("docs/options.md");
    between(&doc, "| option | default | meaning |", "\n\n")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let names = cells[1]
                .split(',')
                .map(|n| {
                    let n = n.trim().trim_matches('`');
                    n.strip_prefix("PcapOverTcp::").unwrap_or(n).to_string()
                })
                .collect();
            (names, cells[2].trim_matches('`').to_string())
        })
        .collect()
}

#[test]
fn every_place_that_declares_options_names_the_same_ones() {
    let init: BTreeSet<String> = init_zeek().into_iter().map(|(n, _)| n).collect();
    assert!(init.len() >= 20, "init.zeek's options: {init:?}");
    // Sets and the enum are no BIF constants: the shim reads them by name.
    let by_name: BTreeSet<String> = ["allowed_senders", "share_by", "tls_allowed_names"]
        .map(String::from)
        .into();
    let bif_and_by_name: BTreeSet<String> = bif().union(&by_name).cloned().collect();
    let readme: BTreeSet<String> = readme().into_iter().flat_map(|(n, _)| n).collect();
    for (place, names) in [
        (
            "cpp/pcapovertcp.bif (+ the shim's by-name reads)",
            bif_and_by_name,
        ),
        ("cpp/PcapOverTcpSource.cc", shim()),
        ("src/ffi.rs's Options", bridge()),
        ("zeekctl/pcapovertcp.py", zeekctl()),
        ("docs/options.md's options table", readme),
    ] {
        let missing: Vec<_> = init.difference(&names).collect();
        let extra: Vec<_> = names.difference(&init).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{place} disagrees with scripts/init.zeek: missing {missing:?}, not in init.zeek {extra:?}"
        );
    }
}

#[test]
fn the_readme_states_init_zeeks_defaults() {
    let init = init_zeek();
    for (names, default) in readme() {
        for name in names {
            let (_, want) = init.iter().find(|(n, _)| *n == name).unwrap();
            // The enum's default is its bare name in init.zeek.
            let got = default.strip_prefix("PcapOverTcp::").unwrap_or(&default);
            assert_eq!(
                got, want,
                "docs/options.md gives PcapOverTcp::{name} the default {default}, init.zeek {want}"
            );
        }
    }
}
