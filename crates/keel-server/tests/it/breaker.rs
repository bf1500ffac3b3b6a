//! The encoder's circuit breaker, driven by an encoder that fails every call (`Failing`), on
//! tokio's paused clock: the cool-down passes when the test advances the clock, not on the wall.

use std::time::Duration;

use axum::http::StatusCode;
use keel_server::{AppState, Batching, Options};

use super::embedders::Failing;
use super::{call, call_with_headers, encoder, error_type, json_of, model, sample};

#[tokio::test(start_paused = true)]
async fn the_circuit_breaker_stops_calling_a_failing_encoder_then_probes_it_back() {
    // Virtual time: while requests are answered the clock moves only by the batch-filling waits
    // (2 ms each), far short of the cool-down.
    let cooldown = Duration::from_secs(60);
    let batching = Batching { breaker_failures: 2, breaker_cooldown: cooldown, ..Batching::default() };
    let state = AppState::with_options(encoder(), Some(model()), Options { batching, ..Options::default() });
    let app = keel_server::router(state.clone());
    let req = r#"{"inputs": ["what a lovely, moving film"]}"#;
    let classify = || async { call(&app, "POST", "/v1/classify", Some(req)).await };
    let metrics = || async { call(&app, "GET", "/metrics", None).await.1 };

    let failing = Failing::new();
    state.set_encoder(failing.clone());
    for _ in 0..2 {
        let (status, body) = classify().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(json_of(&body)["degraded"], true);
    }
    let m = metrics().await;
    assert_eq!(sample(&m, "keel_encoder_calls_total"), 2.0);
    assert_eq!(sample(&m, "keel_encoder_circuit_state"), 1.0, "two failures in a row open the breaker");
    assert_eq!(sample(&m, "keel_encoder_circuit_opened_total"), 1.0);

    // Open: answers still come (degraded, from the fallback) but the encoder is not called.
    for _ in 0..5 {
        let (status, body) = classify().await;
        assert_eq!((status, json_of(&body)["degraded"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    }
    let (status, headers, body) = call_with_headers(&app, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    let m = metrics().await;
    assert_eq!(sample(&m, "keel_encoder_calls_total"), 2.0, "no encoder call while the breaker is open");
    assert_eq!(sample(&m, "keel_encoder_circuit_short_circuited_total"), 6.0);
    assert_eq!(sample(&m, "keel_degraded_total"), 7.0);

    // After the cool-down one probe goes through; it fails, so the breaker opens again.
    tokio::time::advance(cooldown + Duration::from_secs(1)).await;
    let (_, body) = classify().await;
    assert_eq!(json_of(&body)["degraded"], true);
    let m = metrics().await;
    assert_eq!(sample(&m, "keel_encoder_calls_total"), 3.0, "the probe called the encoder");
    assert_eq!(sample(&m, "keel_encoder_circuit_state"), 1.0);
    assert_eq!(sample(&m, "keel_encoder_circuit_opened_total"), 2.0);

    // The encoder is repaired, but the breaker is open: still degraded until the next probe.
    state.set_encoder(encoder());
    let (_, body) = classify().await;
    assert_eq!(json_of(&body)["degraded"], true);
    assert_eq!(failing.calls.load(std::sync::atomic::Ordering::SeqCst), 3, "two failures and one failed probe");
    tokio::time::advance(cooldown + Duration::from_secs(1)).await;
    let (status, body) = classify().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!(v["degraded"], false, "the probe succeeded and closed the breaker");
    assert_eq!(v["predictions"][0]["label"], "positive");
    let m = metrics().await;
    assert_eq!(sample(&m, "keel_encoder_circuit_state"), 0.0);
    assert_eq!(sample(&m, "keel_encoder_degraded"), 0.0);
    assert_eq!(sample(&m, "keel_encoder_calls_total"), 4.0);
    let (status, _) = call(&app, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#)).await;
    assert_eq!(status, StatusCode::OK);
}
