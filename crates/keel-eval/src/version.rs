//! What a registered model version records about itself: its headline figures with intervals,
//! calibration, baselines, the gate's verdict and the hashes of the artifacts made with it.
//!
//! The store keeps this as JSON in the version's `metrics` column; everything that reads it
//! (the CLI, `keel monitor`, the server's fallback loader) goes through [`VersionMetrics`]
//! instead of indexing the JSON by key. Fields that older versions did not record are
//! optional and omitted from the JSON when absent, so the stored shape is unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BaselineResult, CalibrationStats, GateDecision, MetricIntervals, Report, TemperatureFit};

/// Rows in each split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSizes {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

/// The promotion gate's verdict on a new version and the alias it received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateOutcome {
    pub decision: Option<GateDecision>,
    /// In plain words: what happened and why.
    pub reason: String,
    /// The alias the new version received.
    pub alias: String,
}

/// Validation log loss and ECE before and after temperature scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationChange {
    pub before: CalibrationStats,
    pub after: CalibrationStats,
}

/// Hashes of the artifacts registered with a version (besides its head).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionArtifacts {
    /// The n-gram head the server answers from when the encoder fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The evaluation report (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The same report as a self-contained HTML page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_html: Option<String>,
    /// The reference profile `keel monitor` compares live traffic with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The encoder's adaptation (a LoRA adapter or fine-tuned weights) when the version reads
    /// embeddings from a fine-tuned encoder; [`FineTuneRecord`] says which kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_adapter: Option<String>,
}

impl VersionArtifacts {
    /// The artifacts a version's stored metrics name, read on their own: a version registered
    /// with only some of its figures still finds its fallback and profile.
    pub fn recorded_in(metrics: &serde_json::Value) -> Self {
        #[derive(Deserialize)]
        struct Only {
            #[serde(default)]
            artifacts: VersionArtifacts,
        }
        Only::deserialize(metrics).map(|o| o.artifacts).unwrap_or_default()
    }
}

/// Where a version came from in `keel run`'s pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineOrigin {
    /// The train step's key (the L2 reuse rule and the gate follow it).
    pub train_key: String,
    /// The keel.toml it was declared in (or the command that declared it).
    pub config: String,
    /// The split, so `keel eval` can rebuild the test rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<serde_json::Value>,
}

/// A registered version's recorded figures (the store's `metrics` column, typed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionMetrics {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub log_loss: f64,
    pub brier: f64,
    pub ece: f64,
    pub intervals: MetricIntervals,
    /// The head's kind (`logistic`, `mlp`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The temperature fitted on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baselines: Option<Vec<BaselineResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_sizes: Option<SplitSizes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<VersionArtifacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineOrigin>,
    /// What model selection compared and chose (`[head] kind = "auto"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::ModelSelection>,
    /// How the encoder was fine-tuned for this version, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<crate::FineTuneRecord>,
    /// Head-specific details (`cross_validation`, `mlp`, `l2_kept`, ...), kept as recorded.
    #[serde(flatten)]
    pub details: BTreeMap<String, serde_json::Value>,
}

impl VersionMetrics {
    /// The headline figures of `report`; everything else empty.
    pub fn from_report(report: &Report) -> Self {
        let e = &report.evaluation;
        Self {
            accuracy: e.accuracy,
            macro_f1: e.macro_f1,
            log_loss: e.log_loss,
            brier: report.brier,
            ece: report.ece,
            intervals: report.intervals.clone(),
            head: None,
            temperature: None,
            calibration: None,
            baselines: None,
            split_sizes: None,
            gate: None,
            artifacts: None,
            pipeline: None,
            selection: None,
            fine_tune: None,
            details: BTreeMap::new(),
        }
    }

    /// Records a temperature fit: the temperature and the validation figures around it.
    pub fn set_calibration(&mut self, fit: &TemperatureFit) {
        self.temperature = Some(fit.temperature);
        self.calibration = Some(CalibrationChange { before: fit.before.clone(), after: fit.after.clone() });
    }

    /// Reads the stored JSON; an error when it lacks the headline figures (a version
    /// registered by hand without them).
    pub fn parse(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    /// The JSON the store keeps.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("version metrics serialise to JSON")
    }
}
