//! Serving follows the version's model family: a head that reads raw text (the n-gram model, the
//! sparse TF-IDF SVM, calibrated or not), trained here on real movie-review sentences, answers
//! from the request's text without the encoder, beside, before or behind embedding heads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use keel_server::{AppState, Challenger, ChallengerMode, Embed, EncoderSlot, Options, Rollout};
use keel_store::Store;
use keel_train::Head;
use serde_json::{Value, json};

use super::embedders::Counting;
use super::rollout::{register, register_head};
use super::{call, encoder, error_type, json_of, logged, model};

/// Labelled sentences from the quickstart's data (the unquoted rows: no CSV parser needed).
fn sentences(n: usize) -> (Vec<String>, Vec<usize>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sentiment/movie_sentences.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let (mut texts, mut y) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let mut parts = line.splitn(4, ',');
        let (_, _, label, text) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""));
        let class = match label {
            Some("negative") => 0,
            Some("positive") => 1,
            _ => continue,
        };
        if text.is_empty() || text.contains('"') {
            continue;
        }
        texts.push(text.to_owned());
        y.push(class);
        if texts.len() == n {
            break;
        }
    }
    assert_eq!(texts.len(), n, "enough labelled sentences");
    (texts, y)
}

fn labels() -> Vec<String> {
    vec!["negative".into(), "positive".into()]
}

fn ngram_head() -> Head {
    let (texts, y) = sentences(600);
    Head::Ngram(keel_train::NgramModel::fit(&texts, &y, labels(), &keel_train::NgramConfig::default()).unwrap().0)
}

/// The sparse TF-IDF SVM, temperature-scaled as the pipeline serves it.
fn sparse_head() -> Head {
    let (texts, y) = sentences(600);
    let (m, _) = keel_train::SparseModel::fit(&texts, &y, labels(), &keel_train::SparseConfig::default()).unwrap();
    Head::Sparse(m).with_temperature(0.5)
}

