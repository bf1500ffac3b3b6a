//! Rule `unsafe`: Keel's `unsafe` code is confined to the kernels, and every use says why it
//! is sound.
//!
//! In `crates/*/src`:
//! - the keyword `unsafe` appears only in `crates/keel-embed/src/kernels/` and keel-train's
//!   kernel module (`src/kernel.rs`, or `src/kernels/`); everywhere else the workspace denies
//!   `unsafe_code` and a reviewer should not have to look;
//! - every `unsafe { … }` block, `unsafe impl` and `unsafe extern` block has a comment starting
//!   with `SAFETY` (`// SAFETY: …`, or `// SAFETY (whole body): …`) on one of the 3 lines above
//!   it (or a block of comment lines reaching into those 3 lines that starts with one), saying
//!   why each requirement of the unsafe operations holds there; one comment covers the block
//!   right below it, not every block further down;
//! - every `unsafe fn` and `unsafe trait` has such a comment or a `# Safety` section in its doc
//!   comment, saying what a caller must guarantee.
//!
//! Comments and string literals are skipped by the lexer, so prose about `unsafe` is free.
//! `unsafe fn(…)` pointer types and `#[unsafe(…)]` attributes need no comment but still count
//! as `unsafe` for the location rule.
//!
//! To fix: write the comment (what is guaranteed, and by whom), or move the code into a kernel
//! module behind a safe function that checks its preconditions (as `keel_train`'s `accumulate`
//! checks the CPU before calling an AVX function).

use crate::lex::{Lexed, Tok};
use crate::tree::{self, KERNEL_PLACES};
use crate::violation::Violation;
use std::path::Path;

/// The rule's name.
pub const RULE: &str = "unsafe";

/// How many lines above an `unsafe` its `// SAFETY:` comment may be.
const SAFETY_WINDOW: usize = 3;

/// Checks every `unsafe` in `crates/*/src`.
pub fn check(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in tree::crates(root, RULE, &mut out) {
        for rel in tree::rust_files(root, &c.dir.join("src"), RULE, &mut out) {
            match tree::read(root, &rel, RULE) {
                Ok(text) => check_file(&rel, &text, &mut out),
                Err(v) => out.push(v),
            }
        }
    }
    out
}

fn check_file(rel: &Path, text: &str, out: &mut Vec<Violation>) {
    let lexed = Lexed::new(text);
    let toks = lexed.tokens();
    let tok = |j: usize| toks.get(j).map(|t| t.tok);
    for (i, t) in toks.iter().enumerate() {
        if t.tok != Tok::Ident("unsafe") {
            continue;
        }
        let line = lexed.line_of(t.at);
        if !tree::is_kernel(rel) {
            out.push(Violation::new(
                RULE,
                rel,
                line,
                format!(
                    "`unsafe` outside the kernel modules: Keel's only unsafe code is in {KERNEL_PLACES}; write \
                     this in safe Rust, or move the unsafe part into a kernel module behind a safe function \
                     that checks its preconditions"
                ),
            ));
        }
        let commented = safety_comment_above(&lexed, line);
        let what = match (tok(i + 1), tok(i + 2), tok(i + 3)) {
            (Some(Tok::Punct(b'{')), ..) => {
                "`unsafe` block: say why each requirement of the unsafe operations \
                                             inside holds here"
            }
            (Some(Tok::Ident("impl")), ..) => "`unsafe impl`: say why the trait's contract holds for this type",
            (Some(Tok::Ident("extern")), Some(Tok::Punct(b'{')), _) => {
                "`unsafe extern` block: say why the declared signatures match the foreign code"
            }
            (Some(Tok::Ident("extern")), Some(Tok::Ident("fn")), Some(Tok::Ident(name)))
            | (Some(Tok::Ident("fn" | "trait")), Some(Tok::Ident(name)), _) => {
                if !commented && !safety_doc_above(&lexed, line) {
                    let kind = if tok(i + 1) == Some(Tok::Ident("trait")) { "trait" } else { "fn" };
                    out.push(Violation::new(
                        RULE,
                        rel,
                        line,
                        format!(
                            "`unsafe {kind} {name}` has neither a `# Safety` section in its doc comment nor a \
                             `// SAFETY:` comment on one of the {SAFETY_WINDOW} lines above: write down what a \
                             caller must guarantee"
                        ),
                    ));
                }
                continue;
            }
            _ => continue, // `unsafe fn(…)` pointer types and `#[unsafe(…)]` attributes
        };
        if !commented {
            out.push(Violation::new(
                RULE,
                rel,
                line,
                format!("{what}; write it in a `// SAFETY:` comment on one of the {SAFETY_WINDOW} lines above"),
            ));
        }
    }
}

/// Whether one of the lines just above `line` has a comment that starts with `SAFETY`, or
/// ends a block of comment lines that starts with one (a long `// SAFETY:` may begin further up).
fn safety_comment_above(lexed: &Lexed, line: usize) -> bool {
    let says_safety =
        |l: usize| lexed.comment_on(l).trim_start_matches(['/', '*', '!']).trim_start().starts_with("SAFETY");
    let comment_only = |l: usize| !lexed.comment_on(l).is_empty() && lexed.code_on(l).trim().is_empty();
    (line.saturating_sub(SAFETY_WINDOW).max(1)..line).any(|l| {
        if says_safety(l) {
            return true;
        }
        let mut first = l;
        while comment_only(first) && first > 1 && comment_only(first - 1) {
            first -= 1;
            if says_safety(first) {
                return true;
            }
        }
        false
    })
}

/// Whether the doc comment above the item on `line` (across its attributes) has a `# Safety`
/// heading.
fn safety_doc_above(lexed: &Lexed, line: usize) -> bool {
    let mut l = line;
    while l > 1 {
        l -= 1;
        let code = lexed.code_on(l).trim();
        let comment = lexed.comment_on(l);
        if code.is_empty() && !comment.is_empty() {
            let doc = comment.trim_start_matches(['/', '*', '!']).trim();
            if doc.starts_with("# Safety") {
                return true;
            }
        } else if !code.starts_with("#[") {
            return false;
        }
    }
    false
}
