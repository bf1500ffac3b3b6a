//! The router under random and mutated requests (issue 19): every route, valid bodies mutated
//! byte by byte and value by value, random bytes, odd methods and headers. Whatever comes in,
//! the server answers: no panic, no 5xx but 503/504, and every error a JSON error body.

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use keel_server::{AppState, Limits, SearchService, router_with, search_extension};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::search::{DOCS, build};
use crate::{encoder, model};
use keel_test_support::Rng;

/// Routes with a valid body each (GET routes take none).
fn seeds() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("POST", "/v1/classify", json!({"inputs": ["a wonderful film", "dull"]})),
        ("POST", "/v1/embeddings", json!({"input": ["green tea"], "encoding_format": "float"})),
        ("POST", "/v1/embeddings", json!({"input": "one text", "encoding_format": "base64", "dimensions": 8})),
        ("POST", "/v1/feedback", json!({"prediction_id": "p-1", "label": "positive"})),
        (
            "POST",
            "/v1/search",
            json!({"query": "green tea water", "k": 2, "mode": "hybrid", "filter": {"room": "kitchen"}}),
        ),
        ("POST", "/v1/search", json!({"query": "bike chain", "mode": "bm25", "rrf_k": 60.0})),
        ("GET", "/v1/models", Value::Null),
        ("GET", "/healthz", Value::Null),
        ("GET", "/readyz", Value::Null),
        ("GET", "/metrics", Value::Null),
        ("GET", "/openapi.json", Value::Null),
    ]
}

/// A JSON value of a random kind, some of them hostile.
fn odd_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 9 } else { 12 }) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(1e308),
        5 => json!(-0.5),
        6 => json!(""),
        7 => json!("é☕\u{0}\u{7f}<|im_start|>\u{202e}"),
        8 => json!("x".repeat(rng.below(3) * 40_000)),
        9 => Value::Array((0..rng.below(4)).map(|_| odd_value(rng, depth + 1)).collect()),
        10 => json!({"nested": odd_value(rng, depth + 1)}),
        _ => Value::Array((0..300).map(|i| json!(format!("t{i}"))).collect()),
    }
}

/// `seed` with one field replaced, added or removed.
fn mutate_value(rng: &mut Rng, seed: &Value) -> Value {
    let Value::Object(map) = seed else { return odd_value(rng, 0) };
    let mut map = map.clone();
    let keys: Vec<String> = map.keys().cloned().collect();
    match rng.below(3) {
        0 if !keys.is_empty() => {
            let k = rng.pick(&keys).clone();
            map.insert(k, odd_value(rng, 0));
        }
        1 if !keys.is_empty() => {
            map.remove(rng.pick(&keys).as_str());
        }
        _ => {
            map.insert(rng.pick(&["extra", "k", "mode", "model", "version", "id"]).to_string(), odd_value(rng, 0));
        }
    }
    Value::Object(map)
}

/// Bytes of `text` flipped, cut, doubled or spliced with junk.
fn mutate_bytes(rng: &mut Rng, text: &[u8]) -> Vec<u8> {
    let mut b = text.to_vec();
    for _ in 0..=rng.below(4) {
        let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
        match rng.below(6) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            1 => b.truncate(at),
            2 => b.insert(at, *rng.pick(b"{}[]\",:\\\x00\xff\xc3")),
            3 if !b.is_empty() => {
                b.remove(at);
            }
            4 => {
                let tail = b[at..].to_vec();
                b.extend_from_slice(&tail);
            }
            _ => b.splice(at..at, "\\ud800\"\u{feff}".bytes()).for_each(drop),
        }
    }
    b
}

#[tokio::test]
async fn random_and_mutated_requests_to_every_route_get_an_answer_never_a_panic_or_a_bare_500() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &DOCS);
    // As `keel serve` builds it: the model, the server's limits, the search extension merged in.
    let svc = SearchService::open(dir.path(), encoder()).unwrap();
    let limits = Limits { max_body_bytes: 256 * 1024, ..Limits::default() };
    let router = router_with(AppState::new(encoder(), Some(model()), limits), search_extension(svc));
    let seeds = seeds();
    let mut rng = Rng(0x5eed_1900_0000_0001);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..4000 {
        let (seed_method, uri, seed_body) = rng.pick(&seeds).clone();
        let method =
            if rng.below(10) == 0 { *rng.pick(&["GET", "PUT", "DELETE", "PATCH", "POST"]) } else { seed_method };
        let uri = match rng.below(20) {
            0 => "/v1/nothing-here",
            1 => "/v1/classify/extra",
            _ => uri,
        };
        let body: Vec<u8> = match rng.below(5) {
            _ if seed_body.is_null() && rng.below(2) == 0 => Vec::new(),
            0 => seed_body.to_string().into_bytes(),
            1 => mutate_value(&mut rng, &seed_body).to_string().into_bytes(),
            2 | 3 => mutate_bytes(&mut rng, seed_body.to_string().as_bytes()),
            _ => (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect(),
        };
        let mut req = Request::builder().method(method).uri(uri);
        match rng.below(6) {
            0 => {}
            1 => req = req.header("content-type", "text/plain"),
            2 => req = req.header("content-type", "application/json; charset=latin1"),
            _ => req = req.header("content-type", "application/json"),
        }
        match rng.below(8) {
            0 => req = req.header("host", "attacker.example"),
            1 => req = req.header("host", "localhost:8080"),
            2 => req = req.header("x-request-id", "x".repeat(300)),
            3 => req = req.header("x-request-id", "a b\tc"),
            4 => req = req.header("accept", "text/event-stream"),
            _ => {}
        }
        let what = format!("case {case}: {method} {uri} {:?}", String::from_utf8_lossy(&body[..body.len().min(200)]));
        let resp = router.clone().oneshot(req.body(Body::from(body)).unwrap()).await.expect(&what);
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect(&what).to_bytes();
        *statuses.entry(status.as_u16()).or_default() += 1;
        assert!(
            !status.is_server_error() || matches!(status.as_u16(), 503 | 504),
            "{what} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() || status.is_server_error() {
            let v: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{what} answered {status} with a body that is not JSON ({e})"));
            assert!(v["error"]["type"].is_string() && v["error"]["message"].is_string(), "{what}: {v}");
        }
    }
    // The cases reached the handlers, not only the parsers and the Host check.
    assert!(statuses.get(&200).copied().unwrap_or(0) > 200, "{statuses:?}");
    assert!(statuses.keys().filter(|s| (400..500).contains(*s)).count() >= 4, "{statuses:?}");
}
