//! Percentile-bootstrap confidence intervals, single and paired.
//!
//! Each resample draws `n` example indices with replacement from a seeded generator, so the
//! same inputs and seed always give the same interval. The interval is the `(1−level)/2` and
//! `(1+level)/2` quantiles of the resampled statistic (linear interpolation between order
//! statistics, numpy's default). Percentile intervals run slightly narrow on small samples:
//! expect a nominal 95% interval to cover the truth 93–95% of the time at a few hundred
//! examples (see the coverage test).

use keel_core::{Matrix, SplitMix64};
use serde::{Deserialize, Serialize};

use crate::metrics::{ECE_BINS, bin_of, top};

/// How to bootstrap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples (default 1,000).
    pub resamples: usize,
    /// Coverage of the interval (default 0.95).
    pub level: f64,
    /// Seed of the resampling generator (default 0x6b65656c, "keel").
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self { resamples: 1000, level: 0.95, seed: 0x6b65_656c }
    }
}

/// A point estimate with its bootstrap interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The metric's name, e.g. `"accuracy"`.
    pub metric: String,
    /// The value on the full data.
    pub point: f64,
    pub lo: f64,
    pub hi: f64,
    /// Nominal coverage, e.g. 0.95.
    pub level: f64,
}

impl Interval {
    pub fn contains(&self, v: f64) -> bool {
        self.lo <= v && v <= self.hi
    }
}

/// Intervals for the headline metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricIntervals {
    pub accuracy: Interval,
    pub macro_f1: Interval,
    pub log_loss: Interval,
    /// Expected calibration error, 15 equal-width bins.
    pub ece: Interval,
}

impl MetricIntervals {
    pub fn all(&self) -> [&Interval; 4] {
        [&self.accuracy, &self.macro_f1, &self.log_loss, &self.ece]
    }
}

/// The `q`-quantile (`0..=1`) of ascending `sorted` values, interpolating linearly.
///
/// Panics on an empty slice.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of nothing");
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Draws `cfg.resamples` resamples of `0..n` and returns, for each statistic `stats` computes
/// on a resample (given as per-index multiplicities), the sorted resampled values.
fn resample<const M: usize>(
    n: usize,
    cfg: &BootstrapConfig,
    mut stats: impl FnMut(&[u32]) -> [f64; M],
) -> [Vec<f64>; M] {
    let mut rng = SplitMix64::new(cfg.seed);
    let mut weights = vec![0u32; n];
    let mut out: [Vec<f64>; M] = std::array::from_fn(|_| Vec::with_capacity(cfg.resamples));
    for _ in 0..cfg.resamples {
        weights.fill(0);
        for _ in 0..n {
            weights[rng.below(n)] += 1;
        }
        for (o, v) in out.iter_mut().zip(stats(&weights)) {
            o.push(v);
        }
    }
    for o in &mut out {
        o.sort_by(f64::total_cmp);
    }
    out
}

fn interval(metric: &str, point: f64, sorted: &[f64], level: f64) -> Interval {
    let a = (1.0 - level) / 2.0;
    let (lo, hi) = if sorted.is_empty() { (point, point) } else { (quantile(sorted, a), quantile(sorted, 1.0 - a)) };
    Interval { metric: metric.to_owned(), point, lo, hi, level }
}

/// Percentile bootstrap interval of any statistic of the examples. `stat` receives the
/// multiplicity of each example in a resample (all ones for the full data).
pub fn bootstrap_interval(
    metric: &str,
    n: usize,
    cfg: &BootstrapConfig,
    mut stat: impl FnMut(&[u32]) -> f64,
) -> Interval {
    let point = stat(&vec![1; n]);
    let [v] = resample(n, cfg, |w| [stat(w)]);
    interval(metric, point, &v, cfg.level)
}

/// Per-example facts every headline metric is computed from.
pub(crate) struct Scored {
    pub y_true: Vec<usize>,
    pub y_pred: Vec<usize>,
    pub log_loss: Vec<f64>,
    pub confidence: Vec<f64>,
    pub n_classes: usize,
}

impl Scored {
    pub(crate) fn new(y_true: &[usize], proba: &Matrix) -> Self {
        assert_eq!(proba.rows(), y_true.len(), "one probability row per example");
        let mut y_pred = Vec::with_capacity(y_true.len());
        let mut confidence = Vec::with_capacity(y_true.len());
        let mut log_loss = Vec::with_capacity(y_true.len());
        for (i, &t) in y_true.iter().enumerate() {
            let row = proba.row(i);
            assert!(t < row.len(), "class index out of range");
            let (p, c) = top(row);
            y_pred.push(p);
            confidence.push(c);
            log_loss.push(-f64::from(row[t]).clamp(crate::LOG_LOSS_EPS, 1.0 - crate::LOG_LOSS_EPS).ln());
        }
        Self { y_true: y_true.to_vec(), y_pred, log_loss, confidence, n_classes: proba.cols() }
    }

