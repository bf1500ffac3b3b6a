//! keel-server tests: the router called in-process (no sockets), with the real encoder and a
//! head trained here on real embeddings.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use keel_core::Matrix;
use keel_embed::{Encoder, EncoderConfig, PullOptions};
use keel_server::{AppState, Limits, LoadedModel};
use serde_json::{Value, json};
use tower::ServiceExt;

fn encoder() -> Arc<Encoder> {
    static ENCODER: OnceLock<Arc<Encoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            let installed = keel_embed::pull("all-MiniLM-L6-v2", &PullOptions::from_env()).expect("encoder model");
            Arc::new(Encoder::load(&installed, EncoderConfig::default()).expect("encoder loads"))
        })
        .clone()
}

/// A two-label head trained on a handful of real embeddings.
fn model() -> LoadedModel {
    let enc = encoder();
    let pos = ["a wonderful, moving film", "brilliant and funny", "I loved every minute", "superb acting, great story"];
    let neg = ["a dull, lifeless mess", "boring and far too long", "I hated it", "terrible acting, awful plot"];
    let texts: Vec<&str> = pos.iter().chain(neg.iter()).copied().collect();
    let vectors = enc.embed(&texts).unwrap();
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
    LoadedModel { version, head }
}

fn app(with_model: bool) -> axum::Router {
    let limits = Limits { max_body_bytes: 64 * 1024, max_inputs: 8 };
    keel_server::router(AppState::new(encoder(), with_model.then(model), limits))
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
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
