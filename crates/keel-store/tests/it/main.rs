//! keel-store integration tests on a real SQLite store in a temporary folder.

use keel_core::ContentHash;
use keel_store::{NewDataset, NewModelVersion, RunStatus, Store};

async fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    (dir, store)
}

async fn dataset(store: &Store) -> ContentHash {
    let records = store.put_artifact("records", b"{}\n").await.unwrap();
    let quarantine = store.put_artifact("quarantine", b"").await.unwrap();
    let id = ContentHash::of(b"dataset");
    store
        .put_dataset(&NewDataset {
            id: id.clone(),
            name: "d".into(),
            source: "d.csv".into(),
            source_sha256: ContentHash::of(b"raw"),
            rows_read: 1,
            n_records: 1,
            n_quarantined: 0,
            records_artifact: records,
            quarantine_artifact: quarantine,
        })
        .await
        .unwrap();
    id
}

async fn version(store: &Store, key: &[u8]) -> (keel_store::ModelVersion, bool) {
    let dataset_id = dataset(store).await;
    let run = store.start_run("train", &serde_json::json!({"seed": 1}), "test", "host").await.unwrap();
    let head = store.put_artifact("head", key).await.unwrap();
    store
        .register_model_version(&NewModelVersion {
            name: "sentiment".into(),
            input_key: ContentHash::of(key),
            run_id: run,
            dataset_id,
            encoder_id: "enc".into(),
            head_artifact: head,
            metrics: serde_json::json!({"accuracy": 0.9}),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let (dir, store) = fresh().await;
    version(&store, b"a").await;
    drop(store);
    let store = Store::open(dir.path()).await.unwrap();
    assert_eq!(store.model_versions().await.unwrap().len(), 1);
}

#[tokio::test]
async fn versions_are_numbered_and_deduplicated_by_input_key() {
    let (_dir, store) = fresh().await;
    let (v1, created1) = version(&store, b"a").await;
    let (again, created_again) = version(&store, b"a").await;
    let (v2, created2) = version(&store, b"b").await;
    assert!(created1 && !created_again && created2);
    assert_eq!((v1.version, again.version, v2.version), (1, 1, 2));
    assert_eq!(v2.tag(), "sentiment@2");
    // A bare name resolves to the latest version until production is set.
    assert_eq!(store.resolve("sentiment").await.unwrap().version, 2);
    store.set_alias("sentiment", "production", 1).await.unwrap();
    assert_eq!(store.resolve("sentiment").await.unwrap().version, 1);
    assert_eq!(store.resolve("sentiment@2").await.unwrap().version, 2);
    assert_eq!(store.resolve("sentiment@production").await.unwrap().aliases, ["production"]);
    assert!(store.resolve("sentiment@staging").await.is_err());
    assert!(store.resolve("nothing").await.unwrap_err().to_string().contains("train one first"));
    assert!(store.set_alias("sentiment", "production", 9).await.is_err());
}

#[tokio::test]
async fn runs_record_status_and_metrics() {
    let (_dir, store) = fresh().await;
    let id = store.start_run("train", &serde_json::json!({"k": 1}), "0.0.0", "h").await.unwrap();
    store.finish_run(&id, RunStatus::Failed, None, Some("boom")).await.unwrap();
    let runs = store.runs(10).await.unwrap();
    assert_eq!(runs[0].status, "failed");
    assert_eq!(runs[0].error.as_deref(), Some("boom"));
}

#[tokio::test]
async fn embedding_cache_round_trips() {
    let (_dir, store) = fresh().await;
    let a = ContentHash::of(b"a");
    let b = ContentHash::of(b"b");
    store.cache_embeddings("enc", &[(a.clone(), &[1.0, -2.5][..])]).await.unwrap();
    let got = store.cached_embeddings("enc", &[a.clone(), b]).await.unwrap();
    assert_eq!(got, vec![Some(vec![1.0, -2.5]), None]);
    assert_eq!(store.cached_embeddings("other", &[a]).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn check_finds_corrupt_and_missing_artifacts() {
    let (_dir, store) = fresh().await;
    version(&store, b"a").await;
    assert!(store.check().await.unwrap().problems.is_empty());
    let h = store.put_artifact("x", b"precious").await.unwrap();
    std::fs::write(store.artifacts().path(&h), b"tampered").unwrap();
    let report = store.check().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].contains("corrupt"));
    std::fs::remove_file(store.artifacts().path(&h)).unwrap();
    assert!(store.check().await.unwrap().problems[0].contains("missing"));
}
