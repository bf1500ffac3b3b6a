//! `keel serve` follows the version's model family: a version whose model reads text (here the
//! n-gram model, trained on the quickstart's sentences and registered through the store) is
//! served with no encoder anywhere on the machine.

use std::path::Path;

use keel_core::ContentHash;
use keel_store::{NewDataset, NewModelVersion, Store};
use keel_train::Head;
use serde_json::{Value, json};

use crate::{Server, http};

fn sentences() -> (Vec<String>, Vec<usize>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sentiment/movie_sentences.csv");
    let mut texts = Vec::new();
    let mut y = Vec::new();
    for row in csv::Reader::from_path(path).unwrap().records() {
        let row = row.unwrap();
        let class = match &row[2] {
            "negative" => 0,
            "positive" => 1,
            _ => continue,
        };
        texts.push(row[3].to_owned());
        y.push(class);
    }
    (texts, y)
}

/// Registers `head` as version 1 of `sentiment` in production, as the pipeline would.
async fn register(home: &Path, head: &Head) {
    let store = Store::open(home).await.unwrap();
    let records = store.put_artifact("records", b"text,label\n").await.unwrap();
    let dataset = store
        .put_dataset(&NewDataset {
            id: ContentHash::of(b"dataset"),
            name: "reviews".into(),
            source: "movie_sentences.csv".into(),
            source_sha256: ContentHash::of(b"source"),
            rows_read: 1,
            n_records: 1,
            n_quarantined: 0,
            records_artifact: records.clone(),
            quarantine_artifact: records,
        })
        .await
        .unwrap();
    let run = store.start_run("train", &json!({}), "test", "localhost").await.unwrap();
    let artifact = store.put_artifact("head", &head.to_bytes()).await.unwrap();
    store
        .register_model_version(&NewModelVersion {
            name: "sentiment".into(),
            input_key: ContentHash::of(b"ngram"),
            run_id: run,
            dataset_id: dataset.fields.id,
            encoder_id: "all-MiniLM-L6-v2@not-installed".into(),
            head_artifact: artifact,
            metrics: json!({}),
        })
        .await
        .unwrap();
    store.set_alias("sentiment", "production", 1, "first").await.unwrap();
}

#[test]
fn keel_serve_answers_a_text_model_with_no_encoder_installed() {
    let home = tempfile::tempdir().unwrap();
    let (texts, y) = sentences();
    let labels = vec!["negative".to_owned(), "positive".to_owned()];
    let (ngram, _) = keel_train::NgramModel::fit(&texts, &y, labels, &keel_train::NgramConfig::default()).unwrap();
    let head = Head::Ngram(ngram);
    tokio::runtime::Runtime::new().unwrap().block_on(register(home.path(), &head));

    // No encoder model in the cache and no network: loading one would fail at start.
    let no_models = tempfile::tempdir().unwrap();
    let env = [("KEEL_MODELS", no_models.path().as_os_str()), ("KEEL_OFFLINE", std::ffi::OsStr::new("1"))];
    let server = Server::start_with_env(home.path(), &[], &env);
    let reviews = ["a wonderful, moving film", "dull and far too long"];
    let (status, body) = http::post(&server.addr, "/v1/classify", &json!({"inputs": reviews}).to_string());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["model"].as_str(), v["degraded"].as_bool()), (Some("sentiment@1"), Some(false)), "{body}");
    for (p, text) in v["predictions"].as_array().unwrap().iter().zip(reviews) {
        let probas = head.predict_proba_text(text).unwrap();
        let want = if probas[1] > probas[0] { "positive" } else { "negative" };
        assert_eq!(p["label"], want, "{body}");
    }
    let (status, body) = http::get(&server.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    // Embeddings need the encoder, which cannot load here: a JSON 503 that says why.
    let (status, body) = http::post(&server.addr, "/v1/embeddings", r#"{"input": "x"}"#);
    assert_eq!(status, 503, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["type"], "unavailable", "{body}");
    assert!(err["error"]["message"].as_str().unwrap().contains("encoder"), "{body}");
}
