//! Fingerprints the workspace's source code for `keel run`'s step keys: a step computed by one
//! build of Keel is redone by a build whose code differs (KEEL_CODE_HASH), not only by another
//! version number. FNV-1a (keel-core's, a build-dependency) over every `.rs`, `.sql` and
//! `Cargo.toml` under crates/, in path order.

use std::path::{Path, PathBuf};

use keel_core::Fnv1a;

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
    let mut h = Fnv1a::new();
    for f in &files {
        let rel = f.strip_prefix(&crates).unwrap_or(f);
        h.write(rel.to_string_lossy().as_bytes()).write(&[0]).write(&std::fs::read(f).unwrap_or_default()).write(&[0]);
    }
    let h = h.finish();
    println!("cargo:rustc-env=KEEL_CODE_HASH={h:016x}");
    println!("cargo:rerun-if-changed={}", crates.display());
}
