//! When a step is skipped, when it would run (under `--plan`), and how a step that ran is
//! recorded: keys, the `pipeline` run row and the per-step reports.

use std::time::Instant;

use keel_core::{ContentHash, Hasher};
use keel_store::{NewStep, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context;
use crate::output::note;
use crate::stages::StepKind;

/// Keel's version and a fingerprint of the code it was built from: part of every step key.
pub fn build_id() -> String {
    format!("{} ({})", context::code_version(), env!("KEEL_CODE_HASH"))
}

/// A step's key: the hash of its name, the build and its inputs.
pub fn step_key(step: StepKind, parts: &[&str]) -> ContentHash {
    let mut h = Hasher::new();
    h.field(b"keel-run-v1").field(step.name().as_bytes()).field(build_id().as_bytes());
    for p in parts {
        h.field(p.as_bytes());
    }
    h.finish()
}

/// A configuration section as it enters a key.
pub fn section<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("config sections serialise")
}

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepAction {
    /// Its key was new: it did its work.
    Ran,
    /// `--force` made it work again.
    Forced,
    /// Its key was recorded: its output was reused.
    Skipped,
    /// `--plan`: it would do work.
    WouldRun,
}

/// One step's line in a run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: StepKind,
    pub key: Option<String>,
    pub action: StepAction,
    pub note: String,
    pub seconds: f64,
    /// The step's recorded output (absent under `--plan` for steps that would run).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub output: serde_json::Value,
}

/// The per-pass bookkeeping: which steps ran, the run row, and `--plan`/`--force`.
#[derive(Debug)]
pub struct Recorder {
    pub project: String,
    pub force: Option<StepKind>,
    pub plan: bool,
    pub quiet: bool,
    /// The `pipeline` run row, started when the first step does work.
    pub run_id: Option<String>,
    pub steps: Vec<StepReport>,
    /// Under `--plan`, the first step that would run: later keys depend on its output.
    pub blocked_by: Option<StepKind>,
    /// The run row's parameters.
    pub run_params: serde_json::Value,
}

impl Recorder {
    /// The recorded output of `step` for `key`, or `None` when it must run (not recorded, or
    /// forced). Logs the skip.
    pub async fn lookup<T: DeserializeOwned>(
        &mut self,
        store: &Store,
        step: StepKind,
        key: &ContentHash,
    ) -> anyhow::Result<Option<T>> {
        let found = store.find_step(&self.project, step.name(), key.as_str()).await?;
        match found {
            Some(rec) if self.force != Some(step) => {
                let typed = T::deserialize(&rec.fields.output).map_err(|e| {
                    anyhow::anyhow!(
                        "the recorded {} step {} is unreadable ({e}); run with --force {}",
                        step.name(),
                        key.short(),
                        step.name()
                    )
                })?;
                self.steps.push(StepReport {
                    step,
                    key: Some(key.as_str().to_owned()),
                    action: StepAction::Skipped,
                    note: format!("up to date (done {})", rec.created_at),
                    seconds: 0.0,
                    output: rec.fields.output,
                });
                if !self.quiet {
                    note(format!("{:<9} skipped: up to date (key {})", step.name(), key.short()));
                }
                Ok(Some(typed))
            }
            _ => {
                if !self.quiet && !self.plan {
                    note(format!("{:<9} running (key {})", step.name(), key.short()));
                }
                Ok(None)
            }
        }
    }

    /// Under `--plan`: notes that the step would run and returns true (the caller stops).
    pub fn would_run(&mut self, step: StepKind, key: &ContentHash) -> bool {
        if !self.plan {
            return false;
        }
        let forced = self.force == Some(step);
        self.steps.push(StepReport {
            step,
            key: Some(key.as_str().to_owned()),
            action: StepAction::WouldRun,
            note: if forced { "forced with --force".into() } else { "inputs not seen before".into() },
            seconds: 0.0,
            output: serde_json::Value::Null,
        });
        self.blocked_by = Some(step);
        true
    }

    /// Records a finished step's output, last: after its artifacts and rows exist.
    pub async fn record<T: Serialize>(
        &mut self,
        store: &Store,
        step: StepKind,
        key: &ContentHash,
        output: &T,
        started: Instant,
    ) -> anyhow::Result<()> {
        let run_id = self.ensure_run(store).await?;
        let output = serde_json::to_value(output)?;
        store
            .record_step(&NewStep {
                project: self.project.clone(),
                step: step.name().to_owned(),
                input_key: key.as_str().to_owned(),
                output: output.clone(),
                keel_version: build_id(),
                run_id: Some(run_id),
            })
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        if !self.quiet {
            note(format!("{:<9} done in {seconds:.2}s", step.name()));
        }
        let action = if self.force == Some(step) { StepAction::Forced } else { StepAction::Ran };
        self.steps.push(StepReport {
            step,
            key: Some(key.as_str().to_owned()),
            action,
            note: String::new(),
            seconds,
            output,
        });
        Ok(())
    }

    /// The `pipeline` run row, started when the first step does work.
    pub async fn ensure_run(&mut self, store: &Store) -> anyhow::Result<String> {
        if let Some(r) = &self.run_id {
            return Ok(r.clone());
        }
        let id = store.start_run("pipeline", &self.run_params, &context::code_version(), &context::host()).await?;
        self.run_id = Some(id.clone());
        Ok(id)
    }

    /// Under `--plan`, the steps after the first that would run: their keys are not known yet.
    pub fn plan_rest(&mut self) -> Vec<StepReport> {
        let mut plan = std::mem::take(&mut self.steps);
        if let Some(blocker) = self.blocked_by {
            for &s in StepKind::ALL.iter().filter(|&&s| s > blocker) {
                plan.push(StepReport {
                    step: s,
                    key: None,
                    action: StepAction::WouldRun,
                    note: format!("its inputs come from {}", blocker.name()),
                    seconds: 0.0,
                    output: serde_json::Value::Null,
                });
            }
        }
        plan
    }
}
