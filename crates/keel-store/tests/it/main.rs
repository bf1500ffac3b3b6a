//! keel-store integration tests. Every test runs on both backends: SQLite in a temporary
//! folder, and PostgreSQL in a fresh database on the server named by KEEL_TEST_POSTGRES_URL
//! (scripts/test starts one). Without that variable the PostgreSQL half fails, on purpose:
//! a store test suite that silently covers one backend is not the suite the project promises.

use std::future::Future;

use keel_core::ContentHash;
use keel_store::{Backend, NewDataset, NewModelVersion, PredictionRecord, RunStatus, Store};
use sqlx::Connection;

/// A fresh store of each backend, each with its own temporary home.
async fn stores() -> Vec<(tempfile::TempDir, Store)> {
    let sqlite_home = tempfile::tempdir().unwrap();
    let sqlite = Store::open_with(sqlite_home.path(), None).await.unwrap();
    let pg_home = tempfile::tempdir().unwrap();
    let pg = Store::open_with(pg_home.path(), Some(&fresh_postgres_database().await)).await.unwrap();
    assert_eq!((sqlite.backend(), pg.backend()), (Backend::Sqlite, Backend::Postgres));
    vec![(sqlite_home, sqlite), (pg_home, pg)]
}

/// Creates an empty database on the test server and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin = std::env::var("KEEL_TEST_POSTGRES_URL").expect(
        "KEEL_TEST_POSTGRES_URL is not set: the store tests run on PostgreSQL too. Run scripts/test, which starts \
         PostgreSQL and sets it, or point it at a server: postgres://USER:PASSWORD@127.0.0.1:5432/postgres",
    );
    let name = format!(
        "keel_test_{}",
        ContentHash::of(format!("{:?}{:?}", std::time::SystemTime::now(), std::thread::current().id()).as_bytes())
            .short()
    );
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to the test PostgreSQL server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    format!("{base}/{name}")
}

/// Runs `test` on each backend. The home folder lives until the test's future completes.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(std::path::PathBuf, Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for (home, store) in stores().await {
        eprintln!("-- {:?}", store.backend());
        test(home.path().to_owned(), store).await;
        drop(home);
    }
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
    let home = tempfile::tempdir().unwrap();
    let store = Store::open_with(home.path(), None).await.unwrap();
    version(&store, b"a").await;
    drop(store);
    let store = Store::open_with(home.path(), None).await.unwrap();
    assert_eq!(store.model_versions().await.unwrap().len(), 1);

    let url = fresh_postgres_database().await;
    let store = Store::open_with(home.path(), Some(&url)).await.unwrap();
    version(&store, b"a").await;
    drop(store);
    let store = Store::open_with(home.path(), Some(&url)).await.unwrap();
    assert_eq!(store.model_versions().await.unwrap().len(), 1);
}

#[tokio::test]
async fn versions_are_numbered_and_deduplicated_by_input_key() {
    on_both(|_home, store| async move {
        let (v1, created1) = version(&store, b"a").await;
        let (again, created_again) = version(&store, b"a").await;
        let (v2, created2) = version(&store, b"b").await;
        assert!(created1 && !created_again && created2);
        assert_eq!((v1.version, again.version, v2.version), (1, 1, 2));
        assert_eq!(v2.tag(), "sentiment@2");
        // A bare name resolves to the latest version until production is set.
        assert_eq!(store.resolve("sentiment").await.unwrap().version, 2);
        assert_eq!(store.set_alias("sentiment", "production", 1, "test").await.unwrap(), None);
        assert_eq!(store.resolve("sentiment").await.unwrap().version, 1);
        assert_eq!(store.resolve("sentiment@2").await.unwrap().version, 2);
        assert_eq!(store.resolve("sentiment@production").await.unwrap().aliases, ["production"]);
        assert!(store.resolve("sentiment@staging").await.is_err());
        assert!(store.resolve("nothing").await.unwrap_err().to_string().contains("train one first"));
        assert!(store.set_alias("sentiment", "production", 9, "test").await.is_err());
        assert!(store.set_alias("sentiment", "Bad Alias", 1, "test").await.is_err());
    })
    .await;
}

