// Generates the C++ side of the cxx bridge (header and glue) and compiles the
// glue into this crate, so the static library carries everything the shim
// needs. The header lands in $CARGO_TARGET_DIR/cxxbridge/, where CMake looks.
fn main() {
    cxx_build::bridge("src/ffi.rs")
        .std("c++17")
        .compile("pcapovertcp-bridge");
    println!("cargo:rerun-if-changed=src/ffi.rs");
}
