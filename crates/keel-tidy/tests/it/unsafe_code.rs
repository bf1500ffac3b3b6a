//! Rule `unsafe` on broken trees.

use crate::fixture::{Tree, at, places};
use keel_tidy::unsafe_code::check;

#[test]
fn unsafe_outside_the_kernels_fails_even_with_a_comment() {
    let t = Tree::clean();
    t.write(
        "crates/keel-index/src/hnsw.rs",
        "pub fn first(v: &[u32]) -> u32 {\n    // SAFETY: callers pass a non-empty slice.\n    unsafe { *v.get_unchecked(0) }\n}\n",
    );
    t.write("crates/keel-embed/src/simd/kernels.rs", "#[unsafe(no_mangle)]\npub extern \"C\" fn f() {}\n");
    let found = check(t.root());
    assert_eq!(
        places(&found),
        at(&[("crates/keel-index/src/hnsw.rs", 3), ("crates/keel-embed/src/simd/kernels.rs", 1)])
    );
    assert!(found.iter().all(|v| v.rule == "unsafe" && v.message.contains("outside the kernel modules")));
}

#[test]
fn an_unsafe_block_without_a_safety_comment_fails() {
    let t = Tree::clean();
    let kernel = "pub fn sum(x: &[f64; 2]) -> f64 {
    // SAFETY: four lines up is too far.
    let a = 1.0;
    let b = 2.0;
    let c = a + b;
    c + unsafe { *x.get_unchecked(0) }
}

pub fn first(x: &[f64; 2]) -> f64 {
    // Reads the first element.
    unsafe { *x.get_unchecked(0) }
}

pub fn second(x: &[f64; 2]) -> f64 {
    // SAFETY: three lines up is near enough.
    let y = 1.0;
    let z = 2.0;
    y + z + unsafe { *x.get_unchecked(1) }
}

pub fn third(x: &[f64; 2]) -> f64 {
    // SAFETY: a long comment may start further up
    // as long as it runs on
    // into the lines
    // just above the block.
    unsafe { *x.get_unchecked(1) }
}

pub fn fourth(x: &[f64; 2]) -> f64 {
    // SAFETY: one comment covers the block below it,
    let a = unsafe { *x.get_unchecked(0) };
    let b = 1.0;
    let c = 2.0;
    let d = 3.0;
    // not this one.
    a + b + c + d + unsafe { *x.get_unchecked(1) }
}
";
    t.write("crates/keel-train/src/kernel.rs", kernel);
    let found = check(t.root());
    let file = "crates/keel-train/src/kernel.rs";
    assert_eq!(places(&found), at(&[(file, 6), (file, 11), (file, 36)]));
    assert!(found.iter().all(|v| v.message.contains("`// SAFETY:` comment")), "{found:#?}");
}

#[test]
fn an_unsafe_fn_without_a_safety_section_fails() {
    let t = Tree::clean();
    let kernel = "/// Adds two floats.
///
/// # Safety
/// `p` points at two floats.
#[inline]
#[target_feature(enable = \"avx2\")]
pub unsafe fn documented(p: *const f32) -> f32 {
    // SAFETY: as the caller guarantees.
    unsafe { *p + *p.add(1) }
}

/// Adds two floats, but says nothing about what the caller must do.
#[inline]
pub(super) unsafe fn undocumented(p: *const f32) -> f32 {
    // SAFETY: as the caller guarantees.
    unsafe { *p + *p.add(1) }
}

unsafe trait Plain {}

struct Raw(*const u8);
unsafe impl Send for Raw {}

unsafe extern \"C\" {
    fn abs(x: i32) -> i32;
}

type Callback = unsafe extern \"C\" fn(i32) -> i32;
type Plainer = unsafe fn(i32);
";
    t.write("crates/keel-embed/src/kernels/avx2.rs", kernel);
    let found = check(t.root());
    let file = "crates/keel-embed/src/kernels/avx2.rs";
    assert_eq!(places(&found), at(&[(file, 14), (file, 19), (file, 22), (file, 24)]));
    assert!(found[0].message.contains("`unsafe fn undocumented`"), "{}", found[0].message);
    assert!(found[1].message.contains("`unsafe trait Plain`"), "{}", found[1].message);
    assert!(found[2].message.contains("`unsafe impl`"), "{}", found[2].message);
    assert!(found[3].message.contains("`unsafe extern` block"), "{}", found[3].message);
}

#[test]
fn unsafe_in_comments_and_literals_is_not_code_but_code_after_them_is() {
    let t = Tree::clean();
    let tricky = r####"pub fn f<'a>(s: &'a str) -> usize {
    let quote = '"';
    let esc = '\'';
    let raw = r#"unsafe { " "#;
    let hashes = br##"unsafe { "# still inside"##;
    let text = "unsafe { \" still inside";
    /* unsafe { /* nested */ unsafe { */
    // unsafe {
    'outer: loop {
        break 'outer;
    }
    let _ = (quote, esc, raw, hashes, text, s);
    unsafe { std::hint::unreachable_unchecked() }
}
"####;
    t.write("crates/keel-data/src/tricky.rs", tricky);
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-data/src/tricky.rs", 13), ("crates/keel-data/src/tricky.rs", 13)]));
    assert!(found.iter().any(|v| v.message.contains("outside the kernel modules")));
    assert!(found.iter().any(|v| v.message.contains("`// SAFETY:` comment")));
}

#[test]
fn tests_and_examples_are_not_checked() {
    let t = Tree::clean();
    t.write("crates/keel-data/tests/it/main.rs", "fn f() {\n    unsafe { std::env::set_var(\"A\", \"1\") }\n}\n");
    t.write("crates/keel-data/examples/demo.rs", "fn main() {\n    unsafe { std::env::set_var(\"A\", \"1\") }\n}\n");
    assert_eq!(check(t.root()), []);
}
