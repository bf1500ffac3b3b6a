//! Fingerprints the workspace's source code for `keel run`'s step keys: a step computed by one
//! build of Keel is redone by a build whose code differs (KEEL_CODE_HASH), not only by another
//! version number. FNV-1a over every `.rs`, `.sql` and `Cargo.toml` under crates/, in path order.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs" || x == "sql" || x == "toml") {
            out.push(p);
        }
    }
}

fn main() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    walk(&crates, &mut files);
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let rel = f.strip_prefix(&crates).unwrap_or(f);
        for b in rel.to_string_lossy().bytes().chain([0]).chain(std::fs::read(f).unwrap_or_default()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=KEEL_CODE_HASH={h:016x}");
    println!("cargo:rerun-if-changed={}", crates.display());
}
