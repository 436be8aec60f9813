// The tests' tools: a test whose tool is missing at build time is ignored
// (reported as ignored by `cargo test`, never as passed).
fn main() {
    wireshark_tools();
    openssl_command();
    tcpdump_command();
    zeek_command();
}

/// The directory on PATH holding `tool`, if any.
fn on_path(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// `cfg(openssl_cli)` when the `openssl` command is on PATH at build time:
/// the tests that make their certificates with it are ignored without it.
fn openssl_command() {
    println!("cargo::rustc-check-cfg=cfg(openssl_cli)");
    if let Some(openssl) = on_path("openssl") {
        println!("cargo:rerun-if-changed={}", openssl.display());
        println!("cargo:rustc-cfg=openssl_cli");
    }
}

/// `cfg(wireshark)` when Wireshark's tshark and mergecap are on PATH at
/// build time: the tests that compare with them are ignored without them
/// (reported as ignored by `cargo test`, never as passed). Installed after
/// a build, they are seen once build.rs runs again (`touch build.rs`).
fn wireshark_tools() {
    println!("cargo::rustc-check-cfg=cfg(wireshark)");
    println!("cargo:rerun-if-env-changed=PATH");
    if let (Some(tshark), Some(mergecap)) = (on_path("tshark"), on_path("mergecap")) {
        // Rebuilt if they go away (or are upgraded).
        println!("cargo:rerun-if-changed={}", tshark.display());
        println!("cargo:rerun-if-changed={}", mergecap.display());
        println!("cargo:rustc-cfg=wireshark");
    }
}

/// `cfg(tcpdump)` when tcpdump is on PATH at build time: the test that
/// reads the broker's standard output with it is ignored without it.
fn tcpdump_command() {
    println!("cargo::rustc-check-cfg=cfg(tcpdump)");
    if let Some(tcpdump) = on_path("tcpdump") {
        println!("cargo:rerun-if-changed={}", tcpdump.display());
        println!("cargo:rustc-cfg=tcpdump");
    }
}

/// `cfg(zeek)` when zeek is on PATH at build time: the test that reads the
/// broker's standard output with `zeek -r -` is ignored without it.
fn zeek_command() {
    println!("cargo::rustc-check-cfg=cfg(zeek)");
    if let Some(zeek) = on_path("zeek") {
        println!("cargo:rerun-if-changed={}", zeek.display());
        println!("cargo:rustc-cfg=zeek");
    }
}
