//! keel-tidy's tests: every rule on this repository, and each rule on small broken trees.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod architecture;
mod cycles;
mod fixture;
mod json_index;
mod layers;
mod size;
mod unsafe_code;

use fixture::Tree;
use std::path::Path;

/// The real tree keeps every rule of ARCHITECTURE.md, apart from the debt listed in
/// `known-violations.txt`, which may only shrink. A failure lists every new violation with what
/// to do about it, and every listed one that is gone.
#[test]
fn the_tree_keeps_its_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("known-violations.txt");
    let known = keel_tidy::debt::parse(&std::fs::read_to_string(&list).unwrap()).unwrap();
    let found = keel_tidy::check_all(&root);
    let problems = keel_tidy::debt::compare(&found, &known);
    assert!(
        problems.is_empty(),
        "the tree breaks the rules of ARCHITECTURE.md (see crates/keel-tidy/src for each rule):\n{}",
        problems.join("\n")
    );
}

/// The debt list catches new violations and violations that are gone, and reads its format.
#[test]
fn the_debt_list_only_shrinks() {
    use keel_tidy::debt::{compare, parse};
    let t = Tree::clean();
    let f = t.root().join("crates/keel-index/src/lib.rs");
    let mut text = std::fs::read_to_string(&f).unwrap();
    text.push_str("\n#[allow(clippy::too_many_arguments)]\nfn f() {}\n");
    std::fs::write(&f, text).unwrap();
    let found = keel_tidy::check_all(t.root());
    assert_eq!(found.len(), 1, "{found:?}");
    // Not listed: new debt.
    let none = parse("# nothing known\n").unwrap();
    assert!(compare(&found, &none)[0].starts_with("new: 1 size violation(s) in crates/keel-index/src/lib.rs"));
    // Listed with its count: agreed.
    let listed = parse("size crates/keel-index/src/lib.rs 1  # to fix\n").unwrap();
    assert_eq!(compare(&found, &listed), Vec::<String>::new());
    // Listed with a higher count, or listed and gone: paid, lower the count.
    let high = parse("size crates/keel-index/src/lib.rs 2\n").unwrap();
    assert!(compare(&found, &high)[0].starts_with("paid: size in crates/keel-index/src/lib.rs has 1"));
    assert!(compare(&[], &listed)[0].starts_with("paid:"));
    assert!(parse("size only-two\n").unwrap_err().contains("line 1"));
}

/// The fixture every other test breaks keeps every rule, so what they find is what they broke.
#[test]
fn the_clean_fixture_keeps_every_rule() {
    let t = Tree::clean();
    for (rule, check) in keel_tidy::RULES {
        let found = check(t.root());
        assert!(found.is_empty(), "{rule} on the clean fixture: {found:#?}");
    }
    assert!(keel_tidy::check_all(t.root()).is_empty());
}

#[test]
fn every_rule_is_listed_once() {
    let names: Vec<&str> = keel_tidy::RULES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["layers", "unsafe", "architecture-map", "size", "import-cycles", "json-indexing"]);
}
