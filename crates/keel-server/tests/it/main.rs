//! keel-server tests: the router called in-process (no sockets), with the real encoder, a head
//! trained here on real embeddings, a real n-gram fallback head and a real SQLite store. Failures
//! of the encoder are induced through the `Embed` trait (`embedders.rs`), and the tests that
//! depend on time run on tokio's paused clock.
//!
//! `#[tokio::test]` runs on one thread: requests joined with `tokio::join!` all reach the encoder
//! queue before its worker runs, which makes batching and a full queue deterministic.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod breaker;
mod embedders;
mod fuzzing;
mod hardening;
mod ops;
mod overload;
mod rollout;
mod search;
mod spill;
mod text_heads;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use keel_core::Matrix;
use keel_server::{AppState, Batching, Limits, LoadedModel, LogOptions, Options};
use keel_store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

// The real encoder (one per test binary, as the `Arc` a state holds) and its installed model.
use keel_test_support::{encoder_arc as encoder, minilm as installed};

/// A two-label head trained on a handful of real embeddings.
fn model() -> LoadedModel {
    let enc = encoder();
    let pos = ["a wonderful, moving film", "brilliant and funny", "I loved every minute", "superb acting, great story"];
    let neg = ["a dull, lifeless mess", "boring and far too long", "I hated it", "terrible acting, awful plot"];
    let texts: Vec<&str> = pos.iter().chain(neg.iter()).copied().collect();
    let vectors = enc.embed(&texts).unwrap();
    let (ngram, _) = keel_train::NgramModel::fit(
        &texts,
        &(0..8).map(|i| usize::from(i < 4)).collect::<Vec<_>>(),
        vec!["negative".into(), "positive".into()],
        &keel_train::NgramConfig::default(),
    )
    .unwrap();
    let x = Matrix::from_rows(&vectors, enc.dim()).unwrap();
    let y: Vec<usize> = (0..8).map(|i| usize::from(i < 4)).collect();
    let (head, _) =
        keel_train::fit(&x, &y, vec!["negative".into(), "positive".into()], &keel_train::LrConfig::default()).unwrap();
    let version = keel_store::ModelVersion {
        name: "sentiment".into(),
        version: 3,
        input_key: "k".into(),
        run_id: "r".into(),
        dataset_id: "d".into(),
        encoder_id: enc.id().into(),
        head_artifact: "h".into(),
        metrics: json!({}),
        created_at: "now".into(),
        aliases: vec!["production".into()],
    };
    LoadedModel {
        version,
        head: keel_train::Head::Logistic(head),
        fallback: Some(keel_train::Head::Ngram(ngram)),
        encoder: None,
    }
}

fn app(with_model: bool) -> axum::Router {
    let limits = Limits { max_body_bytes: 64 * 1024, max_inputs: 8, ..Limits::default() };
    keel_server::router(AppState::new(encoder(), with_model.then(model), limits))
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, String) {
    let (status, _, body) = call_with_headers(app, method, uri, body).await;
    (status, body)
}

