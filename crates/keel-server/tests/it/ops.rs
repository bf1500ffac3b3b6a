//! Operations: OpenAPI document, deadlines, metrics formats, spill replay at start, and a real
//! socket server that drains its requests and its log on shutdown.

use std::time::Duration;

use axum::http::StatusCode;
use keel_server::{AppState, Batching, Limits, LogOptions, Options};
use keel_store::{PredictionRecord, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::embedders::Stalled;
use super::{call, call_with_headers, encoder, error_type, json_of, logged, model};

#[tokio::test]
async fn openapi_lists_every_route_and_each_listed_route_answers() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    let options = Options { store: Some(store), admin_token: Some("t".into()), ..Options::default() };
    let app = keel_server::router(AppState::with_options(encoder(), Some(model()), options));
    let (status, body) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let doc = json_of(&body);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut listed: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            listed.push((method.to_uppercase(), path.clone()));
        }
    }
    listed.sort();
    let routes = [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/readyz"),
        ("GET", "/v1/models"),
        ("POST", "/v1/admin/promote"),
        ("POST", "/v1/admin/reload"),
        ("POST", "/v1/admin/rollback"),
        ("POST", "/v1/classify"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/feedback"),
    ];
    let mut want: Vec<(String, String)> = routes.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    want.sort();
    assert_eq!(listed, want);
    for (method, path) in &listed {
        let (status, body) = call(&app, method, path, if method == "POST" { Some("{}") } else { None }).await;
        // Every listed route exists: it answers, perhaps refusing the empty body or the missing
        // token, but never with the router's 404 or a 405.
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("no such route"),
            "{method} {path}: {status} {body}"
        );
    }
    // And a route that is not listed does not exist.
    let (status, body) = call(&app, "GET", "/v1/admin/promote", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

/// Yields until one request waits in the encoder queue (its deadline timer is then set).
async fn until_queued(app: &axum::Router) {
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        if call(app, "GET", "/metrics", None).await.1.contains("keel_encoder_queue_depth 1\n") {
            return;
        }
    }
    panic!("no request reached the encoder queue");
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_cuts_off_a_slow_request_and_classify_falls_back_first() {
    // The encoder stalls until released; the paused clock moves only when the test advances it
    // (a blocking call in flight stops tokio from advancing it by itself).
    let stalled = Stalled::new();
    let batching = Batching { deadline: Duration::from_millis(150), ..Batching::default() };
    let limits = Limits { request_deadline: Duration::from_millis(400), ..Limits::default() };
    let options = Options { batching, limits, ..Options::default() };
    let app = keel_server::router(AppState::with_options(stalled.clone(), Some(model()), options));
    // Classify: the encoder misses its deadline, the fallback answers within the request's.
    let request = {
        let app = app.clone();
        tokio::spawn(
            async move { call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["a wonderful film"]}"#)).await },
        )
    };
    stalled.started().await;
    tokio::time::advance(Duration::from_millis(200)).await;
    let (status, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json_of(&body)["degraded"], true);
    // Embeddings have no fallback. This one waits in the queue behind the stalled call (the
    // worker is still blocked on it) until its deadline: overload, so 429 with Retry-After.
    let request = {
        let app = app.clone();
        tokio::spawn(async move { call(&app, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await })
    };
    until_queued(&app).await;
    tokio::time::advance(Duration::from_millis(200)).await;
    let (status, body) = request.await.unwrap();
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, "overloaded"), "{body}");
    stalled.release();

    // With the encoder's own deadline above the request's, the request deadline answers.
    let stalled = Stalled::new();
    let batching = Batching { deadline: Duration::from_secs(10), ..Batching::default() };
    let limits = Limits { request_deadline: Duration::from_millis(300), ..Limits::default() };
    let app = keel_server::router(AppState::with_options(
        stalled.clone(),
        None,
        Options { batching, limits, ..Options::default() },
    ));
    let request = {
        let app = app.clone();
        tokio::spawn(async move { call_with_headers(&app, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await })
    };
    stalled.started().await;
    tokio::time::advance(Duration::from_millis(400)).await;
    let (status, headers, body) = request.await.unwrap();
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded"), "{body}");
    assert!(headers.contains_key("retry-after"));
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_deadline_exceeded_total 1\n"), "{metrics}");
    assert!(metrics.contains(r#"keel_http_requests_total{route="/v1/embeddings",status="503"} 1"#), "{metrics}");
    stalled.release();
}

#[tokio::test]
async fn metrics_come_as_prometheus_text_or_openmetrics_on_request() {
    let app = keel_server::router(AppState::new(encoder(), Some(model()), Limits::default()));
    call(&app, "POST", "/v1/classify", Some(r#"{"inputs": ["fine"]}"#)).await;
    let (status, headers, text) = call_with_headers(&app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(text.contains("# TYPE keel_http_requests_total counter\n"), "{text}");
    assert!(text.contains("# TYPE keel_encoder_queue_depth gauge\n"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    let req = axum::http::Request::builder()
        .uri("/metrics")
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .body(axum::body::Body::empty())
        .unwrap();
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = app.clone().oneshot(req).await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let om = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(om.contains("# TYPE keel_http_requests counter\n"), "{om}");
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
}

#[tokio::test]
async fn rows_an_earlier_process_spilled_are_replayed_at_start() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    let row = PredictionRecord {
        id: "0190-spilled".into(),
        at: "2026-01-01T00:00:00.000Z".into(),
        model: "sentiment@3".into(),
        input_sha256: keel_core::sha256_hex(b"kept"),
        input_text: "kept".into(),
        label: "positive".into(),
        scores: json!({"negative": 0.1, "positive": 0.9}),
        latency_ms: 3.0,
        degraded: false,
    };
    std::fs::create_dir_all(home.path().join("spill")).unwrap();
    // A crash mid-write leaves a torn last line; the whole rows before it are kept.
    let text = format!("{}\n{{\"id\": \"torn", serde_json::to_string(&row).unwrap());
    std::fs::write(home.path().join("spill/predictions.jsonl"), text).unwrap();
    let options = Options { store: Some(store.clone()), ..Options::default() };
    let state = AppState::with_options(encoder(), Some(model()), options);
    state.flush_log().await;
    let rows = logged(&store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, "0190-spilled");
    assert_eq!(rows[0].scores, row.scores);
    assert_eq!(std::fs::read_dir(home.path().join("spill")).unwrap().count(), 0);
}

/// One HTTP/1.1 request over a real socket; returns the status and body.
async fn http(addr: std::net::SocketAddr, method: &'static str, path: &'static str, body: String) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_request_in_flight_and_writes_the_log_first() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    // The encoder stalls until released after the shutdown has started, so the requests are
    // still in flight then (no wall-clock window); the log is written only by the shutdown flush.
    let stalled = Stalled::new();
    let log = LogOptions { flush_rows: 10_000, flush_interval: Duration::from_secs(3600), ..LogOptions::default() };
    let options = Options { store: Some(store.clone()), log, ..Options::default() };
    let state = AppState::with_options(stalled.clone(), Some(model()), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(keel_server::serve(state.clone(), listener, async {
        let _ = stopped.await;
    }));
    let n = 12;
    let clients: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(http(
                addr,
                "POST",
                "/v1/classify",
                json!({"inputs": [format!("review {i}: superb")]}).to_string(),
            ))
        })
        .collect();
    // Wait until all of them are being answered (the metrics request itself makes one more).
    let mut in_flight = 0.0;
    for _ in 0..1000 {
        let (_, m) = http(addr, "GET", "/metrics", String::new()).await;
        in_flight = m
            .lines()
            .find_map(|l| l.strip_prefix("keel_http_requests_in_flight "))
            .map_or(0.0, |v| v.trim().parse().unwrap());
        if in_flight >= f64::from(n + 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight, f64::from(n + 1), "all requests are in flight before the shutdown");
    stop.send(()).unwrap();
    // The shutdown has begun once the listener is closed; only then can the encoder answer.
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the server stopped accepting");
    stalled.release();
    let mut ids = Vec::new();
    for c in clients {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, 200, "a request in flight at shutdown was answered: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        ids.push(v["predictions"][0]["id"].as_str().unwrap().to_owned());
    }
    server.await.unwrap().unwrap();
    // serve() returned: every answered prediction is in the store.
    let rows = logged(&store).await;
    let stored: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(rows.len(), n as usize);
    assert!(ids.iter().all(|id| stored.contains(id.as_str())));
}
