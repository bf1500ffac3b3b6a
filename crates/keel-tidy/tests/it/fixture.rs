//! Small repository trees in a temporary folder: a clean one that keeps every rule, which
//! each test then breaks in one way.

use keel_tidy::Violation;
use std::path::Path;

pub struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    /// An empty folder.
    pub fn empty() -> Tree {
        Tree { dir: tempfile::tempdir().unwrap() }
    }

    /// A small workspace laid out like Keel's that keeps every rule.
    pub fn clean() -> Tree {
        let t = Tree::empty();
        t.write("Cargo.toml", ROOT_MANIFEST);
        t.write("ARCHITECTURE.md", ARCHITECTURE);
        t.manifest("keel-core", "serde.workspace = true\n");
        t.write("crates/keel-core/src/lib.rs", CORE_LIB);
        t.manifest("keel-data", "keel-core.workspace = true\n");
        t.write("crates/keel-data/src/lib.rs", "//! Reads files.\n\npub fn read(p: &str) -> std::io::Result<String> {\n    std::fs::read_to_string(p)\n}\n");
        t.manifest("keel-store", "keel-core.workspace = true\nsqlx.workspace = true\ntokio.workspace = true\nobject_store.workspace = true\n");
        t.write("crates/keel-store/src/lib.rs", "//! The store.\n\npub mod db;\npub use db::Db;\n");
        t.write(
            "crates/keel-store/src/db.rs",
            "pub struct Db;\n\nimpl Db {\n    pub fn open() -> Db {\n        Db\n    }\n}\n",
        );
        t.manifest("keel-server", "keel-store.workspace = true\naxum.workspace = true\ntokio.workspace = true\n");
        t.write("crates/keel-server/src/lib.rs", "//! HTTP.\n\npub fn serve() {}\n");
        t.manifest("keel-embed", "keel-core.workspace = true\nhf-hub.workspace = true\n");
        t.write("crates/keel-embed/src/lib.rs", "mod kernels;\n");
        t.write("crates/keel-embed/src/kernels/mod.rs", &kernel_module());
        t.manifest(
            "keel-train",
            "keel-core.workspace = true\n\n[dev-dependencies]\ntokio.workspace = true\ntempfile = \"3\"\n",
        );
        t.write("crates/keel-train/src/lib.rs", TRAIN_LIB);
        t.write("crates/keel-train/src/kernel.rs", TRAIN_KERNEL);
        t.write("crates/keel-train/src/head.rs", &function("fit", 100));
        t.write("crates/keel-train/src/config.rs", "pub struct Config;\n");
        t.write(
            "crates/keel-train/tests/it/main.rs",
            "use std::fs;\n\n#[test]\nfn reads() {\n    fs::read(\"x\").ok();\n}\n",
        );
        t.manifest("keel-index", "keel-core.workspace = true\n");
        t.write("crates/keel-index/src/lib.rs", "pub mod hnsw;\n");
        t.write("crates/keel-index/src/hnsw.rs", &lines("// graph", 450));
        t.manifest("keel", "keel-server.workspace = true\nkeel-store.workspace = true\nclap.workspace = true\n");
        t.write("crates/keel/src/main.rs", BINARY_MAIN);
        t
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `rel`, creating folders.
    pub fn write(&self, rel: &str, text: &str) -> &Tree {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    /// Writes `crates/<name>/Cargo.toml` with `deps` as its `[dependencies]`.
    pub fn manifest(&self, name: &str, deps: &str) -> &Tree {
        let text = format!(
            "[package]\nname = \"{name}\"\nversion.workspace = true\nedition.workspace = true\n\n\
             [dependencies]\n{deps}\n[lints]\nworkspace = true\n"
        );
        self.write(&format!("crates/{name}/Cargo.toml"), &text)
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join(rel)).unwrap();
    }
}

/// `(file, line)` of each violation, sorted, for comparing with what a test expects.
pub fn places(violations: &[Violation]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> =
        violations.iter().map(|v| (v.file.to_string_lossy().replace('\\', "/"), v.line)).collect();
    out.sort();
    out
}

/// `(file, line)` pairs from literals.
pub fn at(expected: &[(&str, usize)]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = expected.iter().map(|(f, l)| (f.to_string(), *l)).collect();
    out.sort();
    out
}

