//! Keel evaluation: metrics on a held-out split.
//!
//! Pure functions of true labels and predicted probabilities: no IO, and nothing about where
//! the predictions came from. Class `c` is the index into the label list everywhere.
//!
//! Conventions follow scikit-learn with an explicit label list
//! (`labels=range(n_classes)`) and `zero_division=0`:
//! - precision of a class never predicted is 0; recall of a class with no true examples is 0;
//! - F1 of a class is 0 when precision + recall is 0, which includes a class that is neither
//!   present nor predicted;
//! - macro-F1 averages over **all** classes in the label list, present or not.
//!
//! Beyond these: probability quality ([`brier_score`], [`expected_calibration_error`] with 15
//! equal-width bins, [`roc_auc`]), percentile-bootstrap intervals ([`bootstrap_intervals`]),
//! the promotion [`Gate`] (paired bootstrap of the macro-F1 difference), temperature scaling
//! ([`fit_temperature`]), slices and confidently wrong examples, and the [`Report`] with its
//! HTML page ([`render_html`]) and terminal summary.

mod bootstrap;
mod calibration;
mod finetune;
mod gate;
mod html;
mod metrics;
mod page;
mod report;
mod selection;
mod slices;
mod version;

pub use bootstrap::{
    BootstrapConfig, Interval, MetricIntervals, bootstrap_interval, bootstrap_intervals, paired_macro_f1_diff, quantile,
};
pub use calibration::{
    CalibrationStats, TemperatureFit, fit_temperature, nll_at_temperature, softmax_with_temperature,
};
pub use finetune::{FineTuneRecord, FineTuneRun, PairsRecipe};
pub use gate::{Gate, GateDecision, signed_pt};
pub use html::{format_diff, render_html};
pub use metrics::{
    ECE_BINS, ReliabilityBin, RocAuc, binary_roc_auc, brier_score, expected_calibration_error, reliability_bins,
    roc_auc,
};
pub use page::{escape, page};
pub use report::{BaselineResult, Report, ReportInput, ReportedWrong, build_report};
pub use selection::{CandidateScore, ModelSelection};
pub use slices::{LENGTH_BUCKETS, Slice, WrongExample, confidently_wrong, label_keys, length_keys, slice_metrics};
pub use version::{CalibrationChange, GateOutcome, PipelineOrigin, SplitSizes, VersionArtifacts, VersionMetrics};

use std::fmt::Write as _;

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

/// Metrics for one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    /// Of the examples predicted as this class, the share that truly are.
    pub precision: f64,
    /// Of the examples truly of this class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Number of examples truly of this class.
    pub support: u64,
}

/// The result of evaluating a classifier on labelled examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Number of examples.
    pub n: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Mean negative log-probability given to the true class (natural log).
    pub log_loss: f64,
    /// One entry per class, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[t][p]` counts examples of true class `t` predicted as class `p`.
    pub confusion: Vec<Vec<u64>>,
}

/// Share of positions where `y_pred` equals `y_true`; 0 for empty input.
///
/// Panics if the slices differ in length.
pub fn accuracy(y_true: &[usize], y_pred: &[usize]) -> f64 {
    assert_eq!(y_true.len(), y_pred.len(), "y_true and y_pred differ in length");
    if y_true.is_empty() {
        return 0.0;
    }
    let hits = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    hits as f64 / y_true.len() as f64
}

