//! Hostile and unlucky requests (issue 19): what a 5xx tells the client and what it keeps for
//! the log, per-field limits, the Host allow-list, overload, and work cut off at the deadline.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use keel_server::{AppState, Limits, LoadedModel};
use serde_json::Value;
use tower::ServiceExt;

use super::embedders::Failing;
use super::{encoder, json_of, model};

/// What the server logs while a test runs (this thread's subscriber; `#[tokio::test]` runs
/// the handlers on the test's thread).
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub(crate) fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// One request with extra headers; the status, response headers and body.
pub(crate) async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn request_id(headers: &HeaderMap) -> String {
    headers.get("x-request-id").expect("every answer has x-request-id").to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_5xx_names_a_request_id_and_keeps_the_cause_for_the_log() {
    let (logs, _guard) = Logs::capture();
    let state = AppState::new(encoder(), Some(LoadedModel { fallback: None, ..model() }), Limits::default());
    state.set_encoder(Failing::new());
    let app = keel_server::router(state);
    // The failing encoder's message stands for a cause (a path, a SQL error, a remote body).
    let cause = "index out of range";
    for (uri, body) in [("/v1/embeddings", r#"{"input": "x"}"#), ("/v1/classify", r#"{"inputs": ["x"]}"#)] {
        let (status, headers, body) = send(&app, "POST", uri, &[("x-request-id", "client-7.a_B")], body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert!(!body.contains(cause), "{uri}: the cause stays out of the answer: {body}");
        assert_eq!(request_id(&headers), "client-7.a_B", "a sane client id is kept");
        assert_eq!(json_of(&body)["error"]["request_id"], "client-7.a_B", "{body}");
    }
    let logged = logs.text();
    assert!(
        logged.lines().any(|l| l.contains("client-7.a_B") && l.contains(cause)),
        "the log has the cause with the request id:\n{logged}"
    );

    // An id that is not sane is replaced; without one, each request gets its own.
    let long = "a".repeat(65);
    let mut seen = Vec::new();
    for given in ["bad id", "<script>", long.as_str(), ""] {
        let headers: Vec<(&str, &str)> = if given.is_empty() { vec![] } else { vec![("x-request-id", given)] };
        let (_, h, body) = send(&app, "POST", "/v1/embeddings", &headers, r#"{"input": "x"}"#).await;
        let id = request_id(&h);
        assert_ne!(id, given);
        assert!(id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{id}");
        assert_eq!(json_of(&body)["error"]["request_id"], Value::from(id.clone()), "{body}");
        seen.push(id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "fresh ids differ");
    // Successful answers carry the id too.
    let (status, h, _) = send(&app, "GET", "/healthz", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!request_id(&h).is_empty());
}

#[tokio::test]
async fn an_unreadable_index_answers_a_generic_503_and_logs_where() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    super::search::build(dir.path(), &super::search::DOCS);
    let svc = keel_server::SearchService::open(dir.path(), encoder()).unwrap();
    let state = AppState::new(encoder(), None, Limits::default());
    let app = keel_server::router_with(state, keel_server::search_extension(svc));
    // `keel index` died writing the pointer to the current generation.
    std::fs::write(dir.path().join("CURRENT"), "gen-\u{1}garbage").unwrap();
    let (status, headers, body) = send(&app, "POST", "/v1/search", &[], r#"{"query": "tea", "mode": "bm25"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let where_ = dir.path().to_str().unwrap();
    assert!(!body.contains(where_), "no path in the answer: {body}");
    let id = request_id(&headers);
    assert_eq!(json_of(&body)["error"]["request_id"], Value::from(id.clone()), "{body}");
    let logged = logs.text();
    assert!(logged.lines().any(|l| l.contains(&id) && l.contains(where_)), "the log says where:\n{logged}");
}

/// The `limit` an over-limit answer names: (name, value).
fn limit_of(body: &str) -> (String, u64) {
    let v = json_of(body);
    (v["error"]["limit"]["name"].as_str().unwrap_or("").to_owned(), v["error"]["limit"]["value"].as_u64().unwrap_or(0))
}

#[tokio::test]
async fn each_field_has_a_limit_and_an_answer_that_names_it() {
    let home = tempfile::tempdir().unwrap();
    let store = keel_store::Store::open(home.path()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    super::search::build(dir.path(), &super::search::DOCS);
    // The defaults: 64 KiB a text, 4 KiB a query or question, 256 bytes a label, 256 texts.
    let limits = Limits::default();
    let search = keel_server::SearchService::open(dir.path(), encoder()).unwrap().with_limits(limits.clone());
    let answer = keel_server::AnswerService::open(dir.path(), encoder(), None, store.clone())
        .unwrap()
        .with_limits(limits.clone());
    let options = keel_server::Options { limits, store: Some(store), ..keel_server::Options::default() };
    let state = AppState::with_options(encoder(), Some(model()), options);
    let extension = keel_server::search_extension(search).merge(keel_server::answer_extension(answer));
    let app = keel_server::router_with(state, extension);

    // One 2 MB field fits no limit (the body limit is 2 MiB, so it gets as far as the field).
    let big = "x".repeat(2_000_000);
    let text = "y".repeat(64 * 1024 + 1);
    let long = "z".repeat(4 * 1024 + 1);
    let cases: Vec<(&str, String, &str, u64)> = vec![
        ("/v1/classify", serde_json::json!({"inputs": ["fine", big]}).to_string(), "max_text_bytes", 65536),
        ("/v1/classify", serde_json::json!({"inputs": [text]}).to_string(), "max_text_bytes", 65536),
        ("/v1/embeddings", serde_json::json!({"input": text}).to_string(), "max_text_bytes", 65536),
        ("/v1/embeddings", serde_json::json!({"input": ["a", text]}).to_string(), "max_text_bytes", 65536),
        ("/v1/search", serde_json::json!({"query": long, "mode": "bm25"}).to_string(), "max_query_bytes", 4096),
        ("/v1/answer", serde_json::json!({"question": long, "mode": "bm25"}).to_string(), "max_question_bytes", 4096),
        ("/v1/feedback", serde_json::json!({"id": "p", "label": "l".repeat(257)}).to_string(), "max_label_bytes", 256),
        ("/v1/classify", serde_json::json!({"inputs": vec!["a"; 257]}).to_string(), "max_inputs", 256),
        ("/v1/embeddings", serde_json::json!({"input": vec!["a"; 257]}).to_string(), "max_inputs", 256),
    ];
    for (uri, body, name, value) in cases {
        let (status, _, answer) = send(&app, "POST", uri, &[], &body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri} {name}: {answer}");
        assert_eq!(super::error_type(&answer), "too_large");
        assert_eq!(limit_of(&answer), (name.to_owned(), value), "{uri}: {answer}");
        assert!(json_of(&answer)["error"]["message"].as_str().unwrap().contains(name), "{answer}");
    }
    // At the limit is fine.
    let at = "w".repeat(4 * 1024);
    let (status, _, answer) =
        send(&app, "POST", "/v1/search", &[], &serde_json::json!({"query": at, "mode": "bm25"}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // An empty list is 422; malformed JSON is a JSON 400 on every route that reads a body; a
    // known route with another method is a JSON 405.
    for (uri, empty) in [("/v1/classify", r#"{"inputs": []}"#), ("/v1/embeddings", r#"{"input": []}"#)] {
        let (status, _, answer) = send(&app, "POST", uri, &[], empty).await;
        assert_eq!((status, super::error_type(&answer).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    }
    for uri in ["/v1/classify", "/v1/embeddings", "/v1/feedback", "/v1/search", "/v1/answer"] {
        for malformed in ["{", "not json", "{\"x"] {
            let (status, _, answer) = send(&app, "POST", uri, &[], malformed).await;
            let got = (status, super::error_type(&answer));
            assert_eq!(got, (StatusCode::BAD_REQUEST, "invalid_request".to_owned()), "{uri} {malformed}");
        }
    }
    let (status, _, answer) = send(&app, "GET", "/v1/classify", &[], "").await;
    assert_eq!((status, super::error_type(&answer).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

#[tokio::test]
async fn the_text_limit_is_configurable() {
    let limits = Limits { max_text_bytes: 10, ..Limits::default() };
    let app = keel_server::router(AppState::new(encoder(), Some(model()), limits));
    let (status, _, answer) = send(&app, "POST", "/v1/classify", &[], r#"{"inputs": ["0123456789"]}"#).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _, answer) = send(&app, "POST", "/v1/classify", &[], r#"{"inputs": ["0123456789!"]}"#).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(limit_of(&answer), ("max_text_bytes".to_owned(), 10));
}

#[tokio::test]
async fn only_allowed_host_headers_are_served() {
    let app = keel_server::router(AppState::new(encoder(), Some(model()), Limits::default()));
    for host in ["localhost", "localhost:8080", "LOCALHOST.", "127.0.0.1:1234", "[::1]:8080", "[::1]", "::1"] {
        let (status, _, body) = send(&app, "GET", "/healthz", &[("host", host)], "").await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    // A rebinding page: the browser sends the attacker's name.
    for host in ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example:80"] {
        for (method, uri, body) in
            [("GET", "/healthz", ""), ("POST", "/v1/classify", r#"{"inputs": ["x"]}"#), ("GET", "/nope", "")]
        {
            let (status, _, answer) = send(&app, method, uri, &[("host", host)], body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host} {uri}: {answer}");
            assert_eq!(super::error_type(&answer), "host_not_allowed");
        }
    }
    // Allowed by configuration: a name, or any host.
    let options = keel_server::Options { allowed_hosts: vec!["keel.internal:9000".into()], ..Default::default() };
    let app = keel_server::router(AppState::with_options(encoder(), None, options));
    assert_eq!(send(&app, "GET", "/healthz", &[("host", "keel.internal:8080")], "").await.0, StatusCode::OK);
    assert_eq!(send(&app, "GET", "/healthz", &[("host", "localhost")], "").await.0, StatusCode::OK);
    assert_eq!(send(&app, "GET", "/healthz", &[("host", "evil.example")], "").await.0, StatusCode::FORBIDDEN);
    let options = keel_server::Options { allowed_hosts: vec!["*".into()], ..Default::default() };
    let app = keel_server::router(AppState::with_options(encoder(), None, options));
    assert_eq!(send(&app, "GET", "/healthz", &[("host", "evil.example")], "").await.0, StatusCode::OK);
}
