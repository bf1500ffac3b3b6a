//! Feedback for a monitoring window (keel monitor), on every backend.

use keel_core::ContentHash;
use keel_store::PredictionRecord;

use crate::on_each;

#[tokio::test]
async fn feedback_for_window_keeps_the_latest_label_of_predictions_in_the_window() {
    on_each(|_config, store| async move {
        let p = |id: &str, at: &str| PredictionRecord {
            id: id.into(),
            at: at.into(),
            model: "sentiment@1".into(),
            input_sha256: ContentHash::of(id.as_bytes()).to_string(),
            input_text: format!("text {id}"),
            label: "positive".into(),
            scores: serde_json::json!({"positive": 0.9, "negative": 0.1}),
            latency_ms: 1.0,
            degraded: false,
        };
        store
            .log_predictions(&[
                p("a", "2026-01-01T00:00:00.000Z"),
                p("b", "2026-01-01T12:00:00.000Z"),
                p("c", "2026-01-03T00:00:00.000Z"),
            ])
            .await
            .unwrap();
        store.add_feedback("a", "negative").await.unwrap();
        store.add_feedback("b", "positive").await.unwrap();
        // Corrected later (feedback times have millisecond resolution): the last label counts.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store.add_feedback("a", "positive").await.unwrap();
        store.add_feedback("c", "negative").await.unwrap();
        let got = store.feedback_for_window("2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z").await.unwrap();
        let pairs: Vec<(&str, &str)> = got.iter().map(|f| (f.prediction_id.as_str(), f.label.as_str())).collect();
        assert_eq!(pairs, vec![("a", "positive"), ("b", "positive")]);
        assert!(store.feedback_for_window("2027-01-01", "2028-01-01").await.unwrap().is_empty());
    })
    .await;
}
