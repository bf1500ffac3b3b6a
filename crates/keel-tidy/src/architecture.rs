//! Rule `architecture-map`: every large source file is on the map.
//!
//! A `.rs` file under `crates/` (outside `target/`) with more than 400 lines holds a part of the
//! system worth knowing about, so ARCHITECTURE.md must name it. A file counts as named when
//! ARCHITECTURE.md contains, as a whole path (not as the tail of a longer one):
//! - anywhere: its path from the repository root or from `crates/`
//!   (`crates/keel-index/src/hnsw.rs`, `keel-index/src/hnsw.rs`);
//! - in its crate's section (from a heading that names `crates/<crate>` to the next heading):
//!   its path in the crate (`src/hnsw.rs`, `tests/it/main.rs`) or, for a file under `src/`, its
//!   path under `src/` (`hnsw.rs`, `cmd/run.rs`), which is how the codemap names files today.
//!
//! A `mod.rs` may also be named by its folder with a trailing slash (`kernels/`).
//!
//! To fix: say in the crate's section what the file holds, by one of those names; or split the
//! file so that each part is small enough to need no entry.

use crate::tree;
use crate::violation::Violation;
use std::path::Path;

/// The rule's name.
pub const RULE: &str = "architecture-map";

/// Files with more lines than this must be named in ARCHITECTURE.md.
pub const LIMIT: usize = 400;

/// Checks that every large file under `crates/` is named in `<root>/ARCHITECTURE.md`.
pub fn check(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    let map = match tree::read(root, Path::new("ARCHITECTURE.md"), RULE) {
        Ok(m) => m,
        Err(v) => return vec![v],
    };
    for c in tree::crates(root, RULE, &mut out) {
        let section = crate_sections(&map, &c.name);
        for rel in tree::rust_files(root, &c.dir, RULE, &mut out) {
            let lines = match tree::read(root, &rel, RULE) {
                Ok(text) => text.lines().count(),
                Err(v) => {
                    out.push(v);
                    continue;
                }
            };
            let in_crate = tree::slash(rel.strip_prefix(&c.dir).unwrap_or(&rel));
            if lines <= LIMIT || is_named(&map, &section, &c.name, &in_crate) {
                continue;
            }
            let under_src = in_crate.strip_prefix("src/").map(|s| format!(" or `{s}`")).unwrap_or_default();
            out.push(Violation::new(
                RULE,
                &rel,
                1,
                format!(
                    "{lines} lines (over {LIMIT}) and ARCHITECTURE.md does not name this file: say what it holds \
                     in the `crates/{name}` section, calling it `{in_crate}`{under_src}, or anywhere as \
                     `{name}/{in_crate}`; or split it",
                    name = c.name
                ),
            ));
        }
    }
    out
}

/// Whether `map` names the file `in_crate` (its path inside crate `krate`).
fn is_named(map: &str, section: &str, krate: &str, in_crate: &str) -> bool {
    let mut anywhere = vec![format!("crates/{krate}/{in_crate}"), format!("{krate}/{in_crate}")];
    let mut local = vec![in_crate.to_string()];
    local.extend(in_crate.strip_prefix("src/").map(str::to_string));
    if let Some(folder) = in_crate.strip_suffix("mod.rs") {
        anywhere.push(format!("crates/{krate}/{folder}"));
        anywhere.push(format!("{krate}/{folder}"));
        local.push(folder.to_string());
        local.extend(folder.strip_prefix("src/").filter(|f| !f.is_empty()).map(str::to_string));
    }
    anywhere.iter().any(|n| mentions(map, n)) || local.iter().any(|n| mentions(section, n))
}

/// The text of the sections whose heading names `crates/<krate>`, joined.
fn crate_sections(map: &str, krate: &str) -> String {
    let heading = format!("crates/{krate}");
    let mut out = String::new();
    let (mut fenced, mut inside) = (false, false);
    for line in map.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            inside = mentions(line, &heading);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Whether `text` contains `path` as a whole path: not preceded by a path character and not
/// followed by one (a sentence's full stop after it is fine).
fn mentions(text: &str, path: &str) -> bool {
    let b = text.as_bytes();
    let part = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    text.match_indices(path).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| b[i]);
        let end = at + path.len();
        let after = b.get(end).copied();
        let left = !before.is_some_and(|c| part(c) || c == b'/' || c == b'.');
        let right = match after {
            None => true,
            Some(b'.') => !b.get(end + 1).is_some_and(|&c| part(c)),
            Some(c) => !(part(c) || (c == b'/' && !path.ends_with('/'))),
        };
        left && right
    })
}
