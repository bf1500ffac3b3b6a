//! The reference profile (computed at training time from the training split) and the same
//! features observed on a window of live traffic.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::{Matrix, SplitMix64};
use serde::{Deserialize, Serialize};

use crate::sample::sample_indices;
use crate::{MonitorError, pca};

/// Version of the profile's serialised form.
pub const PROFILE_FORMAT: u32 = 1;

/// Rows to profile: texts, the encoder's token counts (optional), embeddings, and the head's
/// class probabilities, all in the same order.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a, S: AsRef<str>> {
    pub texts: &'a [S],
    /// Tokens the encoder sees for each text (specials included), when known.
    pub tokens: Option<&'a [usize]>,
    pub embeddings: &'a Matrix,
    /// `rows × labels` probabilities from the head.
    pub proba: &'a Matrix,
}

impl<S: AsRef<str>> Rows<'_, S> {
    fn check(&self, labels: usize) -> Result<usize, MonitorError> {
        let n = self.texts.len();
        if n == 0 {
            return Err(MonitorError::Empty);
        }
        let bad = |what: &str, got: usize| Err(MonitorError::Shape(format!("{n} texts but {got} {what}")));
        if self.embeddings.rows() != n {
            return bad("embedding rows", self.embeddings.rows());
        }
        if self.proba.rows() != n {
            return bad("probability rows", self.proba.rows());
        }
        if let Some(t) = self.tokens
            && t.len() != n
        {
            return bad("token counts", t.len());
        }
        if self.proba.cols() != labels {
            return Err(MonitorError::Shape(format!("{labels} labels but {} probability columns", self.proba.cols())));
        }
        Ok(n)
    }
}

/// Settings for [`Profile::build`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileConfig {
    /// Principal components kept (default 16).
    pub components: usize,
    /// Rows whose projections are kept for the domain classifier and MMD (default 1,000), from
    /// the half of the training split the components were not fitted on.
    pub sample_rows: usize,
    /// Rows kept per per-row statistic (default 5,000).
    pub column_rows: usize,
    /// Rows the covariance is computed from (default 5,000), from the other half.
    pub pca_rows: usize,
    /// Most frequent training words kept as the vocabulary (default 50,000).
    pub vocabulary: usize,
    pub seed: u64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            components: 16,
            sample_rows: 1000,
            column_rows: 5000,
            pca_rows: 5000,
            vocabulary: 50_000,
            seed: 0x6b65_656c,
        }
    }
}

/// The figures the version had at evaluation, for comparing with live quality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalFigures {
    pub accuracy: f64,
    pub macro_f1: f64,
}

/// A per-row statistic's reference values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub values: Vec<f64>,
}

/// What training data looked like, kept with a model version. Serialises deterministically
/// ([`Profile::to_bytes`]): the same inputs and config give the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: u32,
    /// Rows profiled (the training split).
    pub n_rows: u64,
    pub labels: Vec<String>,
    pub dim: usize,
    /// Mean embedding.
    pub mean: Vec<f32>,
    /// `components × dim`, row-major: the top principal directions of the embeddings.
    pub basis: Vec<f32>,
    pub components: usize,
    /// Variance along each component, and in total (sum over all dimensions).
    pub explained_variance: Vec<f64>,
    pub total_variance: f64,
    /// Mean and standard deviation of each projection feature over the sample (the
    /// components, then the residual norm), used to standardise before the domain classifier.
    pub feature_mean: Vec<f64>,
    pub feature_std: Vec<f64>,
    /// `sample_rows × (components + 1)`: projections of a sample and the norm of what the
    /// basis does not explain.
    pub sample: Vec<f32>,
    pub sample_rows: usize,
    /// Per-row statistics: `text_chars`, `text_tokens` (when known), `oov_rate`, `confidence`.
    /// (Word counts are left out: they move with characters and tokens, and three measures of
    /// length would decide the data-set rule on their own.)
    pub columns: Vec<Column>,
    /// Predicted class index of each row kept for the columns.
    pub predicted: Vec<u32>,
    /// Training words (lower-cased alphanumeric runs), sorted, used for the out-of-vocabulary
    /// rate. Built from one half of the training rows; the reference `oov_rate` comes from the
    /// other half, so it is measured out of sample, as live traffic is.
    pub vocabulary: Vec<String>,
    pub evaluation: Option<EvalFigures>,
    pub config: ProfileConfig,
}

/// Lower-cased alphanumeric runs of a text.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

