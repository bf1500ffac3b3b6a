//! Rule `architecture-map` on broken trees.

use crate::fixture::{Tree, at, lines, places};
use keel_tidy::architecture::{LIMIT, check};

const MAP_START: &str = "# Architecture\n\n### `crates/keel-index`: documents to hits\n`hnsw.rs` is the graph.\n\n\
                         ### `crates/keel-embed`: texts to vectors\n`kernels/` is the only `unsafe`.\n";

#[test]
fn a_large_file_the_map_does_not_name_fails() {
    let t = Tree::clean();
    t.write("crates/keel-store/src/store.rs", &lines("// rows", LIMIT + 1));
    t.write("crates/keel-store/tests/it/main.rs", &lines("// tests", LIMIT + 50));
    t.write("crates/keel-store/src/small.rs", &lines("// rows", LIMIT));
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-store/src/store.rs", 1), ("crates/keel-store/tests/it/main.rs", 1)]));
    assert_eq!(found[0].rule, "architecture-map");
    assert!(found[0].message.contains("401 lines"), "{}", found[0].message);
    assert!(found[0].message.contains("`store.rs`") && found[0].message.contains("`keel-store/src/store.rs`"));
}

#[test]
fn a_name_counts_in_its_own_section_only() {
    let t = Tree::clean();
    t.write("crates/keel-store/src/store.rs", &lines("// rows", LIMIT + 1));
    t.write("crates/keel-index/src/index.rs", &lines("// rows", LIMIT + 1));
    // `store.rs` under the index's heading, and `index.rs` only as the tail of a longer path.
    t.write(
        "ARCHITECTURE.md",
        &format!("{MAP_START}\n### `crates/keel-index`\n`store.rs`, `gen/index.rs`, `index.rsx`.\n"),
    );
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-index/src/index.rs", 1), ("crates/keel-store/src/store.rs", 1)]));
}

#[test]
fn each_accepted_name_passes() {
    let t = Tree::clean();
    for file in ["a.rs", "b.rs", "c.rs", "d.rs", "cmd/run.rs"] {
        t.write(&format!("crates/keel-store/src/{file}"), &lines("// rows", LIMIT + 1));
    }
    t.write("crates/keel-store/src/cmd/mod.rs", &lines("// rows", LIMIT + 1));
    t.write("crates/keel-store/tests/it/main.rs", &lines("// rows", LIMIT + 1));
    t.manifest("keel-llm", "");
    t.write("crates/keel-llm/src/e.rs", &lines("// rows", LIMIT + 1));
    let map = format!(
        "{MAP_START}\n### `crates/keel-store`: rows\n`a.rs` holds rows. `src/b.rs` too, and `cmd/run.rs`; the \
         commands are in `cmd/`, tested by `tests/it/main.rs`.\n\n## Elsewhere\n`keel-store/src/c.rs` and \
         crates/keel-store/src/d.rs, and keel-llm/src/e.rs.\n"
    );
    t.write("ARCHITECTURE.md", &map);
    assert_eq!(check(t.root()), []);
    // The same names outside the crate's section do not count.
    t.write("ARCHITECTURE.md", &map.replace("### `crates/keel-store`: rows", "### `crates/keel-storage`: rows"));
    let found = check(t.root());
    let expected: Vec<(String, usize)> =
        ["src/a.rs", "src/b.rs", "src/cmd/mod.rs", "src/cmd/run.rs", "tests/it/main.rs"]
            .iter()
            .map(|f| (format!("crates/keel-store/{f}"), 1))
            .collect();
    assert_eq!(places(&found), expected);
}

#[test]
fn a_missing_map_fails() {
    let t = Tree::clean();
    t.remove("ARCHITECTURE.md");
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("ARCHITECTURE.md", 1)]));
    assert!(found[0].message.contains("cannot read"), "{}", found[0].message);
}
