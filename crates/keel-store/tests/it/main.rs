//! keel-store integration tests. Every test runs on three configurations: SQLite with its
//! artifacts in a temporary folder; PostgreSQL in a fresh database on the server named by
//! KEEL_TEST_POSTGRES_URL; and SQLite with its artifacts under a fresh prefix of an S3 bucket
//! on the server named by KEEL_TEST_S3_ENDPOINT (bucket KEEL_TEST_S3_BUCKET, default
//! `keel-test`). scripts/test starts PostgreSQL and moto's S3 server and sets both. Without
//! either variable its part fails, on purpose: a store test suite that silently covers one
//! backend is not the suite the project promises.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod llm;
mod monitor;
mod steps;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_core::ContentHash;
use keel_store::{Artifacts, Backend, NewDataset, NewModelVersion, PredictionRecord, RunStatus, Store, StoreOptions};
use sqlx::Connection;

/// How to open one test store, so that a test can open more handles on it (each with its own
/// connection pool, like another process).
#[derive(Clone, Debug)]
struct Config {
    home: PathBuf,
    options: StoreOptions,
}

impl Config {
    async fn open(&self) -> Store {
        Store::open_with_options(&self.home, &self.options).await.unwrap()
    }
}

/// A fresh store of each configuration, each with its own temporary home.
async fn stores() -> Vec<(tempfile::TempDir, Config, Store)> {
    let pg_url = fresh_postgres_database().await;
    let s3 = s3_options();
    let mut out = Vec::new();
    for options in [StoreOptions::default(), StoreOptions { database_url: Some(pg_url), ..StoreOptions::default() }, s3]
    {
        let home = tempfile::tempdir().unwrap();
        let config = Config { home: home.path().to_owned(), options };
        let store = config.open().await;
        out.push((home, config, store));
    }
    let kinds: Vec<_> = out.iter().map(|(_, _, s)| (s.backend(), is_s3(s))).collect();
    assert_eq!(kinds, [(Backend::Sqlite, false), (Backend::Postgres, false), (Backend::Sqlite, true)]);
    out
}

fn is_s3(store: &Store) -> bool {
    matches!(store.artifacts(), Artifacts::ObjectStore(_))
}

/// A name no other test (or earlier run) uses.
fn unique_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}{:?}{}",
        std::time::SystemTime::now(),
        std::thread::current().id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    ContentHash::of(seed.as_bytes()).short().to_owned()
}

/// SQLite metadata with artifacts under a fresh prefix of the test bucket on the S3-compatible
/// server at KEEL_TEST_S3_ENDPOINT. Credentials and region come from the AWS_* variables when
/// set; moto accepts any.
fn s3_options() -> StoreOptions {
    let endpoint = std::env::var("KEEL_TEST_S3_ENDPOINT").expect(
        "KEEL_TEST_S3_ENDPOINT is not set: the store tests run with artifacts in S3 too. Run scripts/test, which \
         starts moto's S3 server and sets it, or point it at an S3-compatible server (http://127.0.0.1:PORT) \
         that has a bucket named keel-test (or KEEL_TEST_S3_BUCKET)",
    );
    let bucket = std::env::var("KEEL_TEST_S3_BUCKET").unwrap_or_else(|_| "keel-test".into());
    let mut options = vec![("aws_endpoint".to_owned(), endpoint), ("aws_allow_http".to_owned(), "true".to_owned())];
    for (var, key) in [("AWS_ACCESS_KEY_ID", "aws_access_key_id"), ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key")] {
        if std::env::var_os(var).is_none() {
            options.push((key.to_owned(), "keel-test".to_owned()));
        }
    }
    StoreOptions {
        database_url: None,
        artifacts_url: Some(format!("s3://{bucket}/keel-test-{}", unique_name())),
        artifacts_options: options,
    }
}

/// Creates an empty database on the test server and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin = std::env::var("KEEL_TEST_POSTGRES_URL").expect(
        "KEEL_TEST_POSTGRES_URL is not set: the store tests run on PostgreSQL too. Run scripts/test, which starts \
         PostgreSQL and sets it, or point it at a server: postgres://USER:PASSWORD@127.0.0.1:5432/postgres",
    );
    let name = format!("keel_test_{}", unique_name());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to the test PostgreSQL server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    format!("{base}/{name}")
}