/// `n` lines of `line`.
pub fn lines(line: &str, n: usize) -> String {
    format!("{line}\n").repeat(n)
}

/// A function `name` that spans exactly `n` lines from `fn` to its closing brace.
pub fn function(name: &str, n: usize) -> String {
    assert!(n >= 2);
    format!("pub fn {name}() -> u32 {{\n    let mut x = 0;\n{}    x\n}}\n", "    x += 1;\n".repeat(n - 4))
}

/// keel-embed's kernels: long, many arguments and `unsafe`, all allowed there.
fn kernel_module() -> String {
    let mut s = String::from(
        "#![allow(unsafe_code)]\n\n/// Adds.\n///\n/// # Safety\n///\n/// `p` points at 2 floats.\n\
         #[allow(clippy::too_many_arguments)]\n#[inline]\npub unsafe fn add(p: *const f32, a: u8, b: u8, c: u8, \
         d: u8, e: u8, f: u8, g: u8) -> f32 {\n    // SAFETY: the caller guarantees two floats at `p`.\n    \
         unsafe { *p + *p.add(1) }\n}\n\n",
    );
    s.push_str(&function("long_kernel", 150));
    s.push_str(&lines("// more kernel", 800));
    s
}

const ROOT_MANIFEST: &str = r#"[workspace]
members = ["crates/*"]

[workspace.dependencies]
keel-core = { path = "crates/keel-core" }
keel-store = { path = "crates/keel-store" }
keel-server = { path = "crates/keel-server" }
serde = "1"
sqlx = "0.9"
tokio = "1"
object_store = "0.14"
axum = "0.8"
hf-hub = "0.4"
clap = "4"
"#;

const ARCHITECTURE: &str = "# Architecture

## Codemap

### `crates/keel-index`: documents to hits
`hnsw.rs` is the graph.

### `crates/keel-embed`: texts to vectors
`kernels/` is the only `unsafe`.
";

/// keel-core: no IO, but IO named in comments, strings and test modules, and literals that a
/// careless lexer would misread.
const CORE_LIB: &str = r####"//! The nouns. No `std::fs`, no `unsafe { }`.

/// Reads nothing: "std::fs" and `File::open` here are words.
pub const NOTE: &str = "std::fs::read and unsafe { } and File::open";
pub const RAW: &str = r#"a "quoted" std::net unsafe { } "#;
pub const QUOTE: char = '"';
pub const APOSTROPHE: char = '\'';
pub const BYTES: &[u8] = br##"unsafe { "# }"##;

pub fn longest<'a>(a: &'a str, b: &'a str) -> &'a str {
    /* a block /* nested unsafe { */ comment */
    'outer: for _ in 0..1 {
        break 'outer;
    }
    if a.len() >= b.len() { a } else { b }
}

#[cfg(test)]
mod tests {
    use std::fs;

    #[test]
    fn reads() {
        fs::read("x").ok();
    }
}
"####;

const TRAIN_LIB: &str = "//! Training.

mod config;
mod head;
mod kernel;

pub use config::Config;

pub fn fit() -> u32 {
    head::fit() + kernel::sum(&[1.0, 2.0]) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits() {
        let _ = fit();
    }
}
";

const TRAIN_KERNEL: &str = "use crate::Config;

#[allow(unsafe_code)]
pub(crate) fn sum(x: &[f64; 2]) -> f64 {
    let _ = Config;
    // SAFETY: `x` has two elements, so both reads are in bounds.
    unsafe { *x.get_unchecked(0) + *x.get_unchecked(1) }
}

// SAFETY: `Wrapper` holds only plain data.
unsafe impl Send for Wrapper {}
pub struct Wrapper(*const f64);
";

const BINARY_MAIN: &str = r#"//! The binary.

#[derive(serde::Deserialize)]
struct Metrics {
    gate: String,
}

fn main() {
    let sizes = serde_json::json!({"train": 1});
    let metrics: Metrics = serde_json::from_str("{}").unwrap();
    println!("{} {}", sizes["train"], metrics.gate);
    // metrics["gate"] in a comment is fine
    println!("metrics[\"gate\"]");
}
"#;
