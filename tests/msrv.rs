//! The declared minimum Rust is true: Cargo.toml's `rust-version` is at
//! least every locked dependency's own `rust-version` (the build uses
//! `--locked`, so a toolchain below any of them cannot build the plugin),
//! and the README and zkg.meta state the same version.
//!
//! Offline: `cargo metadata --locked --offline` reads the lock file and the
//! dependencies' manifests from the local registry, which any build has
//! already filled. `--filter-platform` keeps it to the packages built for
//! this host (the Windows-only crates are never downloaded on Linux).

use std::path::Path;
use std::process::Command;

/// A parsed JSON value; just enough for `cargo metadata`'s output.
#[derive(Debug)]
enum Json {
    Null,
    Bool,
    Number,
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A recursive-descent reader of one JSON document (RFC 8259), enough for
/// cargo's output; it panics on anything malformed, failing the test.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn skip_space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.skip_space();
        let hit = self.bytes.get(self.at) == Some(&b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) {
        assert!(
            self.eat(b),
            "cargo metadata: expected '{}' at byte {}",
            b as char,
            self.at
        );
    }

    fn value(&mut self) -> Json {
        self.skip_space();
        match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.skip_space();
                        let key = self.string();
                        self.expect(b':');
                        fields.push((key, self.value()));
                        if self.eat(b'}') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Object(fields)
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value());
                        if self.eat(b']') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Array(items)
            }
            Some(b'"') => Json::Str(self.string()),
            Some(_) => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
                {
                    self.at += 1;
                }
                match &self.bytes[start..self.at] {
                    b"null" => Json::Null,
                    b"true" | b"false" => Json::Bool,
                    n if !n.is_empty() => Json::Number,
                    _ => panic!("cargo metadata: unexpected byte at {start}"),
                }
            }
            None => panic!("cargo metadata: the output ended early"),
        }
    }

    fn string(&mut self) -> String {
        assert_eq!(self.bytes.get(self.at), Some(&b'"'), "at byte {}", self.at);
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.bytes.get(self.at).expect("an unterminated string");
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.bytes[self.at];
                    self.at += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            // Names and versions are ASCII; keep a marker
                            // for anything else (paths, descriptions).
                            self.at += 4;
                            out.push(b'?');
                        }
                        other => out.push(other),
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// "1.88" or "1.71.0" as (major, minor, patch).
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("not a Rust version: {text:?}"))
    });
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    assert!(parts.next().is_none(), "not a Rust version: {text:?}");
    v
}

fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {rustc} -vV: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host")
}

/// The root package's `rust-version`, and every other locked package's
/// (name, version, rust-version) where it declares one.
fn metadata(manifest_dir: &Path) -> (String, Vec<(String, String, String)>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").into());
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--format-version",
            "1",
            "--filter-platform",
            &host_triple(),
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata --locked --offline failed (run `cargo fetch --locked` once): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = Reader {
        bytes: &out.stdout,
        at: 0,
    }
    .value();
    let root = doc
        .get("resolve")
        .and_then(|r| r.get("root"))
        .and_then(Json::str)
        .expect("cargo metadata names the root package")
        .to_string();
    let Some(Json::Array(packages)) = doc.get("packages") else {
        panic!("cargo metadata lists no packages");
    };
    let mut ours = None;
    let mut deps = Vec::new();
    for p in packages {
        let field = |k| p.get(k).and_then(Json::str).map(str::to_string);
        let rust_version = field("rust_version");
        if field("id").as_deref() == Some(&root) {
            ours = rust_version;
        } else if let Some(rv) = rust_version {
            deps.push((field("name").unwrap(), field("version").unwrap(), rv));
        }
    }
    (ours.expect("Cargo.toml declares rust-version"), deps)
}

#[test]
fn the_declared_rust_version_covers_every_locked_dependency() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ours, deps) = metadata(dir);
    assert!(
        deps.len() >= 10,
        "too few dependencies declare a rust-version: {deps:?}"
    );
    let mut above: Vec<String> = deps
        .iter()
        .filter(|(_, _, rv)| version(rv) > version(&ours))
        .map(|(name, v, rv)| format!("{name} {v} needs Rust {rv}"))
        .collect();
    above.sort();
    assert!(
        above.is_empty(),
        "Cargo.toml's rust-version {ours} is below what locked dependencies declare: {}; \
         raise rust-version (and the README's and zkg.meta's) to their maximum",
        above.join(", ")
    );
}

#[test]
fn the_readme_and_zkg_meta_state_the_declared_rust_version() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ours, _) = metadata(dir);
    let (major, minor, patch) = version(&ours);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let phrase = format!("Rust {major}.{minor} or later");
    assert!(
        readme.contains(&phrase),
        "README.md must say \"{phrase}\" (Cargo.toml's rust-version is {ours})"
    );
    let meta = std::fs::read_to_string(dir.join("zkg.meta")).unwrap();
    let line = format!("cargo >={major}.{minor}.{patch}");
    assert!(
        meta.lines().any(|l| l.trim() == line),
        "zkg.meta's external_depends must list \"{line}\" (Cargo.toml's rust-version is {ours})"
    );
}