    /// `[accuracy, macro-F1, log loss, ECE]` of the resample with multiplicities `w`.
    pub(crate) fn stats(&self, w: &[u32], tp: &mut [u64], pred: &mut [u64], sup: &mut [u64]) -> [f64; 4] {
        tp.fill(0);
        pred.fill(0);
        sup.fill(0);
        let mut total = 0u64;
        let mut ll = 0.0;
        let mut bins_n = [0u64; ECE_BINS];
        let mut bins_conf = [0.0f64; ECE_BINS];
        let mut bins_hit = [0u64; ECE_BINS];
        for (i, &wi) in w.iter().enumerate() {
            if wi == 0 {
                continue;
            }
            let wi64 = u64::from(wi);
            let (t, p) = (self.y_true[i], self.y_pred[i]);
            total += wi64;
            sup[t] += wi64;
            pred[p] += wi64;
            let hit = t == p;
            if hit {
                tp[t] += wi64;
            }
            ll += f64::from(wi) * self.log_loss[i];
            let b = bin_of(self.confidence[i]);
            bins_n[b] += wi64;
            bins_conf[b] += f64::from(wi) * self.confidence[i];
            bins_hit[b] += if hit { wi64 } else { 0 };
        }
        if total == 0 {
            return [0.0; 4];
        }
        let n = total as f64;
        let correct: u64 = tp.iter().sum();
        let f1_sum: f64 = (0..self.n_classes)
            .map(|c| if pred[c] + sup[c] == 0 { 0.0 } else { (2 * tp[c]) as f64 / (pred[c] + sup[c]) as f64 })
            .sum();
        let ece: f64 = (0..ECE_BINS)
            .filter(|&b| bins_n[b] > 0)
            .map(|b| {
                let nb = bins_n[b] as f64;
                (nb / n) * (bins_hit[b] as f64 / nb - bins_conf[b] / nb).abs()
            })
            .sum();
        [correct as f64 / n, f1_sum / self.n_classes as f64, ll / n, ece]
    }

    pub(crate) fn macro_f1(&self, w: &[u32]) -> f64 {
        let k = self.n_classes;
        let (mut tp, mut pred, mut sup) = (vec![0; k], vec![0; k], vec![0; k]);
        self.stats(w, &mut tp, &mut pred, &mut sup)[1]
    }
}

/// 95% (or `cfg.level`) percentile-bootstrap intervals for accuracy, macro-F1, log loss and
/// expected calibration error, all from the same resamples.
pub fn bootstrap_intervals(y_true: &[usize], proba: &Matrix, cfg: &BootstrapConfig) -> MetricIntervals {
    let s = Scored::new(y_true, proba);
    let k = s.n_classes;
    let (mut tp, mut pred, mut sup) = (vec![0; k], vec![0; k], vec![0; k]);
    let point = s.stats(&vec![1; y_true.len()], &mut tp, &mut pred, &mut sup);
    let [acc, f1, ll, ece] = resample(y_true.len(), cfg, |w| s.stats(w, &mut tp, &mut pred, &mut sup));
    MetricIntervals {
        accuracy: interval("accuracy", point[0], &acc, cfg.level),
        macro_f1: interval("macro_f1", point[1], &f1, cfg.level),
        log_loss: interval("log_loss", point[2], &ll, cfg.level),
        ece: interval("ece", point[3], &ece, cfg.level),
    }
}

/// Paired percentile bootstrap of `macro-F1(a) − macro-F1(b)` on the same examples: each
/// resample scores both models on the same drawn rows, so the interval reflects the
/// difference's own noise, not each model's.
pub fn paired_macro_f1_diff(y_true: &[usize], proba_a: &Matrix, proba_b: &Matrix, cfg: &BootstrapConfig) -> Interval {
    assert_eq!(proba_a.cols(), proba_b.cols(), "both models must score the same label list");
    let a = Scored::new(y_true, proba_a);
    let b = Scored::new(y_true, proba_b);
    bootstrap_interval("macro_f1_difference", y_true.len(), cfg, |w| a.macro_f1(w) - b.macro_f1(w))
}
