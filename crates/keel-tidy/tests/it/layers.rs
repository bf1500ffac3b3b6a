//! Rule `layers` on broken trees.

use crate::fixture::{Tree, at, places};
use keel_tidy::layers::check;

/// The manifests the fixture writes put the first dependency on line 7.
const FIRST_DEP: usize = 7;

#[test]
fn sql_outside_the_store_fails() {
    let t = Tree::clean();
    t.manifest("keel-server", "keel-store.workspace = true\naxum.workspace = true\nsqlx.workspace = true\n");
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-server/Cargo.toml", FIRST_DEP + 2)]));
    assert_eq!(found[0].rule, "layers");
    assert!(found[0].message.contains("only keel-store speaks SQL"), "{}", found[0].message);
}

#[test]
fn clap_outside_the_binary_fails() {
    let t = Tree::clean();
    t.manifest("keel-store", "clap = { version = \"4\", features = [\"derive\"] }\n");
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-store/Cargo.toml", FIRST_DEP)]));
    assert!(found[0].message.contains("only keel (the binary) knows clap"));
}

#[test]
fn an_http_server_crate_in_the_binary_fails() {
    let t = Tree::clean();
    t.manifest("keel", "keel-server.workspace = true\nclap.workspace = true\naxum.workspace = true\ntower = \"0.5\"\n");
    let found = check(t.root());
    let manifest = "crates/keel/Cargo.toml";
    assert_eq!(places(&found), at(&[(manifest, FIRST_DEP + 2), (manifest, FIRST_DEP + 3)]));
    assert!(found.iter().all(|v| v.message.contains("only keel-server knows HTTP serving")));
}

#[test]
fn an_http_client_outside_the_allow_list_fails() {
    let t = Tree::clean();
    t.manifest("keel-index", "keel-core.workspace = true\n\n[dependencies.reqwest]\nversion = \"0.12\"\n");
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-index/Cargo.toml", FIRST_DEP + 2)]));
    assert!(found[0].message.contains("allow-list"));
}

#[test]
fn a_renamed_dependency_counts_under_its_real_name() {
    let t = Tree::clean();
    t.manifest("keel-data", "db = { package = \"rusqlite\", version = \"0.37\" }\nweb.workspace = true\n");
    let root = std::fs::read_to_string(t.root().join("Cargo.toml")).unwrap();
    t.write("Cargo.toml", &format!("{root}web = {{ package = \"axum\", version = \"0.8\" }}\n"));
    let found = check(t.root());
    let manifest = "crates/keel-data/Cargo.toml";
    assert_eq!(places(&found), at(&[(manifest, FIRST_DEP), (manifest, FIRST_DEP + 1)]));
    assert!(found[0].message.contains("`rusqlite`") && found[1].message.contains("`axum`"));
}

#[test]
fn target_specific_dependencies_count_and_dev_dependencies_do_not() {
    let t = Tree::clean();
    t.write(
        "crates/keel-train/Cargo.toml",
        "[package]\nname = \"keel-train\"\n\n[dev-dependencies]\ntokio = \"1\"\n\n\
         [target.'cfg(unix)'.dependencies]\ntokio = \"1\"\n",
    );
    let found = check(t.root());
    assert_eq!(places(&found), at(&[("crates/keel-train/Cargo.toml", 8)]));
    assert!(found[0].message.contains("keel-train does no IO"));
}

#[test]
fn io_crates_in_the_pure_crates_fail() {
    let t = Tree::clean();
    t.manifest("keel-monitor", "keel-core.workspace = true\ntokio.workspace = true\ntempfile = \"3\"\nureq = \"2\"\n");
    t.write("crates/keel-monitor/src/lib.rs", "//! Drift.\n");
    t.manifest("keel-core", "serde.workspace = true\nkeel-data = { path = \"../keel-data\" }\n");
    t.manifest("keel-data", "keel-core.workspace = true\ntokio = \"1\"\n");
    let found = check(t.root());
    let monitor = "crates/keel-monitor/Cargo.toml";
    let expected = [
        (monitor, FIRST_DEP + 1),
        (monitor, FIRST_DEP + 2),
        (monitor, FIRST_DEP + 3),
        ("crates/keel-core/Cargo.toml", FIRST_DEP + 1),
        ("crates/keel-data/Cargo.toml", FIRST_DEP + 1),
    ];
    assert_eq!(places(&found), at(&expected));
    let messages: Vec<&str> = found.iter().map(|v| v.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("keel-core depends on no other keel crate")), "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("keel-data does no network")), "{messages:#?}");
    // The HTTP client is reported once, as an HTTP client, not again as IO.
    assert_eq!(messages.iter().filter(|m| m.contains("`ureq`")).count(), 1);
}

#[test]
fn io_in_the_source_of_the_pure_crates_fails() {
    let t = Tree::clean();
    t.write(
        "crates/keel-eval/src/lib.rs",
        "//! Metrics.\n\
         use std::fs;\n\
         use std::{io::Read, net::TcpStream};\n\
         pub fn run() {\n\
         \x20   let _ = std::process::Command::new(\"ls\");\n\
         \x20   let _ = File::open(\"x\");\n\
         \x20   let _ = std::io::stdout(); // std::fs in a comment\n\
         }\n",
    );
    t.manifest("keel-eval", "keel-core.workspace = true\n");
    t.write("crates/keel-eval/src/nested/deep.rs", "fn f() {\n    ::std::fs::write(\"a\", \"b\").ok();\n}\n");
    t.write("crates/keel-eval/tests/it/main.rs", "use std::fs;\n");
    t.write("crates/keel-eval/examples/show.rs", "use std::fs;\n");
    t.write("crates/keel-data/src/net.rs", "use std::{fs, net};\n");
    let found = check(t.root());
    let lib = "crates/keel-eval/src/lib.rs";
    let expected = [
        (lib, 2),
        (lib, 3),
        (lib, 5),
        (lib, 6),
        ("crates/keel-eval/src/nested/deep.rs", 2),
        ("crates/keel-data/src/net.rs", 1),
    ];
    assert_eq!(places(&found), at(&expected));
    let data = found.iter().find(|v| v.file.ends_with("net.rs")).unwrap();
    assert!(data.message.contains("`std::net`") && data.message.contains("no network"), "{}", data.message);
}