fn oov_rate(text: &str, vocab: &BTreeSet<&str>) -> f64 {
    let (mut n, mut out) = (0usize, 0usize);
    for w in words(text) {
        n += 1;
        if !vocab.contains(w.as_str()) {
            out += 1;
        }
    }
    if n == 0 { 0.0 } else { out as f64 / n as f64 }
}

fn top(row: &[f32]) -> (usize, f64) {
    let mut best = 0;
    for (i, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = i;
        }
    }
    (best, f64::from(row[best]))
}

/// Projections on the basis and the residual norm of one embedding.
pub(crate) fn project(x: &[f32], mean: &[f32], basis: &[f32], k: usize, out: &mut Vec<f32>) {
    let r: Vec<f64> = x.iter().zip(mean).map(|(a, m)| f64::from(*a) - f64::from(*m)).collect();
    let total: f64 = r.iter().map(|v| v * v).sum();
    let d = mean.len();
    let mut explained = 0.0;
    for j in 0..k {
        let p: f64 = basis[j * d..(j + 1) * d].iter().zip(&r).map(|(b, v)| f64::from(*b) * v).sum();
        explained += p * p;
        out.push(p as f32);
    }
    out.push((total - explained).max(0.0).sqrt() as f32);
}

impl Profile {
    /// Profiles the training rows (`labels` in probability-column order).
    pub fn build<S: AsRef<str>>(
        rows: &Rows<'_, S>,
        labels: &[String],
        evaluation: Option<EvalFigures>,
        cfg: &ProfileConfig,
    ) -> Result<Profile, MonitorError> {
        let n = rows.check(labels.len())?;
        let d = rows.embeddings.cols();
        if d == 0 {
            return Err(MonitorError::Shape("embeddings have no components".into()));
        }
        let k = cfg.components.min(d);
        // Two halves by a seeded order: the vocabulary and the principal components come from the
        // even positions (A), the reference OOV rates and the projected sample from the odd ones
        // (B), so the reference is measured out of sample, as live traffic is. (Projected
        // in sample, training rows lie closer to their own components than any new row does, and
        // a domain classifier sees that difference even when nothing changed.)
        let mut order: Vec<usize> = (0..n).collect();
        SplitMix64::new(cfg.seed ^ 0x0076_6f63_6162).shuffle(&mut order);
        let half = |offset: usize, cap: usize| -> Vec<usize> {
            let mut h: Vec<usize> = order.iter().skip(offset).step_by(2).copied().collect();
            if h.is_empty() {
                h = order.clone();
            }
            h.truncate(cap);
            h.sort_unstable();
            h
        };
        let pca_rows = half(0, cfg.pca_rows);
        let p = pca::fit(rows.embeddings, &pca_rows, k, cfg.seed);
        let mut freq: BTreeMap<String, u64> = BTreeMap::new();
        for &i in order.iter().step_by(2) {
            for w in words(rows.texts[i].as_ref()) {
                *freq.entry(w).or_insert(0) += 1;
            }
        }
        let mut ranked: Vec<(String, u64)> = freq.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(cfg.vocabulary);
        let mut vocabulary: Vec<String> = ranked.into_iter().map(|(w, _)| w).collect();
        vocabulary.sort();
        let vocab: BTreeSet<&str> = vocabulary.iter().map(String::as_str).collect();
        let held = half(1, cfg.column_rows);

        let col_rows = sample_indices(n, cfg.column_rows, cfg.seed ^ 1);
        let text = |i: usize| rows.texts[i].as_ref();
        let mut columns = vec![Column {
            name: "text_chars".into(),
            values: col_rows.iter().map(|&i| text(i).chars().count() as f64).collect(),
        }];
        if let Some(t) = rows.tokens {
            columns
                .push(Column { name: "text_tokens".into(), values: col_rows.iter().map(|&i| t[i] as f64).collect() });
        }
        columns.push(Column {
            name: "oov_rate".into(),
            values: held.iter().map(|&i| oov_rate(text(i), &vocab)).collect(),
        });
        columns.push(Column {
            name: "confidence".into(),
            values: col_rows.iter().map(|&i| top(rows.proba.row(i)).1).collect(),
        });
        let predicted = col_rows.iter().map(|&i| top(rows.proba.row(i)).0 as u32).collect();

        let sample_idx = half(1, cfg.sample_rows);
        let mut sample = Vec::with_capacity(sample_idx.len() * (k + 1));
        for &i in &sample_idx {
            project(rows.embeddings.row(i), &p.mean, &p.basis, k, &mut sample);
        }
        let f = k + 1;
        let m = sample_idx.len() as f64;
        let feature_mean: Vec<f64> =
            (0..f).map(|j| sample.iter().skip(j).step_by(f).map(|&v| f64::from(v)).sum::<f64>() / m).collect();
        let feature_std: Vec<f64> = (0..f)
            .map(|j| {
                let mu = feature_mean[j];
                (sample.iter().skip(j).step_by(f).map(|&v| (f64::from(v) - mu).powi(2)).sum::<f64>() / m).sqrt()
            })
            .collect();
        Ok(Profile {
            format: PROFILE_FORMAT,
            n_rows: n as u64,
            labels: labels.to_vec(),
            dim: d,
            mean: p.mean,
            basis: p.basis,
            components: k,
            explained_variance: p.variance,
            total_variance: p.total_variance,
            feature_mean,
            feature_std,
            sample,
            sample_rows: sample_idx.len(),
            columns,
            predicted,
            vocabulary,
            evaluation,
            config: cfg.clone(),
        })
    }

