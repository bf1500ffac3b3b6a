//! Rule `size` on broken trees.

use crate::fixture::{Tree, at, function, lines, places};
use keel_tidy::size::{FILE_LIMIT, FN_LIMIT, check};

#[test]
fn a_long_file_outside_the_kernels_fails() {
    let t = Tree::clean();
    t.write("crates/keel-store/src/store.rs", &lines("// rows", FILE_LIMIT + 1));
    t.write("crates/keel-store/tests/it/main.rs", &lines("// tests", FILE_LIMIT + 1));
    t.write("crates/keel-store/src/fits.rs", &lines("// rows", FILE_LIMIT));
    t.write("crates/keel-train/src/kernels/wide.rs", &lines("// lanes", FILE_LIMIT * 2));
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-store/src/store.rs", 1), ("crates/keel-store/tests/it/main.rs", 1)]));
    assert!(found.iter().all(|v| v.rule == "size" && v.message.contains("801 lines")), "{found:#?}");
}

#[test]
fn a_long_function_outside_the_kernels_fails() {
    let t = Tree::clean();
    let text = format!(
        "//! Heads.\n\n{}\nimpl Head {{\n    {}}}\n\n{}",
        function("fit", FN_LIMIT + 1),
        function("predict", FN_LIMIT + 20).replace('\n', "\n    "),
        function("score", FN_LIMIT),
    );
    t.write("crates/keel-train/src/head.rs", &text);
    // Braces in strings and comments do not end a function early or late.
    let braces =
        format!("fn tricky() {{\n    let s = \"}}}}\";\n    // }}\n{}}}\n", "    let _ = '{';\n".repeat(FN_LIMIT));
    t.write("crates/keel-index/src/braces.rs", &braces);
    t.write("crates/keel-train/src/kernel.rs", &function("unrolled", FN_LIMIT * 3));
    let found = check(t.root());
    let head = "crates/keel-train/src/head.rs";
    let predict_line = 3 + FN_LIMIT + 1 + 2;
    assert_eq!(places(&found), at(&[(head, 3), (head, predict_line), ("crates/keel-index/src/braces.rs", 1)]));
    for expected in ["fn `fit` runs 101 lines", "fn `predict` runs 120 lines", "fn `tricky` runs 104 lines"] {
        assert!(found.iter().any(|v| v.message.contains(expected)), "{expected}: {found:#?}");
    }
}

#[test]
fn a_too_many_arguments_allowance_outside_the_kernels_fails() {
    let t = Tree::clean();
    let text = "#[allow(clippy::too_many_arguments)]
fn a(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) {}

#[allow(dead_code, clippy::too_many_arguments)]
fn b(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) {}

#[expect(too_many_arguments)]
fn c() {}

// allow(clippy::too_many_arguments) in a comment is fine
const NOTE: &str = \"#[allow(clippy::too_many_arguments)]\";
";
    t.write("crates/keel/src/training.rs", text);
    let found = check(t.root());
    let file = "crates/keel/src/training.rs";
    assert_eq!(places(&found), at(&[(file, 1), (file, 4), (file, 7)]));
    assert!(found.iter().all(|v| v.message.contains("group the arguments into a struct")));
}
