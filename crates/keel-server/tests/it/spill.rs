//! The prediction log under a crash and a flood (issue 19): torn spill lines, the spill cap,
//! the channel's byte bound.

use axum::http::StatusCode;
use keel_server::AppState;

use super::hardening::{Logs, send};
use super::{encoder, model, sample};

/// One logged row, as the spill file holds it.
fn spilled_row(id: &str) -> keel_store::PredictionRecord {
    keel_store::PredictionRecord {
        id: id.into(),
        at: "2026-01-01T00:00:00.000Z".into(),
        model: "sentiment@3".into(),
        input_sha256: keel_core::sha256_hex(b"kept"),
        input_text: "kept".into(),
        label: "positive".into(),
        scores: serde_json::json!({"negative": 0.1, "positive": 0.9}),
        latency_ms: 3.0,
        degraded: false,
    }
}

#[tokio::test]
async fn a_spill_line_torn_inside_a_utf8_character_is_skipped_and_the_rest_replayed() {
    let home = tempfile::tempdir().unwrap();
    let store = keel_store::Store::open(home.path()).await.unwrap();
    std::fs::create_dir_all(home.path().join("spill")).unwrap();
    let mut bytes = Vec::new();
    for id in ["0190-a", "0190-b"] {
        bytes.extend(serde_json::to_vec(&spilled_row(id)).unwrap());
        bytes.push(b'\n');
    }
    // The crash came in the middle of "€" (E2 82 AC).
    bytes.extend_from_slice(b"{\"id\": \"0190-c\", \"input_text\": \"price 5 \xE2\x82");
    std::fs::write(home.path().join("spill/predictions.jsonl"), bytes).unwrap();
    let options = keel_server::Options { store: Some(store.clone()), ..keel_server::Options::default() };
    let state = AppState::with_options(encoder(), Some(model()), options);
    state.flush_log().await;
    let mut ids: Vec<String> = super::logged(&store).await.into_iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, ["0190-a", "0190-b"]);
    assert_eq!(std::fs::read_dir(home.path().join("spill")).unwrap().count(), 0, "the replayed file is removed");
}
#[tokio::test]
async fn the_spill_file_is_capped_and_says_so_when_it_refuses() {
    let (logs, _guard) = Logs::capture();
    let home = tempfile::tempdir().unwrap();
    let store = keel_store::Store::open(home.path()).await.unwrap();
    // One row fits in the channel; the spill files take about two rows (each is ~400 bytes).
    let log = keel_server::LogOptions {
        capacity: 1,
        flush_rows: 1000,
        flush_interval: std::time::Duration::from_secs(3600),
        max_spill_bytes: 1000,
        ..keel_server::LogOptions::default()
    };
    let options = keel_server::Options { store: Some(store.clone()), log, ..keel_server::Options::default() };
    let state = AppState::with_options(encoder(), Some(model()), options);
    let app = keel_server::router(state.clone());
    let inputs: Vec<String> = (0..8).map(|i| format!("review number {i}")).collect();
    let body = serde_json::json!({"inputs": inputs}).to_string();
    let (status, _, answer) = send(&app, "POST", "/v1/classify", &[], &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let spilled = std::fs::metadata(home.path().join("spill/predictions.jsonl")).unwrap().len();
    assert!(spilled <= 1000, "the spill file stays under its cap: {spilled} bytes");
    state.flush_log().await;
    let (_, _, m) = send(&app, "GET", "/metrics", &[], "").await;
    let refused = sample(&m, "keel_prediction_log_spill_refused_total");
    assert!(refused >= 1.0, "{m}");
    assert_eq!(sample(&m, "keel_prediction_log_dropped_total"), refused);
    // Every prediction is accounted for: in the store, or counted as refused.
    assert_eq!(super::logged(&store).await.len() as f64 + refused, 8.0, "{m}");
    let logged = logs.text();
    assert!(logged.contains("max_spill_bytes"), "the refusal is logged:\n{logged}");
}

#[tokio::test]
async fn the_log_channel_is_bounded_in_bytes_too() {
    let home = tempfile::tempdir().unwrap();
    let store = keel_store::Store::open(home.path()).await.unwrap();
    // Room for many rows, but not for many bytes: long texts go to the spill file.
    let log = keel_server::LogOptions {
        flush_rows: 1000,
        flush_interval: std::time::Duration::from_secs(3600),
        max_queued_bytes: 20_000,
        ..keel_server::LogOptions::default()
    };
    let options = keel_server::Options { store: Some(store.clone()), log, ..keel_server::Options::default() };
    let state = AppState::with_options(encoder(), Some(model()), options);
    let app = keel_server::router(state.clone());
    let inputs: Vec<String> = (0..4).map(|i| format!("{i} {}", "long review ".repeat(1000))).collect();
    let (status, _, answer) =
        send(&app, "POST", "/v1/classify", &[], &serde_json::json!({"inputs": inputs}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, _, m) = send(&app, "GET", "/metrics", &[], "").await;
    assert!(sample(&m, "keel_prediction_log_spilled_total") >= 2.0, "{m}");
    state.flush_log().await;
    assert_eq!(super::logged(&store).await.len(), 4, "spilled rows still reach the store");
}