#[tokio::test]
async fn promotion_history_supports_rollback_and_lineage() {
    on_both(|_home, store| async move {
        version(&store, b"a").await;
        version(&store, b"b").await;
        version(&store, b"c").await;
        assert!(store.rollback("sentiment", "production").await.is_err(), "nothing to roll back yet");
        store.set_alias("sentiment", "production", 1, "first").await.unwrap();
        assert!(store.rollback("sentiment", "production").await.unwrap_err().to_string().contains("no earlier"));
        assert_eq!(store.set_alias("sentiment", "production", 3, "gate passed").await.unwrap(), Some(1));
        assert_eq!(store.rollback("sentiment", "production").await.unwrap(), (3, 1));
        assert_eq!(store.resolve("sentiment").await.unwrap().version, 1);
        let events = store.alias_events("sentiment").await.unwrap();
        let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["first", "gate passed", "rollback from version 3"]);

        let lineage = store.lineage("sentiment@1").await.unwrap();
        assert_eq!(lineage.dataset.fields.source, "d.csv");
        assert_eq!(lineage.run.id, lineage.model.run_id);
        assert_eq!(lineage.alias_events.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn concurrent_registrations_and_promotions_stay_consistent() {
    on_both(|home, store| async move {
        // A second handle, like a second process: its own connection pool.
        let other = match store.backend() {
            Backend::Sqlite => Store::open_with(&home, None).await.unwrap(),
            // A PostgreSQL pool already spreads the tasks over several server connections.
            Backend::Postgres => store.clone(),
        };
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let s = if i % 2 == 0 { store.clone() } else { other.clone() };
            tasks.push(tokio::spawn(async move { version(&s, &[b'k', i]).await.0.version }));
        }
        let mut numbers = Vec::new();
        for t in tasks {
            numbers.push(t.await.unwrap());
        }
        numbers.sort();
        assert_eq!(numbers, (1..=16).collect::<Vec<i64>>(), "each registration gets its own number");

        let mut tasks = Vec::new();
        for v in 1..=16i64 {
            let s = if v % 2 == 0 { store.clone() } else { other.clone() };
            tasks.push(tokio::spawn(async move { s.set_alias("sentiment", "production", v, "race").await.unwrap() }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let with_production: Vec<_> = store
            .model_versions()
            .await
            .unwrap()
            .into_iter()
            .filter(|v| v.aliases.iter().any(|a| a == "production"))
            .collect();
        assert_eq!(with_production.len(), 1, "exactly one production version");
        let events = store.alias_events("sentiment").await.unwrap();
        assert_eq!(events.len(), 16);
        // The history is a chain: each move's previous version is the one before it.
        for pair in events.windows(2) {
            assert_eq!(pair[1].previous_version, Some(pair[0].version));
        }
        assert_eq!(events.last().unwrap().version, with_production[0].version);
    })
    .await;
}

#[tokio::test]
async fn runs_record_status_and_metrics() {
    on_both(|_home, store| async move {
        let id = store.start_run("train", &serde_json::json!({"k": 1}), "0.0.0", "h").await.unwrap();
        store.finish_run(&id, RunStatus::Failed, None, Some("boom")).await.unwrap();
        let runs = store.runs(10).await.unwrap();
        assert_eq!(runs[0].status, "failed");
        assert_eq!(runs[0].error.as_deref(), Some("boom"));
        assert_eq!(store.run(&id).await.unwrap().params["k"], 1);
    })
    .await;
}

#[tokio::test]
async fn embedding_cache_round_trips() {
    on_both(|_home, store| async move {
        let a = ContentHash::of(b"a");
        let b = ContentHash::of(b"b");
        store.cache_embeddings("enc", &[(a.clone(), &[1.0, -2.5][..])]).await.unwrap();
        let got = store.cached_embeddings("enc", &[a.clone(), b]).await.unwrap();
        assert_eq!(got, vec![Some(vec![1.0, -2.5]), None]);
        assert_eq!(store.cached_embeddings("other", &[a]).await.unwrap(), vec![None]);
        // More hashes than one query's placeholder chunk.
        let many: Vec<ContentHash> = (0..1200u32).map(|i| ContentHash::of(&i.to_le_bytes())).collect();
        let items: Vec<(ContentHash, &[f32])> = many.iter().map(|h| (h.clone(), &[0.5f32][..])).collect();
        store.cache_embeddings("enc", &items).await.unwrap();
        assert!(store.cached_embeddings("enc", &many).await.unwrap().iter().all(Option::is_some));
    })
    .await;
}

#[tokio::test]
async fn prediction_log_and_feedback() {
    on_both(|_home, store| async move {
        let p = |id: &str, at: &str| PredictionRecord {
            id: id.into(),
            at: at.into(),
            model: "sentiment@1".into(),
            input_sha256: ContentHash::of(id.as_bytes()).to_string(),
            input_text: format!("text {id}"),
            label: "positive".into(),
            scores: serde_json::json!({"positive": 0.9, "negative": 0.1}),
            latency_ms: 3.5,
            degraded: id == "b",
        };
        store.log_predictions(&[p("a", "2026-01-01T00:00:00.000Z"), p("b", "2026-01-02T00:00:00.000Z")]).await.unwrap();
        store.log_predictions(&[p("a", "2026-01-01T00:00:00.000Z")]).await.unwrap(); // a replay changes nothing
        let all = store.predictions("2026-01-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z").await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[1].degraded && !all[0].degraded);
        assert_eq!(all[0].scores["positive"], 0.9);
        let window = store.predictions("2026-01-02T00:00:00.000Z", "2027-01-01T00:00:00.000Z").await.unwrap();
        assert_eq!(window.len(), 1);
        store.add_feedback("a", "negative").await.unwrap();
        assert!(store.add_feedback("zzz", "negative").await.unwrap_err().to_string().contains("no logged prediction"));
    })
    .await;
}

#[tokio::test]
async fn check_finds_corrupt_and_missing_artifacts() {
    on_both(|_home, store| async move {
        version(&store, b"a").await;
        assert!(store.check().await.unwrap().problems.is_empty());
        let h = store.put_artifact("x", b"precious").await.unwrap();
        std::fs::write(store.artifacts().path(&h), b"tampered").unwrap();
        let report = store.check().await.unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].contains("corrupt"));
        std::fs::remove_file(store.artifacts().path(&h)).unwrap();
        assert!(store.check().await.unwrap().problems[0].contains("missing"));
    })
    .await;
}

#[tokio::test]
async fn a_database_url_that_is_not_postgres_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let err = Store::open_with(home.path(), Some("mysql://x")).await.unwrap_err().to_string();
    assert!(err.contains("postgres://"), "{err}");
}
