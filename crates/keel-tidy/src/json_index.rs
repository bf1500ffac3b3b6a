//! Rule `json-indexing`: the binary reads step outputs and version metrics through types, not
//! by indexing a `serde_json::Value` with a field name.
//!
//! `metrics["gate"]` on a `serde_json::Value` returns `Null` for a missing or renamed field,
//! so a writer that changes a name breaks its readers without a compile error or a test
//! failure. In `crates/keel/src/**` this rule flags every index expression `ident["name"]`
//! (a lowercase `[a-z_]+` string literal in brackets, in code) where `ident` is named like a
//! step output or a version's metrics: one of its `_`-separated parts is `metrics`, `output`,
//! `trained`, `evaluated`, `gated`, `registered`, `ingested`, `embedded` or `details` (or one
//! of those plus `s`), e.g. `metrics`, `m.metrics`, `prev_metrics`, `trained`, `outputs`.
//!
//! It is a pattern check, not type checking: a typed map indexed the same way is flagged too,
//! and a `Value` bound to another name (`let sizes = &m.metrics["split_sizes"]; sizes["train"]`)
//! is only caught at its first index. Comments and strings are skipped.
//!
//! To fix: define (or reuse) a serde struct for the object, shared by the code that writes it
//! and the code that reads it, deserialize once, and use its fields.

use crate::lex::Lexed;
use crate::tree;
use crate::violation::Violation;
use std::path::Path;

/// The rule's name.
pub const RULE: &str = "json-indexing";

const NAMES: &[&str] =
    &["metrics", "output", "trained", "evaluated", "gated", "registered", "ingested", "embedded", "details"];

/// Checks `crates/keel/src/**` for `ident["field"]` on step outputs and metrics.
pub fn check(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    for rel in tree::rust_files(root, Path::new("crates/keel/src"), RULE, &mut out) {
        match tree::read(root, &rel, RULE) {
            Ok(text) => check_file(&rel, &text, &mut out),
            Err(v) => out.push(v),
        }
    }
    out
}

fn check_file(rel: &Path, text: &str, out: &mut Vec<Violation>) {
    let lexed = Lexed::new(text);
    let (code, with_literals) = (lexed.code.as_bytes(), lexed.code_and_literals.as_bytes());
    for (at, _) in lexed.code_and_literals.match_indices("[\"") {
        // The bracket must be code (not inside a string), the key a lowercase literal.
        if code[at] != b'[' {
            continue;
        }
        let key_len = with_literals[at + 2..].iter().take_while(|c| c.is_ascii_lowercase() || **c == b'_').count();
        let close = at + 2 + key_len;
        if key_len == 0 || !with_literals[close..].starts_with(b"\"]") || code.get(close + 1) != Some(&b']') {
            continue;
        }
        let start = code[..at].iter().rposition(|&c| !(c.is_ascii_alphanumeric() || c == b'_')).map_or(0, |p| p + 1);
        let ident = &lexed.code[start..at];
        if !named_like(ident) {
            continue;
        }
        let key = &lexed.code_and_literals[at + 2..close];
        out.push(Violation::new(
            RULE,
            rel,
            lexed.line_of(at),
            format!(
                "`{ident}[\"{key}\"]` reads a step output or a version's metrics from a serde_json::Value by \
                 name, which gives null without an error when the field is missing or renamed: deserialize it \
                 into a serde struct shared with the code that writes it, and read the field"
            ),
        ));
    }
}

fn named_like(ident: &str) -> bool {
    ident.split('_').any(|part| NAMES.contains(&part) || part.strip_suffix('s').is_some_and(|p| NAMES.contains(&p)))
}
