//! Keel monitoring: is live traffic still like the data the model was trained on, and is the
//! model still right?
//!
//! Pure computation, like keel-train and keel-eval: no IO, no SQL, no HTTP. The caller hands
//! over texts, embeddings and the head's probabilities; this crate returns numbers and words.
//!
//! - [`Profile`]: the reference, built at training time from the training split: text
//!   lengths (characters, words, encoder tokens), the out-of-vocabulary word rate, the mean
//!   embedding and its top principal components, projections of a sample, predicted-class and
//!   confidence distributions. Deterministic JSON bytes.
//! - [`compare`]: a window against the reference. Each per-row statistic is tested with
//!   Evidently's defaults (KS for numeric and chi-square / z for categorical columns when the
//!   reference has at most 1,000 rows; above that normed Wasserstein and Jensen–Shannon with
//!   threshold 0.1, counted only when the KS / chi-square test also rejects at 0.05, so that
//!   sampling noise in a small window is not read as drift; PSI reported beside); the data set
//!   drifts when half of them do. Embedding drift is a domain classifier (cross-validated
//!   ROC-AUC of logistic regression separating reference from current projections; drift
//!   above 0.55 when a permutation test of the same procedure puts it beyond chance at 0.025),
//!   with MMD (RBF kernel, median heuristic, permutation p-value) as a second opinion. The
//!   verdict is "drift" when either the domain classifier or the data-set rule says so (the
//!   classifier at half the significance, so the two alarms together stay near 5% on
//!   unchanged traffic).
//! - [`live_quality`]: accuracy and macro-F1 with bootstrap intervals from feedback.
//! - [`render_html`]: a self-contained page with inline SVG plots.

// Index arithmetic reads better than iterator chains in the numeric kernels (PCA, MMD), and the
// Lanczos and erfc coefficients are quoted at their published precision.
#![allow(clippy::needless_range_loop, clippy::excessive_precision)]

mod drift;
mod html;
mod pca;
mod profile;
mod sample;
pub mod stats;

pub use drift::{
    ColumnDrift, DriftReport, EmbeddingDrift, LiveQuality, MonitorConfig, PredictionDrift, TimePoint, Verdict, compare,
    live_quality, over_time,
};
pub use html::render_html;
pub use profile::{Column, EvalFigures, Observation, PROFILE_FORMAT, Profile, ProfileConfig, Rows, words};

/// Everything that can go wrong in monitoring.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("no rows to profile or compare")]
    Empty,
    #[error("inputs do not line up: {0}")]
    Shape(String),
    #[error("invalid profile: {0}")]
    Invalid(String),
    #[error("profile JSON: {0}")]
    Json(#[from] serde_json::Error),
}
