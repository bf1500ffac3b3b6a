//! Rule `json-indexing` on broken trees.

use crate::fixture::{Tree, at, places};
use keel_tidy::json_index::check;

#[test]
fn indexing_outputs_and_metrics_by_name_fails() {
    let t = Tree::clean();
    let run = r#"fn step(m: &Model, trained: &Value, prev_metrics: &Value, outputs: &Value) -> Value {
    let gate = m.metrics["gate"].clone();
    let sizes = &trained["split_sizes"];
    let a = prev_metrics["accuracy"].as_f64();
    let b = outputs["train"]["head"].clone();
    let c = gated["gate"]; let d = details["baselines"];
    sizes["train"].clone()
}
"#;
    t.write("crates/keel/src/cmd/run.rs", run);
    let found = check(t.root());
    let file = "crates/keel/src/cmd/run.rs";
    assert_eq!(places(&found), at(&[(file, 2), (file, 3), (file, 4), (file, 5), (file, 6), (file, 6)]));
    assert_eq!(found[0].rule, "json-indexing");
    assert!(found[0].message.contains(r#"`metrics["gate"]`"#), "{}", found[0].message);
    assert!(found[0].message.contains("serde struct"), "{}", found[0].message);
}

#[test]
fn other_indexing_and_other_crates_pass() {
    let t = Tree::clean();
    let text = r#"fn f(metrics: &[f64], map: &Map, record: &Value) {
    let _ = metrics[0];
    let _ = metrics[i];
    let _ = map["gate"];
    let _ = record["text"];
    let _ = metrics["Gate"];
    let _ = "metrics[\"gate\"]";
    // metrics["gate"]
    let _ = trained[KEY];
}
"#;
    t.write("crates/keel/src/other.rs", text);
    t.write("crates/keel-server/src/routes.rs", "fn f(v: &Value) {\n    let _ = v.metrics[\"gate\"];\n}\n");
    assert_eq!(check(t.root()), []);
}
