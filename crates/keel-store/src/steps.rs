//! `keel run`'s memory: which pipeline steps finished for which inputs (and what they made),
//! and the decisions it took on its own. Tables from migration 0004.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, now};

/// A finished pipeline step, as it is recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewStep {
    /// The project (model) the step belongs to.
    pub project: String,
    /// ingest, embed, train, evaluate, gate, register or promote.
    pub step: String,
    /// Hash of the step's inputs, its config section and the Keel version.
    pub input_key: String,
    /// What the step made: artifact hashes, a dataset id, a version number.
    pub output: serde_json::Value,
    pub keel_version: String,
    /// The pipeline run that did the work.
    pub run_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    #[serde(flatten)]
    pub fields: NewStep,
    pub status: String,
    pub created_at: String,
}

/// One automatic decision, with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineEvent {
    pub seq: i64,
    pub project: String,
    /// trigger, run, skip, promote, refuse or error.
    pub kind: String,
    pub reason: String,
    pub details: serde_json::Value,
    pub at: String,
}

fn step_from_row(row: &AnyRow) -> Result<StepRecord> {
    Ok(StepRecord {
        fields: NewStep {
            project: row.try_get("project")?,
            step: row.try_get("step")?,
            input_key: row.try_get("input_key")?,
            output: serde_json::from_str(row.try_get("output")?)?,
            keel_version: row.try_get("keel_version")?,
            run_id: row.try_get("run_id")?,
        },
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// The record of `step` done on exactly these inputs, if it finished before.
    pub async fn find_step(&self, project: &str, step: &str, input_key: &str) -> Result<Option<StepRecord>> {
        let row = sqlx::query("SELECT * FROM pipeline_steps WHERE project = $1 AND step = $2 AND input_key = $3")
            .bind(project)
            .bind(step)
            .bind(input_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(step_from_row).transpose()
    }

    /// Records a finished step (one statement, so a crash leaves it recorded or not at all).
    /// Recording the same key again replaces its output: that is what `--force STEP` does.
    pub async fn record_step(&self, s: &NewStep) -> Result<StepRecord> {
        sqlx::query(
            "INSERT INTO pipeline_steps (project, step, input_key, output, keel_version, status, run_id, created_at)
             VALUES ($1, $2, $3, $4, $5, 'succeeded', $6, $7)
             ON CONFLICT (project, step, input_key) DO UPDATE SET output = excluded.output,
               keel_version = excluded.keel_version, status = excluded.status, run_id = excluded.run_id,
               created_at = excluded.created_at",
        )
        .bind(&s.project)
        .bind(&s.step)
        .bind(&s.input_key)
        .bind(s.output.to_string())
        .bind(&s.keel_version)
        .bind(&s.run_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(self.find_step(&s.project, &s.step, &s.input_key).await?.expect("the step was just recorded"))
    }

    /// Every recorded step of a project, oldest first.
    pub async fn steps(&self, project: &str) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query("SELECT * FROM pipeline_steps WHERE project = $1 ORDER BY created_at, step, input_key")
            .bind(project)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(step_from_row).collect()
    }

    /// Logs an automatic decision; returns its sequence number.
    pub async fn log_pipeline_event(
        &self,
        project: &str,
        kind: &str,
        reason: &str,
        details: &serde_json::Value,
    ) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO pipeline_events (project, kind, reason, details, at) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .bind(project)
        .bind(kind)
        .bind(reason)
        .bind(details.to_string())
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(seq)
    }

    /// A project's decisions after sequence number `after` (0: from the start), oldest first.
    pub async fn pipeline_events(&self, project: &str, after: i64) -> Result<Vec<PipelineEvent>> {
        let rows = sqlx::query("SELECT * FROM pipeline_events WHERE project = $1 AND seq > $2 ORDER BY seq")
            .bind(project)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PipelineEvent {
                    seq: row.try_get("seq")?,
                    project: row.try_get("project")?,
                    kind: row.try_get("kind")?,
                    reason: row.try_get("reason")?,
                    details: serde_json::from_str(row.try_get("details")?)?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }
}