/// Unweighted mean of the per-class F1 over classes `0..n_classes` (see the crate docs for
/// classes without examples or predictions).
///
/// Panics if the slices differ in length or hold a class `>= n_classes`.
pub fn macro_f1(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> f64 {
    let confusion = confusion_matrix(y_true, y_pred, n_classes);
    mean((0..n_classes).map(|c| class_metrics(&confusion, c).2))
}

/// `rows = true class, cols = predicted class`.
fn confusion_matrix(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> Vec<Vec<u64>> {
    assert_eq!(y_true.len(), y_pred.len(), "y_true and y_pred differ in length");
    let mut m = vec![vec![0u64; n_classes]; n_classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        assert!(t < n_classes && p < n_classes, "class index out of range for {n_classes} classes");
        m[t][p] += 1;
    }
    m
}

/// Precision, recall, F1 and support of class `c`.
fn class_metrics(confusion: &[Vec<u64>], c: usize) -> (f64, f64, f64, u64) {
    let tp = confusion[c][c];
    let support: u64 = confusion[c].iter().sum();
    let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(tp, predicted);
    let recall = ratio(tp, support);
    // 2tp / (2tp + fp + fn) equals 2PR/(P+R) and is exactly 0 when tp is 0.
    let f1 = ratio(2 * tp, predicted + support);
    (precision, recall, f1, support)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Evaluates predicted class probabilities (`proba`: one row per example, one column per
/// label) against true class indices. The predicted class is the most probable one (the first
/// on ties).
///
/// Log loss clips each true-class probability to `[ε, 1 − ε]` with `ε = f32::EPSILON`
/// (≈1.2e-7), as scikit-learn's `log_loss` does for float32 input, so one confident mistake
/// costs at most about 15.9 rather than infinity. Probabilities are used as given, not
/// renormalised. With no examples every metric is 0.
///
/// Panics if the shapes disagree (`proba.rows() != y_true.len()`,
/// `proba.cols() != labels.len()`) or a true class is out of range: those are caller bugs.
pub fn evaluate(y_true: &[usize], proba: &Matrix, labels: &[String]) -> Evaluation {
    let k = labels.len();
    assert_eq!(proba.rows(), y_true.len(), "one probability row per example");
    assert_eq!(proba.cols(), k, "one probability column per label");
    let y_pred: Vec<usize> = (0..proba.rows()).map(|i| argmax(proba.row(i))).collect();
    let confusion = confusion_matrix(y_true, &y_pred, k);
    let per_class: Vec<ClassMetrics> = labels
        .iter()
        .enumerate()
        .map(|(c, label)| {
            let (precision, recall, f1, support) = class_metrics(&confusion, c);
            ClassMetrics { label: label.clone(), precision, recall, f1, support }
        })
        .collect();
    let log_loss = mean(
        y_true
            .iter()
            .enumerate()
            .map(|(i, &t)| -f64::from(proba.row(i)[t]).clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS).ln()),
    );
    Evaluation {
        n: y_true.len() as u64,
        accuracy: accuracy(y_true, &y_pred),
        macro_f1: mean(per_class.iter().map(|m| m.f1)),
        log_loss,
        per_class,
        confusion,
    }
}

pub(crate) const LOG_LOSS_EPS: f64 = f32::EPSILON as f64;

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = i;
        }
    }
    best
}

impl Evaluation {
    /// A short table for a terminal: headline metrics with a line on what each means, then one
    /// row per class.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} examples", self.n);
        let _ = writeln!(s, "accuracy  {:.4}  share of examples given the right label", self.accuracy);
        let _ = writeln!(
            s,
            "macro-F1  {:.4}  F1 of each label averaged with equal weight: rare labels count as much as common ones",
            self.macro_f1
        );
        let _ = writeln!(
            s,
            "log loss  {:.4}  penalty for probability not given to the true label; 0 is perfect, lower is better",
            self.log_loss
        );
        let width = self.per_class.iter().map(|m| m.label.chars().count()).max().unwrap_or(0).clamp(5, 32);
        let _ = writeln!(s);
        let _ = writeln!(s, "(per label: precision = share of its predictions that were right, recall = share of its");
        let _ = writeln!(s, " examples that were found, F1 = their harmonic mean, support = its number of examples)");
        let _ = writeln!(s, "{:<width$}  precision  recall      f1  support", "label");
        for m in &self.per_class {
            let label: String = if m.label.chars().count() > width {
                m.label.chars().take(width - 1).chain(['…']).collect()
            } else {
                m.label.clone()
            };
            let _ = writeln!(
                s,
                "{label:<width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
                m.precision, m.recall, m.f1, m.support
            );
        }
        s
    }
}
