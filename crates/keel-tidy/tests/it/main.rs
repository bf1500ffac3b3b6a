//! keel-tidy's tests: every rule on this repository, and each rule on small broken trees.

mod architecture;
mod cycles;
mod fixture;
mod json_index;
mod layers;
mod size;
mod unsafe_code;

use fixture::Tree;
use std::collections::BTreeMap;
use std::path::Path;

/// The real tree keeps every rule of ARCHITECTURE.md. A failure lists every violation, by
/// rule, with what to do about each.
#[test]
fn the_tree_keeps_its_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (rule, check) in keel_tidy::RULES {
        for v in check(&root) {
            by_rule.entry(rule).or_default().push(v.to_string());
        }
    }
    if by_rule.is_empty() {
        return;
    }
    let mut report = String::new();
    for (rule, found) in &by_rule {
        report.push_str(&format!("\n{rule}: {} violation(s)\n", found.len()));
        for v in found {
            report.push_str(&format!("  {v}\n"));
        }
    }
    panic!("the tree breaks the rules of ARCHITECTURE.md (see crates/keel-tidy/src for each rule):{report}");
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
