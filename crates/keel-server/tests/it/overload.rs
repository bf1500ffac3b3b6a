//! Overload and work that outlives its request (issue 19): the encoder queue, search admission,
//! the generator's queue, and searches cut off by the deadline.

use std::sync::Arc;

use axum::http::StatusCode;
use keel_server::AppState;

use super::embedders::Stalled;
use super::hardening::send;

/// Releases a stalled encoder however the test ends (a failed assertion too), so that the
/// runtime can shut down.
struct Release(Arc<Stalled>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The value of one sample line (`name value`) in the Prometheus text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn waiting_in_a_full_queue_is_overload_not_an_encoder_failure() {
    use std::time::Duration;
    // Virtual time: the clock moves when the test advances it.
    let stalled = Stalled::new();
    let _release = Release(stalled.clone());
    let batching = keel_server::Batching {
        deadline: Duration::from_millis(150),
        breaker_failures: 2,
        retry_after_secs: 3,
        ..keel_server::Batching::default()
    };
    let options = keel_server::Options { batching, ..keel_server::Options::default() };
    let app = keel_server::router(AppState::with_options(stalled.clone(), None, options));
    let embed = |app: &axum::Router| {
        let app = app.clone();
        tokio::spawn(async move { send(&app, "POST", "/v1/embeddings", &[], r#"{"input": "x"}"#).await })
    };
    // One request is in the encoder (it will miss its deadline: one real failure) ...
    let slow = embed(&app);
    stalled.started().await;
    // ... and three wait behind it in the queue.
    let waiting: Vec<_> = (0..3).map(|_| embed(&app)).collect();
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        if send(&app, "GET", "/metrics", &[], "").await.2.contains("keel_encoder_queue_depth 3\n") {
            break;
        }
    }
    tokio::time::advance(Duration::from_millis(200)).await;
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    for w in waiting {
        let (status, headers, body) = w.await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a queue wait is overload: {body}");
        assert_eq!(super::error_type(&body), "overloaded");
        assert_eq!(headers.get("retry-after").unwrap(), "3");
    }
    let (_, _, m) = send(&app, "GET", "/metrics", &[], "").await;
    assert_eq!(sample(&m, "keel_encoder_failures_total"), 1.0, "only the request the encoder ran failed");
    assert_eq!(sample(&m, "keel_encoder_queue_timeouts_total"), 3.0);
    assert_eq!(sample(&m, "keel_encoder_circuit_opened_total"), 0.0, "overload does not open the breaker");
    assert_eq!(sample(&m, "keel_encoder_circuit_state"), 0.0);
}
