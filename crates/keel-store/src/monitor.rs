//! The prediction log and its feedback: what `keel serve` writes and `keel monitor` reads. No
//! tables of its own (predictions and feedback come from migration 0001).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::tx::write_tx;
use crate::{Result, Store, StoreError, now};

/// One served prediction, as the prediction log keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub id: String,
    pub at: String,
    pub model: String,
    pub input_sha256: String,
    pub input_text: String,
    pub label: String,
    pub scores: serde_json::Value,
    pub latency_ms: f64,
    pub degraded: bool,
}

/// The true label given to a logged prediction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Feedback {
    pub prediction_id: String,
    pub label: String,
    pub at: String,
}

impl Store {
    /// Appends predictions in one transaction (one round trip per row, one commit per batch).
    pub async fn log_predictions(&self, batch: &[PredictionRecord]) -> Result<()> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        for p in batch {
            sqlx::query(
                "INSERT INTO predictions (id, at, model, input_sha256, input_text, label, scores, latency_ms, degraded)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&p.id)
            .bind(&p.at)
            .bind(&p.model)
            .bind(&p.input_sha256)
            .bind(&p.input_text)
            .bind(&p.label)
            .bind(p.scores.to_string())
            .bind(p.latency_ms)
            .bind(i64::from(p.degraded))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Attaches a true label to a logged prediction.
    pub async fn add_feedback(&self, prediction_id: &str, label: &str) -> Result<()> {
        let known: Option<String> = sqlx::query_scalar("SELECT id FROM predictions WHERE id = $1")
            .bind(prediction_id)
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!("no logged prediction {prediction_id}")));
        }
        sqlx::query("INSERT INTO feedback (prediction_id, label, at) VALUES ($1, $2, $3)")
            .bind(prediction_id)
            .bind(label)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Logged predictions in a time window `[since, until)`, oldest first.
    pub async fn predictions(&self, since: &str, until: &str) -> Result<Vec<PredictionRecord>> {
        let rows = sqlx::query("SELECT * FROM predictions WHERE at >= $1 AND at < $2 ORDER BY at, id")
            .bind(since)
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PredictionRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    model: r.try_get("model")?,
                    input_sha256: r.try_get("input_sha256")?,
                    input_text: r.try_get("input_text")?,
                    label: r.try_get("label")?,
                    scores: serde_json::from_str(r.try_get("scores")?)?,
                    latency_ms: r.try_get("latency_ms")?,
                    degraded: r.try_get::<i64, _>("degraded")? != 0,
                })
            })
            .collect()
    }

    /// The latest feedback for each prediction logged in `[since, until)` (by the prediction's
    /// time), ordered by prediction id. A prediction corrected twice counts once, with its last
    /// label.
    pub async fn feedback_for_window(&self, since: &str, until: &str) -> Result<Vec<Feedback>> {
        let rows = sqlx::query(
            "SELECT f.prediction_id, f.label, f.at FROM feedback f JOIN predictions p ON p.id = f.prediction_id
             WHERE p.at >= $1 AND p.at < $2 ORDER BY f.prediction_id, f.at",
        )
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Feedback> = Vec::new();
        for r in &rows {
            let f = Feedback {
                prediction_id: r.try_get("prediction_id")?,
                label: r.try_get("label")?,
                at: r.try_get("at")?,
            };
            match out.last_mut() {
                Some(last) if last.prediction_id == f.prediction_id => *last = f,
                _ => out.push(f),
            }
        }
        Ok(out)
    }
}