    /// The profile as JSON bytes (the stored artifact).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a profile always serialises")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Profile, MonitorError> {
        let p: Profile = serde_json::from_slice(bytes)?;
        if p.format != PROFILE_FORMAT {
            return Err(MonitorError::Invalid(format!(
                "profile format {} (this build reads {PROFILE_FORMAT})",
                p.format
            )));
        }
        if p.basis.len() != p.components * p.dim || p.sample.len() != p.sample_rows * (p.components + 1) {
            return Err(MonitorError::Invalid("profile arrays do not match their declared sizes".into()));
        }
        Ok(p)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The sample's projection features as rows.
    pub(crate) fn sample_features(&self) -> Vec<&[f32]> {
        self.sample.chunks(self.components + 1).collect()
    }
}

/// The profile's features observed on a window of rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub n: usize,
    pub columns: Vec<Column>,
    pub predicted: Vec<u32>,
    /// `n × (components + 1)`.
    pub features: Vec<f32>,
}

impl Observation {
    /// Computes, for each row, the statistics the profile keeps.
    pub fn new<S: AsRef<str>>(profile: &Profile, rows: &Rows<'_, S>) -> Result<Observation, MonitorError> {
        let n = rows.check(profile.labels.len())?;
        if rows.embeddings.cols() != profile.dim {
            return Err(MonitorError::Shape(format!(
                "embeddings have {} components, the profile {}",
                rows.embeddings.cols(),
                profile.dim
            )));
        }
        let vocab: BTreeSet<&str> = profile.vocabulary.iter().map(String::as_str).collect();
        let text = |i: usize| rows.texts[i].as_ref();
        let mut columns = Vec::new();
        for c in &profile.columns {
            let values: Vec<f64> = match c.name.as_str() {
                "text_chars" => (0..n).map(|i| text(i).chars().count() as f64).collect(),
                "text_tokens" => match rows.tokens {
                    Some(t) => t.iter().map(|&v| v as f64).collect(),
                    None => continue,
                },
                "oov_rate" => (0..n).map(|i| oov_rate(text(i), &vocab)).collect(),
                "confidence" => (0..n).map(|i| top(rows.proba.row(i)).1).collect(),
                _ => continue,
            };
            columns.push(Column { name: c.name.clone(), values });
        }
        let predicted = (0..n).map(|i| top(rows.proba.row(i)).0 as u32).collect();
        let mut features = Vec::with_capacity(n * (profile.components + 1));
        for i in 0..n {
            project(rows.embeddings.row(i), &profile.mean, &profile.basis, profile.components, &mut features);
        }
        Ok(Observation { n, columns, predicted, features })
    }

    /// Rows `idx` of this observation.
    pub fn select(&self, idx: &[usize]) -> Observation {
        let f = self.features.len().checked_div(self.n).unwrap_or(0);
        Observation {
            n: idx.len(),
            columns: self
                .columns
                .iter()
                .map(|c| Column { name: c.name.clone(), values: idx.iter().map(|&i| c.values[i]).collect() })
                .collect(),
            predicted: idx.iter().map(|&i| self.predicted[i]).collect(),
            features: idx.iter().flat_map(|&i| self.features[i * f..(i + 1) * f].iter().copied()).collect(),
        }
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}