/// The label `head` gives `text` on its own.
fn label_of(head: &Head, text: &str) -> String {
    let p = head.predict_proba_text(text).unwrap();
    head.labels()[(0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()].clone()
}

const REVIEWS: [&str; 4] = [
    "a wonderful, moving film with superb acting",
    "dull, lifeless and far too long",
    "I loved every minute of it",
    "the plot is a mess and the jokes fall flat",
];

#[tokio::test]
async fn a_text_head_in_production_answers_from_the_text_with_no_encoder_call() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    let head = ngram_head();
    register_head(&store, "ngram", "the-encoder-it-never-reads", &head, None).await;
    store.set_alias("sentiment", "production", 1, "first").await.unwrap();
    // An encoder that panics if it is ever called.
    let refusing = Counting::refusing();
    let encoders = EncoderSlot::from(refusing.clone());
    let first = keel_server::load_model(&store, "sentiment", &encoders).await.unwrap();
    assert!(!first.needs_encoder());
    let rollout = Rollout { follow: Some("sentiment".into()), ..Rollout::default() };
    let options = Options { store: Some(store.clone()), rollout, ..Options::default() };
    let state = AppState::with_options(encoders, Some(first), options);
    let app = keel_server::router(state.clone());

    let (status, body) = call(&app, "POST", "/v1/classify", Some(&json!({"inputs": REVIEWS}).to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!((v["model"].as_str(), v["degraded"].as_bool()), (Some("sentiment@1"), Some(false)), "{body}");
    for (p, text) in v["predictions"].as_array().unwrap().iter().zip(REVIEWS) {
        assert_eq!(p["label"], label_of(&head, text), "{body}");
    }
    assert_eq!(refusing.texts(), 0, "the encoder was never called");
    let ready = json_of(&call(&app, "GET", "/readyz", None).await.1);
    assert_eq!((ready["status"].as_str(), ready["degraded"].as_bool()), (Some("ready"), Some(false)));
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_encoder_calls_total 0\n"), "{metrics}");
    assert!(metrics.contains(r#"keel_model_info{model="sentiment@1",encoder="none",role="primary"} 1"#), "{metrics}");
    // The prediction log records text heads' answers like any other.
    state.flush_log().await;
    let rows = logged(&store).await;
    assert_eq!(rows.len(), REVIEWS.len());
    assert!(rows.iter().all(|r| r.model == "sentiment@1" && !r.degraded), "{rows:?}");
    let mut texts: Vec<&str> = rows.iter().map(|r| r.input_text.as_str()).collect();
    texts.sort_unstable();
    let mut want = REVIEWS.to_vec();
    want.sort_unstable();
    assert_eq!(texts, want);
}

#[tokio::test]
async fn with_only_text_heads_no_encoder_is_loaded_and_embeddings_answer_a_json_503() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    register_head(&store, "ngram", "all-MiniLM-L6-v2@000000000000", &ngram_head(), None).await;
    store.set_alias("sentiment", "production", 1, "first").await.unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let counted = loads.clone();
    let encoders = EncoderSlot::lazy(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Err("no encoder model in /nowhere".into())
    });
    let first = keel_server::load_model(&store, "sentiment", &encoders).await.unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 0, "a text head loads no encoder");
    let app = keel_server::router(AppState::new(encoders, Some(first), keel_server::Limits::default()));
    let (status, body) = call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["superb"]}"#)).await;
    assert_eq!((status, json_of(&body)["degraded"].as_bool()), (StatusCode::OK, Some(false)), "{body}");
    let (_, models) = call(&app, "GET", "/v1/models", None).await;
    let data = json_of(&models)["data"].as_array().unwrap().clone();
    assert!(data.iter().all(|m| m["kind"] != "encoder"), "no encoder is listed: {models}");
    assert_eq!(data[0]["reads"], "text", "{models}");
    assert_eq!(loads.load(Ordering::SeqCst), 0);

    // Embeddings need the encoder: it cannot load, so an honest JSON 503, once per cause. The
    // cause (it names a path) goes to the log, not to the client.
    for _ in 0..2 {
        let (status, body) = call(&app, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await;
        assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
        assert!(!body.contains("/nowhere"), "{body}");
        assert!(json_of(&body)["error"]["request_id"].is_string(), "{body}");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "a failed load is not retried on every request");
    let (status, body) = call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["superb"]}"#)).await;
    assert_eq!((status, json_of(&body)["degraded"].as_bool()), (StatusCode::OK, Some(false)), "{body}");

    // A server with no encoder at all says so too.
    let bare = keel_server::router(AppState::new(EncoderSlot::none(), None, keel_server::Limits::default()));
    let (status, body) = call(&bare, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
}

/// Versions 1 (the embedding head with its n-gram fallback, production) and 2 (`challenger`, a
/// text head) of `sentiment`, followed with `mode` by a server on a counting encoder.
async fn embedding_and_text(
    challenger: &Head,
    mode: ChallengerMode,
) -> (tempfile::TempDir, Store, Arc<Counting>, Arc<AppState>) {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    let counting = Counting::new();
    assert_eq!(register(&store, "embedding", counting.id()).await.version, 1);
    assert_eq!(register_head(&store, "text", counting.id(), challenger, None).await.version, 2);
    store.set_alias("sentiment", "production", 1, "first").await.unwrap();
    store.set_alias("sentiment", "challenger", 2, "try it").await.unwrap();
    let encoders = EncoderSlot::from(counting.clone());
    let first = keel_server::load_model(&store, "sentiment", &encoders).await.unwrap();
    let rollout = Rollout {
        follow: Some("sentiment".into()),
        poll_interval: Duration::from_secs(3600),
        challenger: Some(Challenger { spec: "sentiment@challenger".into(), mode }),
    };
    let options = Options { store: Some(store.clone()), rollout, ..Options::default() };
    let state = AppState::with_options(encoders, Some(first), options);
    state.reload().await;
    assert_eq!(state.challenger().unwrap().version.tag(), "sentiment@2");
    (home, store, counting, state)
}

#[tokio::test]
async fn a_text_head_canary_answers_its_share_from_text_beside_an_embedding_production() {
    let sparse = sparse_head();
    let (_home, _store, counting, state) = embedding_and_text(&sparse, ChallengerMode::Canary { share: 0.5 }).await;
    let app = keel_server::router(state.clone());
    let production = model();
    let mut by_model = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..10 {
        let text = format!("{} (review {i})", REVIEWS[i % REVIEWS.len()]);
        let before = counting.texts();
        let (status, body) = call(&app, "POST", "/v1/classify", Some(&json!({"inputs": [text]}).to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v = json_of(&body);
        assert_eq!(v["degraded"], false, "{body}");
        let tag = v["model"].as_str().unwrap().to_owned();
        let got = v["predictions"][0]["label"].clone();
        if tag == "sentiment@2" {
            assert_eq!(got, label_of(&sparse, &text), "the canary answers from the text: {body}");
            assert_eq!(counting.texts(), before, "the canary's request is not embedded");
        } else {
            assert_eq!(tag, "sentiment@1");
            let vector = &encoder().embed(&[text.as_str()]).unwrap()[0];
            let p = production.head.predict_proba_embedding(vector).unwrap();
            let want = &production.head.labels()[usize::from(p[1] > p[0])];
            assert_eq!(got, Value::from(want.as_str()), "production answers from the embedding: {body}");
            assert_eq!(counting.texts(), before + 1, "production's request is embedded once");
        }
        *by_model.entry(tag).or_default() += 1;
    }
    assert_eq!(by_model["sentiment@1"], 5, "{by_model:?}");
    assert_eq!(by_model["sentiment@2"], 5, "{by_model:?}");
    let (_, models) = call(&app, "GET", "/v1/models", None).await;
    let reads: Vec<(String, String)> = json_of(&models)["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "classifier")
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["reads"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(reads, [("primary".into(), "embeddings".into()), ("canary".into(), "text".into())]);
}

#[tokio::test]
async fn a_text_head_shadow_scores_the_text_and_logs_beside_an_embedding_production() {
    let ngram = ngram_head();
    let (_home, store, counting, state) = embedding_and_text(&ngram, ChallengerMode::Shadow).await;
    let app = keel_server::router(state.clone());
    for t in REVIEWS {
        let (status, body) = call(&app, "POST", "/v1/classify", Some(&json!({"inputs": [t]}).to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(json_of(&body)["model"], "sentiment@1");
    }
    // Shadow scoring runs in a task after the answer; wait for its rows.
    let mut rows = Vec::new();
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        state.flush_log().await;
        rows = logged(&store).await;
        if rows.len() >= 2 * REVIEWS.len() {
            break;
        }
    }
    let shadow: Vec<_> = rows.iter().filter(|r| r.model == "sentiment@2").collect();
    assert_eq!(shadow.len(), REVIEWS.len(), "the shadow scored every request");
    for r in shadow {
        assert_eq!(r.label, label_of(&ngram, &r.input_text), "the shadow read the text: {r:?}");
    }
    assert_eq!(counting.texts(), REVIEWS.len(), "only production's requests were embedded");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains(r#"keel_predictions_total{model="sentiment@2",role="shadow"} 4"#), "{metrics}");
}

#[tokio::test]
async fn an_embedding_shadow_behind_a_text_production_embeds_off_the_request_path() {
    let ngram = ngram_head();
    let (_home, store, counting, state) = embedding_and_text(&ngram, ChallengerMode::Shadow).await;
    // Swap the roles: the text head answers, the embedding head shadows.
    store.set_alias("sentiment", "production", 2, "text first").await.unwrap();
    store.set_alias("sentiment", "challenger", 1, "embeddings behind").await.unwrap();
    state.reload().await;
    assert_eq!(state.model().unwrap().version.tag(), "sentiment@2");
    assert_eq!(state.challenger().unwrap().version.tag(), "sentiment@1");
    let app = keel_server::router(state.clone());
    for t in REVIEWS {
        let (status, body) = call(&app, "POST", "/v1/classify", Some(&json!({"inputs": [t]}).to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v = json_of(&body);
        assert_eq!((v["model"].as_str(), v["degraded"].as_bool()), (Some("sentiment@2"), Some(false)), "{body}");
        assert_eq!(v["predictions"][0]["label"], label_of(&ngram, t), "{body}");
    }
    let mut rows = Vec::new();
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        state.flush_log().await;
        rows = logged(&store).await;
        if rows.len() >= 2 * REVIEWS.len() {
            break;
        }
    }
    assert_eq!(rows.iter().filter(|r| r.model == "sentiment@1").count(), REVIEWS.len(), "the shadow scored each");
    assert_eq!(counting.texts(), REVIEWS.len(), "the shadow's texts were embedded, once each");
}
