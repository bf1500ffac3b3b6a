//! `keel run`'s step records and decision log (migration 0004), on every backend.

use keel_store::NewStep;
use serde_json::json;

use crate::on_each;

fn step(project: &str, name: &str, key: &str, output: serde_json::Value) -> NewStep {
    NewStep {
        project: project.into(),
        step: name.into(),
        input_key: key.into(),
        output,
        keel_version: "keel 0.0.0 (test)".into(),
        run_id: None,
    }
}

#[tokio::test]
async fn steps_are_found_by_project_step_and_key_and_rerecording_replaces() {
    on_each(|_config, store| async move {
        assert!(store.find_step("p", "train", "k1").await.unwrap().is_none());
        let rec = store.record_step(&step("p", "train", "k1", json!({"head": "aa"}))).await.unwrap();
        assert_eq!(rec.status, "succeeded");
        assert_eq!(rec.fields.output, json!({"head": "aa"}));
        let found = store.find_step("p", "train", "k1").await.unwrap().unwrap();
        assert_eq!(found.fields, rec.fields);
        // Another key, step or project is another record.
        assert!(store.find_step("p", "train", "k2").await.unwrap().is_none());
        assert!(store.find_step("p", "embed", "k1").await.unwrap().is_none());
        assert!(store.find_step("q", "train", "k1").await.unwrap().is_none());
        // Recording the same key again (--force) replaces the output, never duplicates.
        store.record_step(&step("p", "train", "k1", json!({"head": "bb"}))).await.unwrap();
        store.record_step(&step("p", "ingest", "k0", json!({"dataset_id": "d"}))).await.unwrap();
        let all = store.steps("p").await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(store.find_step("p", "train", "k1").await.unwrap().unwrap().fields.output, json!({"head": "bb"}));
        assert!(store.steps("q").await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn pipeline_events_keep_their_order_and_reasons() {
    on_each(|_config, store| async move {
        let a = store.log_pipeline_event("p", "trigger", "source a.csv changed", &json!({})).await.unwrap();
        let b = store.log_pipeline_event("p", "refuse", "macro-F1 -0.4 pt", &json!({"version": 2})).await.unwrap();
        store.log_pipeline_event("other", "run", "x", &json!({})).await.unwrap();
        assert!(b > a);
        let events = store.pipeline_events("p", 0).await.unwrap();
        let kinds: Vec<(&str, &str)> = events.iter().map(|e| (e.kind.as_str(), e.reason.as_str())).collect();
        assert_eq!(kinds, [("trigger", "source a.csv changed"), ("refuse", "macro-F1 -0.4 pt")]);
        assert_eq!(events[1].details, json!({"version": 2}));
        let after = store.pipeline_events("p", a).await.unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].seq, b);
    })
    .await;
}