async fn call_with_headers(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn error_type(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("error body is JSON: {body}"));
    v["error"]["type"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn classify_answers_with_the_model_version_and_probabilities() {
    let app = app(true);
    let (status, body) =
        call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["what a lovely, moving film", "awful and boring"]}"#))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model"], "sentiment@3");
    assert_eq!(v["degraded"], false);
    assert_eq!(v["predictions"][0]["label"], "positive");
    assert_eq!(v["predictions"][1]["label"], "negative");
    let scores = v["predictions"][0]["scores"].as_object().unwrap();
    assert_eq!(scores.len(), 2);
    assert_ne!(v["predictions"][0]["id"], v["predictions"][1]["id"]);
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let app = app(true);
    let cases: [(&str, StatusCode, &str); 5] = [
        ("{", StatusCode::BAD_REQUEST, "invalid_request"),
        (r#"{"inputs": []}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        (r#"{"inputs": "not a list"}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        (r#"{"inputs": ["a","b","c","d","e","f","g","h","i"]}"#, StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        (r#"{"inputs": ["a"], "extra": 1}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
    ];
    for (body, status, kind) in cases {
        let (got, resp) = call(&app, "POST", "/v1/classify", Some(body)).await;
        assert_eq!((got, error_type(&resp).as_str()), (status, kind), "{body} → {resp}");
    }
    let huge = format!(r#"{{"inputs": ["{}"]}}"#, "x".repeat(100 * 1024));
    let (got, resp) = call(&app, "POST", "/v1/classify", Some(&huge)).await;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    let (got, resp) = call(&app, "GET", "/nope", None).await;
    assert_eq!((got, error_type(&resp).as_str()), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn without_a_model_classify_is_not_ready_but_embeddings_work() {
    let app = app(false);
    let (status, body) = call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["x"]}"#)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "not_ready"));
    assert_eq!(call(&app, "GET", "/readyz", None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(call(&app, "GET", "/healthz", None).await.0, StatusCode::OK);
    let (status, _) = call(&app, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn embeddings_follow_the_openai_shape_in_float_and_base64() {
    let app = app(true);
    let req = r#"{"input": ["hello world", "bonjour"], "model": "all-MiniLM-L6-v2"}"#;
    let (status, body) = call(&app, "POST", "/v1/embeddings", Some(req)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "all-MiniLM-L6-v2");
    assert_eq!(v["data"][1]["index"], 1);
    let floats: Vec<f32> =
        v["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(floats.len(), 384);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);

    let req = r#"{"input": "hello world", "model": "m", "encoding_format": "base64"}"#;
    let (status, body) = call(&app, "POST", "/v1/embeddings", Some(req)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(decoded.len(), 384);
    for (a, b) in decoded.iter().zip(&floats) {
        assert!((a - b).abs() < 1e-6);
    }

    for bad in
        [r#"{"input": [1, 2, 3]}"#, r#"{"input": "x", "encoding_format": "hex"}"#, r#"{"input": "x", "dimensions": 7}"#]
    {
        let (status, body) = call(&app, "POST", "/v1/embeddings", Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad} → {body}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = app(true);
    call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["fine"]}"#)).await;
    call(&app, "POST", "/v1/classify", Some(r#"{"inputs": []}"#)).await;
    let (status, text) = call(&app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(r#"keel_http_requests_total{route="/v1/classify",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"keel_http_requests_total{route="/v1/classify",status="422"} 1"#), "{text}");
    assert!(text.contains(r#"keel_model_info{model="sentiment@3""#), "{text}");
    assert!(text.contains("keel_http_request_duration_seconds_bucket"), "{text}");
}

/// The value of one sample line (`name value`) in the Prometheus text.
pub(crate) fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("body is JSON: {body}"))
}

/// The label the fallback head alone gives `text`.
fn fallback_label(model: &LoadedModel, text: &str) -> String {
    let fallback = model.fallback.as_ref().unwrap();
    let p = fallback.predict_proba_text(text).unwrap();
    let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    fallback.labels()[best].clone()
}

/// Every row the store has logged.
async fn logged(store: &Store) -> Vec<keel_store::PredictionRecord> {
    store.predictions("0000", "9999").await.unwrap()
}

#[tokio::test]
async fn concurrent_requests_share_one_encoder_call_and_get_their_own_vectors() {
    let state = AppState::new(encoder(), Some(model()), Limits::default());
    let app = keel_server::router(state);
    let texts = ["the first text", "a second, longer text about films", "third", "and a fourth one"];
    let bodies: Vec<String> = texts.iter().map(|t| json!({"input": t}).to_string()).collect();
    let (a, b, c, d) = tokio::join!(
        call(&app, "POST", "/v1/embeddings", Some(&bodies[0])),
        call(&app, "POST", "/v1/embeddings", Some(&bodies[1])),
        call(&app, "POST", "/v1/embeddings", Some(&bodies[2])),
        call(&app, "POST", "/v1/embeddings", Some(&bodies[3])),
    );
    let alone = encoder().embed(&texts).unwrap();
    for ((status, body), want) in [a, b, c, d].into_iter().zip(&alone) {
        assert_eq!(status, StatusCode::OK, "{body}");
        let got: Vec<f32> = json_of(&body)["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let cosine: f32 = got.iter().zip(want).map(|(x, y)| x * y).sum();
        assert!(cosine > 0.9999, "batched vector differs from the one computed alone: cosine {cosine}");
    }
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_encoder_batch_requests_count 1\n"), "{metrics}");
    assert!(metrics.contains("keel_encoder_batch_requests_sum 4.0"), "{metrics}");
    assert!(metrics.contains("keel_encoder_batch_size_sum 4.0"), "{metrics}");
    assert!(metrics.contains("keel_encoder_queue_depth 0"), "{metrics}");
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_a_json_error() {
    let batching = Batching { queue_capacity: 1, retry_after_secs: 2, ..Batching::default() };
    let state = AppState::with_options(encoder(), Some(model()), Options { batching, ..Options::default() });
    let app = keel_server::router(state);
    let classify = r#"{"inputs": ["a wonderful film"]}"#;
    let embed = r#"{"input": "a wonderful film"}"#;
    let answers = tokio::join!(
        call_with_headers(&app, "POST", "/v1/classify", Some(classify)),
        call_with_headers(&app, "POST", "/v1/classify", Some(classify)),
        call_with_headers(&app, "POST", "/v1/embeddings", Some(embed)),
    );
    let answers = [answers.0, answers.1, answers.2];
    assert_eq!(answers[0].0, StatusCode::OK, "{}", answers[0].2);
    for (status, headers, body) in &answers[1..] {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(headers.get("retry-after").unwrap(), "2");
        assert_eq!(error_type(body), "overloaded");
    }
    // Once the queue has drained, requests are admitted again.
    assert_eq!(call(&app, "POST", "/v1/classify", Some(classify)).await.0, StatusCode::OK);
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_encoder_queue_rejected_total 2"), "{metrics}");
    assert!(metrics.contains(r#"keel_http_requests_total{route="/v1/classify",status="429"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_failing_encoder_degrades_classify_to_the_fallback_then_recovers() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    let options = Options { store: Some(store.clone()), ..Options::default() };
    let state = AppState::with_options(encoder(), Some(model()), options);
    let app = keel_server::router(state.clone());
    let texts = ["what a lovely, moving film", "awful and boring", "I loved the acting"];
    let req = json!({"inputs": texts}).to_string();

    let (status, body) = call(&app, "POST", "/v1/classify", Some(&req)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json_of(&body)["degraded"], false);
    assert_eq!(json_of(&call(&app, "GET", "/readyz", None).await.1)["status"], "ready");

    state.set_encoder(embedders::Failing::new());
    let (status, body) = call(&app, "POST", "/v1/classify", Some(&req)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!(v["degraded"], true);
    assert_eq!(v["model"], "sentiment@3");
    let reference = model();
    for (p, text) in v["predictions"].as_array().unwrap().iter().zip(texts) {
        assert_eq!(p["label"], fallback_label(&reference, text), "{body}");
        let sum: f64 = p["scores"].as_object().unwrap().values().map(|s| s.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{body}");
    }
    let degraded_ids: Vec<String> =
        v["predictions"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    let (status, body) = call(&app, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json_of(&body)["status"], "degraded");
    assert!(json_of(&body)["cause"].as_str().unwrap().contains("index"), "{body}");
    // Embeddings have no fallback: an honest 503.
    let (status, body) = call(&app, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_degraded_total 1\n"), "{metrics}");
    assert!(metrics.contains("keel_encoder_degraded 1\n"), "{metrics}");

    state.set_encoder(encoder());
    let (status, body) = call(&app, "POST", "/v1/classify", Some(&req)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!(v["degraded"], false);
    assert_eq!(v["predictions"][0]["label"], "positive");
    assert_eq!(v["predictions"][1]["label"], "negative");
    assert_eq!(json_of(&call(&app, "GET", "/readyz", None).await.1)["status"], "ready");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_encoder_degraded 0\n"), "{metrics}");

    // The log marks the fallback's answers.
    state.flush_log().await;
    let rows = logged(&store).await;
    assert_eq!(rows.len(), 9);
    for row in &rows {
        assert_eq!(row.degraded, degraded_ids.contains(&row.id), "{row:?}");
    }
}

#[tokio::test]
async fn without_a_fallback_a_failing_encoder_gives_503() {
    let state = AppState::new(encoder(), Some(LoadedModel { fallback: None, ..model() }), Limits::default());
    let app = keel_server::router(state.clone());
    state.set_encoder(embedders::Failing::new());
    let (status, body) = call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["fine"]}"#)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
    assert_eq!(call(&app, "GET", "/readyz", None).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn every_prediction_is_logged_in_the_background_and_takes_feedback() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    // Rows are written by the 1-second timer (flush_rows is out of reach).
    let log = LogOptions { flush_rows: 1000, ..LogOptions::default() };
    let options = Options { store: Some(store.clone()), log, ..Options::default() };
    let app = keel_server::router(AppState::with_options(encoder(), Some(model()), options));
    let texts = ["a wonderful, moving film", "dull", "I hated it", "superb", "boring and far too long"];
    let mut answered = Vec::new();
    for chunk in [&texts[..2], &texts[2..]] {
        let (status, body) = call(&app, "POST", "/v1/classify", Some(&json!({"inputs": chunk}).to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for (p, text) in json_of(&body)["predictions"].as_array().unwrap().iter().zip(chunk.iter()) {
            answered.push((p.clone(), (*text).to_owned()));
        }
    }
    let mut rows = Vec::new();
    for _ in 0..600 {
        rows = logged(&store).await;
        if rows.len() >= texts.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), texts.len(), "the writer flushes on its timer");
    for (p, text) in &answered {
        let row = rows.iter().find(|r| r.id == p["id"].as_str().unwrap()).expect("every answered id is logged");
        assert_eq!(row.model, "sentiment@3");
        assert_eq!(&row.input_text, text);
        assert_eq!(row.input_sha256, keel_core::sha256_hex(text.as_bytes()));
        assert_eq!(row.label, p["label"].as_str().unwrap());
        assert_eq!(row.scores, p["scores"]);
        assert!(!row.degraded);
        assert!(row.latency_ms >= 0.0);
        assert!(row.at.ends_with('Z') && row.at.len() == 24, "{}", row.at);
    }
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_prediction_log_written_total 5\n"), "{metrics}");
    assert!(metrics.contains("keel_prediction_log_dropped_total 0\n"), "{metrics}");

    let id = answered[0].0["id"].as_str().unwrap();
    let (status, body) =
        call(&app, "POST", "/v1/feedback", Some(&json!({"prediction_id": id, "label": "positive"}).to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&app, "POST", "/v1/feedback", Some(r#"{"id": "no-such-id", "label": "x"}"#)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = call(&app, "POST", "/v1/feedback", Some(&json!({"id": id, "label": " "}).to_string())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Feedback right after the answer, before the timer: the server writes the log first.
    let (_, body) = call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["brilliant and funny"]}"#)).await;
    let id = json_of(&body)["predictions"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) =
        call(&app, "POST", "/v1/feedback", Some(&json!({"id": id, "label": "positive"}).to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_full_log_buffer_spills_to_disk_and_every_row_reaches_the_store() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    // One row fits in the buffer; the writer (a task on this one-thread runtime) does not run
    // until the request has finished, so the other three go to the spill file.
    let log = LogOptions {
        capacity: 1,
        flush_rows: 1000,
        flush_interval: Duration::from_secs(3600),
        ..LogOptions::default()
    };
    let options = Options { store: Some(store.clone()), log, ..Options::default() };
    let state = AppState::with_options(encoder(), Some(model()), options);
    let app = keel_server::router(state.clone());
    let (status, body) = call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["a", "b", "c", "d"]}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<String> = json_of(&body)["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(home.path().join("spill/predictions.jsonl").exists(), "the spill file is open");
    assert!(logged(&store).await.is_empty(), "nothing is written before the flush");
    state.flush_log().await;
    let rows = logged(&store).await;
    let mut got: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every prediction is in the store, spilled ones included");
    let leftover: Vec<_> = std::fs::read_dir(home.path().join("spill")).unwrap().collect();
    assert!(leftover.is_empty(), "replayed spill files are removed: {leftover:?}");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_prediction_log_spilled_total 3\n"), "{metrics}");
    assert!(metrics.contains("keel_prediction_log_replayed_total 3\n"), "{metrics}");
    assert!(metrics.contains("keel_prediction_log_dropped_total 0\n"), "{metrics}");
}

#[tokio::test]
async fn feedback_without_a_store_is_not_ready() {
    let app = app(true);
    let (status, body) = call(&app, "POST", "/v1/feedback", Some(r#"{"id": "x", "label": "positive"}"#)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "not_ready"));
}
