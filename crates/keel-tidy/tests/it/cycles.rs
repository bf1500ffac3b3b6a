//! Rule `import-cycles` on broken trees.

use crate::fixture::{Tree, at, places};
use keel_tidy::cycles::check;

/// A crate `keel-index` whose `src/` holds `files` (path under `src/`, text).
fn index_crate(files: &[(&str, &str)]) -> Tree {
    let t = Tree::clean();
    t.remove("crates/keel-index/src/hnsw.rs");
    for (path, text) in files {
        t.write(&format!("crates/keel-index/src/{path}"), text);
    }
    t
}

#[test]
fn two_files_that_use_each_other_fail() {
    let t = index_crate(&[
        ("lib.rs", "mod chunk;\nmod document;\n"),
        ("chunk.rs", "use crate::document::Document;\n\npub struct Chunk;\n"),
        ("document.rs", "pub struct Document;\n\nfn first() -> super::chunk::Chunk {\n    todo!()\n}\n"),
    ]);
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-index/src/chunk.rs", 1)]));
    let m = &found[0].message;
    assert_eq!(found[0].rule, "import-cycles");
    assert!(m.contains("between 2 files (crates/keel-index/src/chunk.rs, crates/keel-index/src/document.rs)"), "{m}");
    assert!(m.contains("src/chunk.rs:1 uses crates/keel-index/src/document.rs"), "{m}");
    assert!(m.contains("src/document.rs:3 uses crates/keel-index/src/chunk.rs"), "{m}");
}

#[test]
fn a_longer_circle_through_paths_in_code_and_folders_fails() {
    let t = index_crate(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "pub fn f() {\n    crate::b::inner::g();\n}\n"),
        ("b/mod.rs", "pub mod inner;\n"),
        ("b/inner.rs", "use crate::{c::{self, H}, a as _};\npub fn g() {\n    c::h();\n}\n"),
        ("c.rs", "pub struct H;\npub fn h() {\n    crate::a::f();\n}\n"),
    ]);
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-index/src/a.rs", 2)]));
    assert!(found[0].message.contains("between 3 files"), "{}", found[0].message);
    assert!(found[0].message.contains("src/b/inner.rs"), "{}", found[0].message);
}

#[test]
fn a_root_file_is_a_front_door_not_part_of_a_circle() {
    // lib.rs re-exports hnsw.rs and holds `Config`, which hnsw.rs uses; a mod.rs runs its child,
    // which takes everything from it by glob. Neither is a circle among the files behind them.
    let t = index_crate(&[
        ("lib.rs", "mod hnsw;\nmod bm25;\npub mod kernels;\npub use hnsw::Hnsw;\n\npub struct Config;\n"),
        ("hnsw.rs", "use crate::Config;\n\npub struct Hnsw(Config);\n"),
        ("bm25.rs", "use crate::Hnsw;\n"),
        ("kernels/mod.rs", "mod avx2;\n\npub struct Epilogue;\n\npub fn run() {\n    avx2::gemm();\n}\n"),
        ("kernels/avx2.rs", "use super::*;\n\npub fn gemm() {}\n"),
    ]);
    assert_eq!(check(t.root()), Vec::new());
}

#[test]
fn a_circle_behind_the_door_still_fails() {
    let t = index_crate(&[
        ("lib.rs", "mod hnsw;\nmod bm25;\n"),
        ("hnsw.rs", "use crate::bm25::Bm25;\n\npub struct Hnsw(Bm25);\n"),
        ("bm25.rs", "pub struct Bm25;\n\npub fn f(_: crate::hnsw::Hnsw) {}\n"),
    ]);
    let found = check(t.root());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].message.contains("hnsw.rs") && found[0].message.contains("bm25.rs"), "{}", found[0].message);
}

#[test]
fn each_circle_is_reported_in_every_target() {
    let t = index_crate(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
        ("a.rs", "use super::b;\n"),
        ("b.rs", "use super::a;\n"),
        ("c.rs", "pub(crate) use self::super::d::D;\npub struct C;\n"),
        ("d.rs", "pub struct D(crate::c::C);\n"),
    ]);
    t.write("crates/keel-index/tests/it/main.rs", "mod common;\nmod search;\n");
    t.write("crates/keel-index/tests/it/common.rs", "pub fn corpus() {\n    crate::search::helper();\n}\n");
    t.write("crates/keel-index/tests/it/search.rs", "use crate::common::corpus;\npub fn helper() {}\n");
    let found = check(t.root());
    let expected = [
        ("crates/keel-index/src/a.rs", 1),
        ("crates/keel-index/src/c.rs", 1),
        ("crates/keel-index/tests/it/common.rs", 2),
    ];
    assert_eq!(places(&found), at(&expected));
}

#[test]
fn declarations_tests_and_external_paths_are_not_edges() {
    // Each of these would close a circle if it were taken for an edge: `mod b;` in lib.rs (b.rs
    // uses lib.rs), `b::x()` in a.rs (an inline module, not b.rs, which uses a.rs), the test
    // module's `use super::*`, and paths of other crates or in comments.
    let t = index_crate(&[
        (
            "lib.rs",
            "mod a;\nmod b;\n\npub fn run() {\n    a::go();\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
        (
            "a.rs",
            "pub fn go() {\n    b::x();\n    std::b::y();\n}\nmod b {\n    pub fn x() {}\n    use super::go as _;\n}\n",
        ),
        (
            "b.rs",
            "use crate::run as _;\npub fn z() -> impl Sized + use<> {\n    crate::a::go();\n    tantivy::b::go()\n}\n",
        ),
    ]);
    assert_eq!(check(t.root()), []);
}
