// With the `zeek` feature (default; the broker turns it off): generates the C++ side of
// the cxx bridge (header and glue) and compiles the glue into this crate, so
// the static library carries everything the shim needs. The header lands in
// $CARGO_TARGET_DIR/cxxbridge/, where CMake looks.
fn main() {
    #[cfg(feature = "zeek")]
    cxx_build::bridge("src/ffi.rs")
        .std("c++17")
        .compile("pcapovertcp-bridge");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    ipv6_loopback();
}

/// `cfg(ipv6_loopback)` when this machine can bind [::1] (a container
/// without IPv6 cannot): the IPv6 tests are ignored otherwise.
fn ipv6_loopback() {
    println!("cargo::rustc-check-cfg=cfg(ipv6_loopback)");
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        println!("cargo:rustc-cfg=ipv6_loopback");
    }
}
