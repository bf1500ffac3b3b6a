//! What `keel monitor` reads beside the prediction log: the feedback given to logged
//! predictions. No tables of its own (predictions and feedback come from migration 0001).

use sqlx::Row;

use crate::{Result, Store};

/// The true label given to a logged prediction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Feedback {
    pub prediction_id: String,
    pub label: String,
    pub at: String,
}

impl Store {
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
