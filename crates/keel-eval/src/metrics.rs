//! Probability-quality metrics: Brier score, expected calibration error with its reliability
//! bins, and ROC-AUC.

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

/// Number of equal-width confidence bins used by [`expected_calibration_error`].
pub const ECE_BINS: usize = 15;

/// Multi-class Brier score: the mean over examples of `Σ_c (p_c − [y = c])²`, from 0 (perfect)
/// to 2. For two classes this is twice scikit-learn's `brier_score_loss`, which only scores the
/// positive class's probability.
pub fn brier_score(y_true: &[usize], proba: &Matrix) -> f64 {
    assert_eq!(proba.rows(), y_true.len(), "one probability row per example");
    if y_true.is_empty() {
        return 0.0;
    }
    let total: f64 = y_true
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            proba
                .row(i)
                .iter()
                .enumerate()
                .map(|(c, &p)| {
                    let d = f64::from(p) - if c == t { 1.0 } else { 0.0 };
                    d * d
                })
                .sum::<f64>()
        })
        .sum();
    total / y_true.len() as f64
}

/// One confidence bin of a reliability diagram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// The bin covers confidences in `(lo, hi]` (the first bin also takes 0).
    pub lo: f64,
    pub hi: f64,
    /// Examples whose top probability fell in the bin.
    pub count: u64,
    /// Their mean top probability (0 when empty).
    pub mean_confidence: f64,
    /// The share of them predicted correctly (0 when empty).
    pub accuracy: f64,
}

/// The reliability diagram's data: [`ECE_BINS`] equal-width bins of the top-class probability.
pub fn reliability_bins(y_true: &[usize], proba: &Matrix) -> Vec<ReliabilityBin> {
    assert_eq!(proba.rows(), y_true.len(), "one probability row per example");
    let mut count = [0u64; ECE_BINS];
    let mut conf = [0.0f64; ECE_BINS];
    let mut hits = [0u64; ECE_BINS];
    for (i, &t) in y_true.iter().enumerate() {
        let (pred, p) = top(proba.row(i));
        let b = bin_of(p);
        count[b] += 1;
        conf[b] += p;
        hits[b] += u64::from(pred == t);
    }
    (0..ECE_BINS)
        .map(|b| {
            let n = count[b];
            ReliabilityBin {
                lo: b as f64 / ECE_BINS as f64,
                hi: (b + 1) as f64 / ECE_BINS as f64,
                count: n,
                mean_confidence: if n == 0 { 0.0 } else { conf[b] / n as f64 },
                accuracy: if n == 0 { 0.0 } else { hits[b] as f64 / n as f64 },
            }
        })
        .collect()
}

/// Expected calibration error with **15 equal-width bins** of the top-class probability
/// (Guo et al., 2017): `Σ_b (n_b / n) · |accuracy_b − mean confidence_b|`. 0 means the model's
/// confidence matches how often it is right.
pub fn expected_calibration_error(y_true: &[usize], proba: &Matrix) -> f64 {
    ece_from_bins(&reliability_bins(y_true, proba), y_true.len())
}

pub(crate) fn ece_from_bins(bins: &[ReliabilityBin], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    bins.iter().map(|b| b.count as f64 / n as f64 * (b.accuracy - b.mean_confidence).abs()).sum()
}

/// Bin index of a confidence: bin `b` holds `(b/15, (b+1)/15]`, bin 0 also holds 0.
pub(crate) fn bin_of(p: f64) -> usize {
    let b = (p * ECE_BINS as f64).ceil() as usize;
    b.saturating_sub(1).min(ECE_BINS - 1)
}

/// Most probable class (first on ties) and its probability.
pub(crate) fn top(row: &[f32]) -> (usize, f64) {
    let mut best = 0;
    for (i, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = i;
        }
    }
    (best, f64::from(row[best]))
}

/// Area under the ROC curve of `scores` for the examples where `positive` is true, computed
/// exactly from ranks (Mann-Whitney U) with ties given their average rank. `None` when either
/// class is absent.
pub fn binary_roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len(), "one score per example");
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 share their mean.
        let avg = (i + j + 2) as f64 / 2.0;
        rank_sum_pos += avg * order[i..=j].iter().filter(|&&k| positive[k]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// ROC-AUC of a classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RocAuc {
    /// Two classes: the AUC of class 1's probability. More: the unweighted mean of the
    /// one-vs-rest AUCs over classes that have both positive and negative examples.
    pub value: f64,
    /// One-vs-rest AUC of each class (`None` for a class absent from, or the only class in,
    /// the data).
    pub per_class: Vec<Option<f64>>,
}

/// ROC-AUC, binary or one-vs-rest macro (scikit-learn's `roc_auc_score` with
/// `multi_class="ovr", average="macro"`). `None` when no class has both positives and
/// negatives.
pub fn roc_auc(y_true: &[usize], proba: &Matrix) -> Option<RocAuc> {
    assert_eq!(proba.rows(), y_true.len(), "one probability row per example");
    let k = proba.cols();
    let per_class: Vec<Option<f64>> = (0..k)
        .map(|c| {
            let scores: Vec<f64> = (0..proba.rows()).map(|i| f64::from(proba.row(i)[c])).collect();
            let pos: Vec<bool> = y_true.iter().map(|&t| t == c).collect();
            binary_roc_auc(&scores, &pos)
        })
        .collect();
    let value = if k == 2 {
        per_class[1]?
    } else {
        let present: Vec<f64> = per_class.iter().flatten().copied().collect();
        if present.is_empty() {
            return None;
        }
        present.iter().sum::<f64>() / present.len() as f64
    };
    Some(RocAuc { value, per_class })
}
