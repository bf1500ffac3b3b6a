//! The evaluation report: every metric, interval, slice and plot's data in one serde value,
//! rendered as JSON, a self-contained HTML page ([`crate::render_html`]) or terminal text.

use std::fmt::Write as _;

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{BootstrapConfig, MetricIntervals, bootstrap_intervals};
use crate::calibration::TemperatureFit;
use crate::gate::GateDecision;
use crate::metrics::{ECE_BINS, ReliabilityBin, RocAuc, brier_score, ece_from_bins, reliability_bins, roc_auc};
use crate::slices::{Slice, confidently_wrong, label_keys, length_keys, slice_metrics};
use crate::{Evaluation, evaluate};

/// What to build a report from. Only `y_true`, `proba` and `labels` are required.
#[derive(Debug)]
pub struct ReportInput<'a> {
    pub title: String,
    /// The model's name, e.g. `"tickets@3 (logistic)"`.
    pub model: String,
    pub y_true: &'a [usize],
    /// One row per example, one column per label.
    pub proba: &'a Matrix,
    pub labels: &'a [String],
    /// The texts of the rows: enables length slices and shows the wrong examples' text.
    pub texts: Option<&'a [String]>,
    /// Extra slicing columns: `(column name, one key per row)`.
    pub slices: Vec<(String, Vec<String>)>,
    pub bootstrap: BootstrapConfig,
    /// How many confidently wrong examples to keep (default 20).
    pub top_wrong: usize,
}

impl<'a> ReportInput<'a> {
    pub fn new(y_true: &'a [usize], proba: &'a Matrix, labels: &'a [String]) -> Self {
        Self {
            title: "Evaluation report".into(),
            model: String::new(),
            y_true,
            proba,
            labels,
            texts: None,
            slices: Vec::new(),
            bootstrap: BootstrapConfig::default(),
            top_wrong: 20,
        }
    }
}

/// One of the most confidently wrong test examples, with names instead of indices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportedWrong {
    pub index: usize,
    /// The text, cut to 300 characters, when the texts were given.
    pub text: Option<String>,
    pub true_label: String,
    pub predicted: String,
    pub confidence: f64,
    pub true_probability: f64,
}

/// A baseline's headline metrics on the same test rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    pub name: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub log_loss: f64,
}

impl BaselineResult {
    pub fn new(name: &str, y_true: &[usize], proba: &Matrix, labels: &[String]) -> Self {
        let e = evaluate(y_true, proba, labels);
        Self { name: name.to_owned(), accuracy: e.accuracy, macro_f1: e.macro_f1, log_loss: e.log_loss }
    }
}

/// Everything known about one model on one test split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    pub model: String,
    pub labels: Vec<String>,
    pub evaluation: Evaluation,
    /// Multi-class Brier score (0..2, lower is better).
    pub brier: f64,
    /// Expected calibration error with `ece_bins` equal-width bins.
    pub ece: f64,
    pub ece_bins: usize,
    pub roc_auc: Option<RocAuc>,
    pub intervals: MetricIntervals,
    pub bootstrap: BootstrapConfig,
    pub reliability: Vec<ReliabilityBin>,
    pub slices: Vec<Slice>,
    pub confidently_wrong: Vec<ReportedWrong>,
    /// Temperature scaling fitted on validation, when the caller did it.
    pub calibration: Option<TemperatureFit>,
    /// Baselines trained beside the model, scored on the same rows.
    pub baselines: Vec<BaselineResult>,
    /// The promotion decision against production, when there is one.
    pub gate: Option<GateDecision>,
    /// What model selection compared and chose, when the family was chosen automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::ModelSelection>,
    /// How the encoder the model reads was fine-tuned, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<crate::FineTuneRecord>,
}

