//! The broker installs on a capture host that has Rust and a C compiler
//! but no Zeek, CMake or C++ compiler: `cargo install --path serve`. And
//! the workspace keeps its roles apart: the broker's crates are not the
//! plugin's, the plugin's C++ bridge is not the broker's.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    let serve = Path::new(env!("CARGO_MANIFEST_DIR"));
    serve.parent().expect("serve/ has a parent").to_path_buf()
}

/// The crate names `cargo tree` lists for `args` (normal and build
/// dependencies, each once).
fn tree(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "--prefix",
            "none",
            "--edges",
            "normal,build",
        ])
        .args(["--format", "{p}"])
        .args(args)
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_broker_builds_no_cpp_bridge_and_the_plugin_no_broker_crates() {
    let serve = tree(&["--package", "pcapovertcp-serve"]);
    assert!(serve.iter().any(|c| c == "env_logger"), "{serve:?}");
    for bridge in ["cxx", "cxx-build"] {
        assert!(
            !serve.iter().any(|c| c == bridge),
            "pcapovertcp-serve depends on {bridge}: {serve:?}"
        );
    }
    let plugin = tree(&["--package", "zeek-pcapovertcp", "--features", "zeek"]);
    assert!(plugin.iter().any(|c| c == "cxx"), "{plugin:?}");
    for broker in ["env_logger", "signal-hook", "clap"] {
        assert!(
            !plugin.iter().any(|c| c == broker),
            "the plugin's core depends on {broker}: {plugin:?}"
        );
    }
}

#[test]
fn cargo_install_path_serve_needs_no_zeek_cmake_or_cpp_compiler() {
    let dir = std::env::temp_dir().join(format!("pcapovertcp-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A C++ compiler, CMake or Zeek would be found through these: each one
    // fails if anything runs it.
    let status = Command::new(env!("CARGO"))
        .args([
            "install",
            "--locked",
            "--offline",
            "--debug",
            "--quiet",
            "--path",
        ])
        .arg(root().join("serve"))
        .arg("--root")
        .arg(&dir)
        // Kept between runs: the install's own build is a minute the first
        // time.
        .arg("--target-dir")
        .arg(root().join("target").join("install-test"))
        .env("CXX", "/bin/false")
        .env("CMAKE", "/bin/false")
        .env("ZEEK_DIST", "/nonexistent")
        .env("PATH", without_zeek_cmake_and_cpp())
        .status()
        .expect("cargo install runs");
    assert!(status.success(), "cargo install --path serve failed");
    let bin = dir.join("bin").join("pcapovertcp-serve");
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("it runs");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(shim_dir());
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("pcapovertcp-serve {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}

/// PATH with every directory that holds a C++ compiler, cmake or zeek
/// replaced by one that holds only the C compiler (ring, which TLS uses,
/// compiles C) and cargo's own tools.
fn without_zeek_cmake_and_cpp() -> std::ffi::OsString {
    let hidden = ["c++", "g++", "clang++", "cmake", "zeek", "zeek-config"];
    let shim = shim_dir();
    let _ = std::fs::create_dir_all(&shim);
    let mut dirs = vec![shim.clone()];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if hidden.iter().any(|tool| dir.join(tool).exists()) {
            // Keep what the build needs from it, without the rest.
            for tool in [
                "cc", "gcc", "ar", "ld", "as", "cargo", "rustc", "rustup", "git",
            ] {
                let from = dir.join(tool);
                if from.exists() && !shim.join(tool).exists() {
                    let _ = std::os::unix::fs::symlink(&from, shim.join(tool));
                }
            }
        } else {
            dirs.push(dir);
        }
    }
    std::env::join_paths(dirs).expect("PATH joins")
}

fn shim_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pcapovertcp-install-path-{}", std::process::id()))
}
