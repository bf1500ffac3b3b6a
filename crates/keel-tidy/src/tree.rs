//! Finding the crates and source files of a repository, and reading them.

use crate::violation::Violation;
use std::path::{Path, PathBuf};

/// A workspace member: a folder `crates/<name>` with a `Cargo.toml` (Keel names each folder
/// after its package).
pub(crate) struct Crate {
    pub name: String,
    /// `crates/<name>`, relative to the repository root.
    pub dir: PathBuf,
}

/// The crates under `<root>/crates`, sorted by name. A missing or unreadable folder is
/// reported as a violation of `rule`.
pub(crate) fn crates(root: &Path, rule: &'static str, errors: &mut Vec<Violation>) -> Vec<Crate> {
    let mut out: Vec<Crate> = list(root, Path::new("crates"), rule, errors)
        .into_iter()
        .filter(|rel| root.join(rel).join("Cargo.toml").is_file())
        .filter_map(|rel| Some(Crate { name: rel.file_name()?.to_str()?.to_string(), dir: rel }))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every `.rs` file under `rel_dir` (relative to `root`), recursively, sorted; `target/` and
/// hidden folders are skipped.
pub(crate) fn rust_files(root: &Path, rel_dir: &Path, rule: &'static str, errors: &mut Vec<Violation>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![rel_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if !root.join(&dir).is_dir() {
            continue;
        }
        for rel in list(root, &dir, rule, errors) {
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let full = root.join(&rel);
            if full.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(rel);
                }
            } else if name.ends_with(".rs") {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// The `.rs` files of every crate under `crates/`.
pub(crate) fn all_rust_files(root: &Path, rule: &'static str, errors: &mut Vec<Violation>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for c in crates(root, rule, errors) {
        out.extend(rust_files(root, &c.dir, rule, errors));
    }
    out
}

fn list(root: &Path, rel_dir: &Path, rule: &'static str, errors: &mut Vec<Violation>) -> Vec<PathBuf> {
    match std::fs::read_dir(root.join(rel_dir)) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| rel_dir.join(e.file_name())).collect(),
        Err(e) => {
            errors.push(Violation::new(rule, rel_dir, 1, format!("cannot list this folder: {e}")));
            Vec::new()
        }
    }
}

/// The text of `rel` (relative to `root`); an unreadable file is a violation of `rule`.
pub(crate) fn read(root: &Path, rel: &Path, rule: &'static str) -> Result<String, Violation> {
    std::fs::read_to_string(root.join(rel))
        .map_err(|e| Violation::new(rule, rel, 1, format!("cannot read this file: {e}")))
}

/// `rel` with `/` separators, as ARCHITECTURE.md and the messages write paths.
pub(crate) fn slash(rel: &Path) -> String {
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The kernel modules, the only places allowed `unsafe`, long files, long functions and many
/// arguments: `crates/keel-embed/src/kernels/` and keel-train's kernel module
/// (`crates/keel-train/src/kernel.rs`, or a `crates/keel-train/src/kernels/` folder).
pub(crate) fn is_kernel(rel: &Path) -> bool {
    let p = slash(rel);
    p.starts_with("crates/keel-embed/src/kernels/")
        || p == "crates/keel-train/src/kernel.rs"
        || p.starts_with("crates/keel-train/src/kernels/")
}

/// The places [`is_kernel`] accepts, for messages.
pub(crate) const KERNEL_PLACES: &str =
    "crates/keel-embed/src/kernels/ and keel-train's kernel module (src/kernel.rs or src/kernels/)";