/// Computes every metric, interval, slice and plot's data.
///
/// Panics if the shapes disagree (caller bugs, as in [`evaluate`]).
pub fn build_report(input: &ReportInput<'_>) -> Report {
    let (y, proba, labels) = (input.y_true, input.proba, input.labels);
    let evaluation = evaluate(y, proba, labels);
    let reliability = reliability_bins(y, proba);
    let mut slices = slice_metrics("label", &label_keys(y, labels), y, proba, labels);
    if let Some(texts) = input.texts {
        assert_eq!(texts.len(), y.len(), "one text per row");
        let mut by_len = slice_metrics("length", &length_keys(texts), y, proba, labels);
        by_len.sort_by_key(|s| length_order(&s.key));
        slices.extend(by_len);
    }
    for (col, keys) in &input.slices {
        slices.extend(slice_metrics(col, keys, y, proba, labels));
    }
    let confidently_wrong = confidently_wrong(y, proba, input.top_wrong)
        .into_iter()
        .map(|w| ReportedWrong {
            index: w.index,
            text: input.texts.map(|t| {
                let s = &t[w.index];
                if s.chars().count() > 300 { s.chars().take(299).chain(['…']).collect() } else { s.clone() }
            }),
            true_label: labels[w.true_label].clone(),
            predicted: labels[w.predicted].clone(),
            confidence: w.confidence,
            true_probability: w.true_probability,
        })
        .collect();
    Report {
        title: input.title.clone(),
        model: input.model.clone(),
        labels: labels.to_vec(),
        brier: brier_score(y, proba),
        ece: ece_from_bins(&reliability, y.len()),
        ece_bins: ECE_BINS,
        roc_auc: roc_auc(y, proba),
        intervals: bootstrap_intervals(y, proba, &input.bootstrap),
        bootstrap: input.bootstrap.clone(),
        reliability,
        slices,
        confidently_wrong,
        calibration: None,
        baselines: Vec::new(),
        gate: None,
        selection: None,
        fine_tune: None,
        evaluation,
    }
}

fn length_order(key: &str) -> usize {
    key.trim_start_matches('>').split(['-', ' ']).next().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX)
}

/// Plain-language explanations, shared by the HTML page and the terminal summary.
pub(crate) mod explain {
    pub const ACCURACY: &str = "The share of test examples given the right label.";
    pub const MACRO_F1: &str = "F1 balances missed examples against false alarms for each label; this is its average over labels, so a rare label counts as much as a common one.";
    pub const LOG_LOSS: &str =
        "How surprised the model is by the true labels on average: 0 is perfect, and confident mistakes cost the most.";
    pub const ECE: &str = "How far the model's confidence is from how often it is actually right, averaged over 15 equal-width confidence bins: 0 means “90% sure” is right 90% of the time.";
    pub const BRIER: &str = "The squared distance between the predicted probabilities and the truth (0 is perfect, 2 is the worst); it rewards being right and being honestly unsure.";
    pub const ROC_AUC: &str = "The chance that a random example of a label gets a higher score for that label than a random example of another label (0.5 is guessing, 1 is perfect ranking).";
    pub const INTERVAL: &str = "If we drew a fresh test set of the same size, the metric would land in this range 95 times out of 100 (percentile bootstrap, resampling the test rows).";
    pub const N: &str = "The number of held-out test examples the model never saw while training.";
}

impl Report {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report of strings and finite floats always serialises")
    }

    /// The terminal summary: headline metrics with intervals and one sentence each, the gate,
    /// calibration and baselines, then the per-label table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let pct = self.bootstrap.level * 100.0;
        let _ = writeln!(s, "{} — {}", self.title, self.model);
        let _ = writeln!(s, "{} test examples. {}", self.evaluation.n, explain::N);
        let line = |s: &mut String, name: &str, iv: &crate::Interval, why: &str| {
            let _ = writeln!(s, "  {name:<9} {:.4}  [{:.4}, {:.4}]  {why}", iv.point, iv.lo, iv.hi);
        };
        let _ = writeln!(s, "  (value, then its {pct:.0}% interval: {})", explain::INTERVAL);
        line(&mut s, "accuracy", &self.intervals.accuracy, explain::ACCURACY);
        line(&mut s, "macro-F1", &self.intervals.macro_f1, explain::MACRO_F1);
        line(&mut s, "log loss", &self.intervals.log_loss, explain::LOG_LOSS);
        line(&mut s, "ECE", &self.intervals.ece, explain::ECE);
        let _ = writeln!(s, "  {:<9} {:.4}  {}", "Brier", self.brier, explain::BRIER);
        if let Some(auc) = &self.roc_auc {
            let _ = writeln!(s, "  {:<9} {:.4}  {}", "ROC-AUC", auc.value, explain::ROC_AUC);
        }
        if let Some(c) = &self.calibration {
            let _ = writeln!(
                s,
                "calibration: temperature {:.3}; validation log loss {:.4} → {:.4}, ECE {:.4} → {:.4}",
                c.temperature, c.before.log_loss, c.after.log_loss, c.before.ece, c.after.ece
            );
        }
        for b in &self.baselines {
            let _ = writeln!(
                s,
                "baseline {}: accuracy {:.4}, macro-F1 {:.4}, log loss {:.4}",
                b.name, b.accuracy, b.macro_f1, b.log_loss
            );
        }
        if let Some(g) = &self.gate {
            let _ = writeln!(s, "gate: {}", g.reason);
        }
        let _ = writeln!(s);
        s.push_str(&self.evaluation.summary());
        s
    }
}
