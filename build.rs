// Generates the C++ side of the cxx bridge (header and glue) and compiles the
// glue into this crate, so the static library carries everything the shim
// needs. The header lands in $CARGO_TARGET_DIR/cxxbridge/, where CMake looks.
fn main() {
    cxx_build::bridge("src/ffi.rs")
        .std("c++17")
        .compile("pcapovertcp-bridge");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    wireshark_tools();
}

/// `cfg(wireshark)` when Wireshark's tshark and mergecap are on PATH at
/// build time: the tests that compare with them are ignored without them
/// (reported as ignored by `cargo test`, never as passed). Installed after
/// a build, they are seen once build.rs runs again (`touch build.rs`).
fn wireshark_tools() {
    println!("cargo::rustc-check-cfg=cfg(wireshark)");
    println!("cargo:rerun-if-env-changed=PATH");
    let find = |tool: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
    };
    if let (Some(tshark), Some(mergecap)) = (find("tshark"), find("mergecap")) {
        // Rebuilt if they go away (or are upgraded).
        println!("cargo:rerun-if-changed={}", tshark.display());
        println!("cargo:rerun-if-changed={}", mergecap.display());
        println!("cargo:rustc-cfg=wireshark");
    }
}
