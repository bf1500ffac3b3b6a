//! Rule `size`: files and functions stay small enough to read, outside the kernels.
//!
//! For every `.rs` file under `crates/` (outside `target/`) except the kernel modules
//! (`crates/keel-embed/src/kernels/`, keel-train's `src/kernel.rs` or `src/kernels/`), where
//! hand-unrolled SIMD code is long by nature:
//! - at most 800 lines per file;
//! - at most 100 lines per `fn`, counted from the line of the `fn` keyword to the line of its
//!   closing brace (found by brace matching on code, so braces in strings and comments do not
//!   count; a nested `fn` is counted on its own and inside its parent);
//! - no `allow(clippy::too_many_arguments)` (or `expect(…)`): clippy's limit of 7 stands.
//!
//! To fix: split a long file into modules by responsibility (and name the large ones in
//! ARCHITECTURE.md); cut a long function into named steps; group many arguments into a struct
//! that says what they are together (the options, or the context several functions share).

use crate::lex::{Lexed, Tok, Token, matching};
use crate::tree;
use crate::violation::Violation;
use std::path::Path;

/// The rule's name.
pub const RULE: &str = "size";

/// The most lines a file outside the kernels may have.
pub const FILE_LIMIT: usize = 800;

/// The most lines a function outside the kernels may have.
pub const FN_LIMIT: usize = 100;

/// Checks file length, function length and `too_many_arguments` allowances.
pub fn check(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    for rel in tree::all_rust_files(root, RULE, &mut out) {
        if tree::is_kernel(&rel) {
            continue;
        }
        match tree::read(root, &rel, RULE) {
            Ok(text) => check_file(&rel, &text, &mut out),
            Err(v) => out.push(v),
        }
    }
    out
}

fn check_file(rel: &Path, text: &str, out: &mut Vec<Violation>) {
    let lines = text.lines().count();
    if lines > FILE_LIMIT {
        out.push(Violation::new(
            RULE,
            rel,
            1,
            format!(
                "{lines} lines (over {FILE_LIMIT}): split the file into modules by responsibility, and name the \
                 large ones in ARCHITECTURE.md"
            ),
        ));
    }
    let lexed = Lexed::new(text);
    let toks = lexed.tokens();
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Ident("fn") => {
                let Some((name, end)) = fn_body_end(&toks, i) else { continue };
                let (first, last) = (lexed.line_of(t.at), lexed.line_of(toks[end].at));
                let n = last - first + 1;
                if n > FN_LIMIT {
                    out.push(Violation::new(
                        RULE,
                        rel,
                        first,
                        format!(
                            "fn `{name}` runs {n} lines (over {FN_LIMIT}, from `fn` to its closing brace): cut it \
                             into steps with names"
                        ),
                    ));
                }
            }
            Tok::Ident("too_many_arguments") if is_allowance(&toks, i) => out.push(Violation::new(
                RULE,
                rel,
                lexed.line_of(t.at),
                "`too_many_arguments` allowed outside the kernels: group the arguments into a struct that says \
                 what they are together (the options, or the context the functions share) instead of silencing \
                 the lint",
            )),
            _ => {}
        }
    }
}

/// For the `fn` keyword at `i`: the function's name and the index of its body's closing brace
/// (`None` for a `fn(…)` pointer type or a declaration without a body).
fn fn_body_end<'a>(toks: &[Token<'a>], i: usize) -> Option<(&'a str, usize)> {
    let Tok::Ident(name) = toks.get(i + 1)?.tok else { return None };
    // The body is the first `{` outside parentheses and brackets (`-> [u8; 4]` has a `;`).
    let mut depth = 0isize;
    for (j, t) in toks.iter().enumerate().skip(i + 2) {
        match t.tok {
            Tok::Punct(b'(' | b'[') => depth += 1,
            Tok::Punct(b')' | b']') => depth -= 1,
            Tok::Punct(b';') if depth == 0 => return None,
            Tok::Punct(b'{') if depth == 0 => return Some((name, matching(toks, j)?)),
            _ => {}
        }
    }
    None
}

/// Whether the `too_many_arguments` at `i` is inside an `allow(…)` or `expect(…)` attribute.
fn is_allowance(toks: &[Token<'_>], i: usize) -> bool {
    let mut depth = 0usize;
    for j in (0..i).rev() {
        match toks[j].tok {
            Tok::Punct(b')') => depth += 1,
            Tok::Punct(b'(') if depth > 0 => depth -= 1,
            Tok::Punct(b'(') => {
                return matches!(toks.get(j.wrapping_sub(1)).map(|t| t.tok), Some(Tok::Ident("allow" | "expect")));
            }
            Tok::Punct(b'[' | b']' | b';' | b'{' | b'}') => return false,
            _ => {}
        }
    }
    false
}