/// Runs `test` on each configuration. The home folder lives until the test's future completes.
async fn on_each<F, Fut>(test: F)
where
    F: Fn(Config, Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for (home, config, store) in stores().await {
        eprintln!("-- {:?}, artifacts in {}", store.backend(), if is_s3(&store) { "S3" } else { "a folder" });
        test(config, store).await;
        drop(home);
    }
}

/// Overwrites (`Some`) or deletes (`None`) an artifact's stored bytes behind the store's back.
async fn tamper(store: &Store, hash: &ContentHash, bytes: Option<&[u8]>) {
    use object_store::ObjectStoreExt;
    match (store.artifacts(), bytes) {
        (Artifacts::Local(a), Some(b)) => std::fs::write(a.path(hash), b).unwrap(),
        (Artifacts::Local(a), None) => std::fs::remove_file(a.path(hash)).unwrap(),
        (Artifacts::ObjectStore(a), Some(b)) => {
            a.object_store().as_ref().put(&a.key(hash), b.to_vec().into()).await.unwrap();
        }
        (Artifacts::ObjectStore(a), None) => a.object_store().as_ref().delete(&a.key(hash)).await.unwrap(),
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

    let home = tempfile::tempdir().unwrap();
    let options = s3_options();
    let store = Store::open_with_options(home.path(), &options).await.unwrap();
    let (v, _) = version(&store, b"a").await;
    drop(store);
    let store = Store::open_with_options(home.path(), &options).await.unwrap();
    assert_eq!(store.model_versions().await.unwrap().len(), 1);
    let head = ContentHash::parse(&v.head_artifact).unwrap();
    assert_eq!(store.read_artifact(&head).await.unwrap(), b"a");
    assert!(!home.path().join("artifacts").exists(), "S3 artifacts leave no local folder");
}

#[tokio::test]
async fn versions_are_numbered_and_deduplicated_by_input_key() {
    on_each(|_config, store| async move {
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
    on_each(|_config, store| async move {
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
async fn concurrent_registrations_of_the_same_inputs_all_get_the_one_version() {
    on_each(|config, store| async move {
        let other = config.open().await;
        for round in 0..3u8 {
            let mut tasks = Vec::new();
            for i in 0..12u8 {
                let s = if i % 2 == 0 { store.clone() } else { other.clone() };
                tasks.push(tokio::spawn(async move { version(&s, &[b's', round]).await }));
            }
            let mut got = Vec::new();
            for t in tasks {
                let (v, created) = t.await.unwrap();
                got.push((v.version, created));
            }
            let first = got[0].0;
            assert!(got.iter().all(|g| g.0 == first), "one version for one input key: {got:?}");
            assert_eq!(got.iter().filter(|g| g.1).count(), 1, "exactly one registration created it: {got:?}");
            assert_eq!(first, i64::from(round) + 1);
        }
    })
    .await;
}

#[tokio::test]
async fn concurrent_registrations_and_promotions_stay_consistent() {
    on_each(|config, store| async move {
        // A second handle, like a second process: its own connection pool.
        let other = config.open().await;
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
    on_each(|_config, store| async move {
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
    on_each(|_config, store| async move {
        let a = ContentHash::of(b"a");
        let b = ContentHash::of(b"b");
        store.cache_embeddings("enc", &[(a.clone(), &[1.0, -2.5][..])]).await.unwrap();
        let got = store.cached_embeddings("enc", &[a.clone(), b]).await.unwrap();
        assert_eq!(got, vec![Some(vec![1.0, -2.5]), None]);
        assert_eq!(store.cached_embeddings("other", std::slice::from_ref(&a)).await.unwrap(), vec![None]);
        // More hashes than one query's placeholder chunk.
        let many: Vec<ContentHash> = (0..1200u32).map(|i| ContentHash::of(&i.to_le_bytes())).collect();
        let items: Vec<(ContentHash, &[f32])> = many.iter().map(|h| (h.clone(), &[0.5f32][..])).collect();
        store.cache_embeddings("enc", &items).await.unwrap();
        assert!(store.cached_embeddings("enc", &many).await.unwrap().iter().all(Option::is_some));
        // Duplicates and missing hashes keep their places, in any order of the keys.
        let c = ContentHash::of(b"c");
        store.cache_embeddings("enc", &[(c.clone(), &[3.0][..])]).await.unwrap();
        let asked = [c.clone(), a.clone(), ContentHash::of(b"none"), c.clone(), a.clone(), c];
        let got = store.cached_embeddings("enc", &asked).await.unwrap();
        let c_vec = Some(vec![3.0]);
        let a_vec = Some(vec![1.0, -2.5]);
        assert_eq!(got, vec![c_vec.clone(), a_vec.clone(), None, c_vec.clone(), a_vec, c_vec]);
    })
    .await;
}

#[tokio::test]
async fn prediction_log_and_feedback() {
    on_each(|_config, store| async move {
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
    on_each(|_config, store| async move {
        version(&store, b"a").await;
        assert!(store.check().await.unwrap().problems.is_empty());
        let h = store.put_artifact("x", b"precious").await.unwrap();
        tamper(&store, &h, Some(b"tampered")).await;
        let report = store.check().await.unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].contains("corrupt"));
        assert!(store.read_artifact(&h).await.unwrap_err().to_string().contains("corrupt"));
        tamper(&store, &h, None).await;
        let report = store.check().await.unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].contains("missing"));
        assert_eq!(report.artifacts_checked, 4);
        assert_eq!(report.leftover_temp_files, 0);
    })
    .await;
}

#[tokio::test]
async fn a_database_url_that_is_not_postgres_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let err = Store::open_with(home.path(), Some("mysql://x")).await.unwrap_err().to_string();
    assert!(err.contains("postgres://"), "{err}");
}

#[tokio::test]
async fn artifacts_written_in_pieces_are_stored_as_their_bytes_would_be() {
    use std::io::Write as _;
    on_each(|config, store| async move {
        // Larger than one PUT, so an object store takes it as a multipart upload.
        let big: Vec<u8> = (0..keel_store::ONE_PUT_BYTES as u32 + 3_000_000).map(|i| (i % 253) as u8).collect();
        let mut w = store.artifact_writer().unwrap();
        for piece in big.chunks(777_777) {
            w.write_all(piece).unwrap();
        }
        let h = store.put_written_artifact("records", w).await.unwrap();
        assert_eq!(h, ContentHash::of(&big));
        assert_eq!(config.open().await.read_artifact(&h).await.unwrap(), big);
        // Small, and already there: stored once, as `put_artifact` would.
        let mut w = store.artifact_writer().unwrap();
        w.write_all(b"small").unwrap();
        let small = store.put_written_artifact("x", w).await.unwrap();
        assert_eq!(store.put_artifact("x", b"small").await.unwrap(), small);
        let mut w = store.artifact_writer().unwrap();
        w.write_all(b"small").unwrap();
        assert_eq!(store.put_written_artifact("x", w).await.unwrap(), small);
        // A writer dropped before it is stored leaves nothing behind.
        let mut w = store.artifact_writer().unwrap();
        w.write_all(b"abandoned").unwrap();
        drop(w);
        assert_eq!(store.artifacts().temp_files().unwrap(), 0);
        assert!(store.check().await.unwrap().problems.is_empty());
        assert_eq!(store.artifacts().list().await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn artifacts_round_trip_are_listed_and_shared_between_handles() {
    on_each(|config, store| async move {
        let h = store.put_artifact("x", b"some bytes").await.unwrap();
        assert_eq!(h, ContentHash::of(b"some bytes"));
        assert_eq!(store.put_artifact("x", b"some bytes").await.unwrap(), h, "storing again is a no-op");
        let other = config.open().await;
        assert_eq!(other.read_artifact(&h).await.unwrap(), b"some bytes");
        let missing = ContentHash::of(b"never stored");
        assert!(other.read_artifact(&missing).await.unwrap_err().to_string().contains("missing"));
        assert_eq!(store.artifacts().list().await.unwrap(), std::slice::from_ref(&h));
        assert_eq!(store.artifacts().temp_files().unwrap(), 0);
        let location = store.artifacts().location(&h);
        let tail = format!("sha256/{}/{}", &h.as_str()[..2], &h.as_str()[2..]);
        assert!(location.ends_with(&tail), "{location}");
        assert_eq!(location.starts_with("s3://"), is_s3(&store), "{location}");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let big_hash = store.put_artifact("big", &big).await.unwrap();
        // Spawned, as a server would: the artifact futures are Send on every backend.
        let read = tokio::spawn(async move { other.read_artifact(&big_hash).await.unwrap() });
        assert_eq!(read.await.unwrap(), big);
        let check = tokio::spawn(async move { store.check().await.unwrap() });
        assert!(check.await.unwrap().problems.is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_artifacts_url_that_is_not_s3_is_refused() {
    let home = tempfile::tempdir().unwrap();
    for url in ["http://bucket/x", "s3://", "/tmp/artifacts"] {
        let options = StoreOptions { artifacts_url: Some(url.into()), ..StoreOptions::default() };
        let err = Store::open_with_options(home.path(), &options).await.unwrap_err().to_string();
        assert!(err.contains("s3://BUCKET"), "{url}: {err}");
    }
}

/// The versions the `production` alias points at (there must be exactly one).
async fn production_versions(store: &Store) -> Vec<i64> {
    let all = store.model_versions().await.unwrap();
    all.into_iter().filter(|v| v.aliases.iter().any(|a| a == "production")).map(|v| v.version).collect()
}

/// Several handles (separate connection pools, like separate processes) promote different
/// versions to production at the same instant, round after round, some rounds mixed with
/// rollbacks. After each round exactly one version is in production, and the alias history is
/// one unbroken chain in which every move names the version it really replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_promotions_leave_exactly_one_production_version() {
    const HANDLES: usize = 4;
    const ROUNDS: usize = 30;
    const VERSIONS: usize = 8;
    on_each(|config, store| async move {
        for k in 0..VERSIONS as u8 {
            version(&store, &[b'p', k]).await;
        }
        let mut handles = vec![store.clone()];
        for _ in 1..HANDLES {
            handles.push(config.open().await);
        }
        let mut n_events = 0;
        for round in 0..ROUNDS {
            let start = Arc::new(tokio::sync::Barrier::new(HANDLES));
            let mut tasks = Vec::new();
            for (i, s) in handles.iter().enumerate() {
                let (s, start) = (s.clone(), start.clone());
                // Every third round after the first, half the tasks roll back instead.
                let roll_back = round > 0 && round % 3 == 0 && i % 2 == 1;
                let v = ((round + i) % VERSIONS + 1) as i64; // distinct within a round
                tasks.push(tokio::spawn(async move {
                    start.wait().await;
                    if roll_back {
                        s.rollback("sentiment", "production").await.unwrap();
                    } else {
                        s.set_alias("sentiment", "production", v, &format!("round {round} task {i}")).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            n_events += HANDLES;

            let production = production_versions(&store).await;
            assert_eq!(production.len(), 1, "round {round}: exactly one production version, got {production:?}");
            let events = store.alias_events("sentiment").await.unwrap();
            assert_eq!(events.len(), n_events, "round {round}: one event per move");
            assert_eq!(events[0].previous_version, None);
            for pair in events.windows(2) {
                assert_eq!(pair[1].previous_version, Some(pair[0].version), "round {round}: the history is a chain");
                if let Some(from) = pair[1].reason.strip_prefix("rollback from version ") {
                    assert_eq!(from.parse::<i64>().ok(), Some(pair[0].version), "round {round}: {pair:?}");
                    assert_eq!(pair[0].previous_version, Some(pair[1].version), "round {round}: {pair:?}");
                }
            }
            assert_eq!(events.last().unwrap().version, production[0]);
            // Every promotion of this round is recorded once.
            for i in 0..HANDLES {
                let promoted = events.iter().filter(|e| e.reason == format!("round {round} task {i}")).count();
                let rolled_back = round > 0 && round % 3 == 0 && i % 2 == 1;
                assert_eq!(promoted, usize::from(!rolled_back), "round {round} task {i}");
            }
            for s in &handles {
                assert_eq!(s.resolve("sentiment").await.unwrap().version, production[0], "every handle agrees");
            }
        }
        assert!(store.check().await.unwrap().problems.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_migration_missing_below_the_highest_applied_one_still_runs() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open_with(home.path(), None).await.unwrap();
    assert_eq!(store.llm_usage().await.unwrap().calls, 0);
    drop(store);
    // A store made by a build that had migration 4 but not yet 2: no llm tables, no row for 2.
    let url = format!("sqlite://{}", home.path().join("keel.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("DROP TABLE llm_calls; DROP TABLE llm_cache; DELETE FROM schema_migrations WHERE version = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let store = Store::open_with(home.path(), None).await.unwrap();
    assert_eq!(store.llm_usage().await.unwrap().calls, 0, "migration 2 ran on reopening");
}
