//! Temperature scaling (Guo et al., 2017): divide a model's logits by one number `T` fitted to
//! minimise the log loss on validation data. `T > 1` softens an over-confident model, `T < 1`
//! sharpens an under-confident one; the predicted class never changes.

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::metrics::expected_calibration_error;

/// Log loss and ECE of one set of probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationStats {
    pub log_loss: f64,
    /// Expected calibration error, 15 equal-width bins.
    pub ece: f64,
}

/// A fitted temperature and the validation metrics before (`T = 1`) and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemperatureFit {
    pub temperature: f64,
    pub before: CalibrationStats,
    pub after: CalibrationStats,
}

/// Row-wise `softmax(logits / t)`.
pub fn softmax_with_temperature(logits: &Matrix, t: f64) -> Matrix {
    let mut out = Matrix::zeros(logits.rows(), logits.cols());
    for i in 0..logits.rows() {
        let z = logits.row(i);
        let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let e: Vec<f64> = z.iter().map(|&v| ((f64::from(v) - max) / t).exp()).collect();
        let s: f64 = e.iter().sum();
        for (o, v) in out.row_mut(i).iter_mut().zip(&e) {
            *o = (v / s) as f32;
        }
    }
    out
}

/// Mean negative log-likelihood of `y` under `softmax(logits / t)`, computed in f64 without
/// clipping.
pub fn nll_at_temperature(logits: &Matrix, y: &[usize], t: f64) -> f64 {
    assert_eq!(logits.rows(), y.len(), "one logit row per example");
    if y.is_empty() {
        return 0.0;
    }
    let total: f64 = y
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let z = logits.row(i);
            let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let s: f64 = z.iter().map(|&v| ((f64::from(v) - max) / t).exp()).sum();
            (max - f64::from(z[c])) / t + s.ln()
        })
        .sum();
    total / y.len() as f64
}

/// Fits `T` by golden-section search on `ln T ∈ [ln 0.01, ln 100]` (the NLL is unimodal in
/// `T` for fixed logits), to a relative precision of about 1e-6. Deterministic.
pub fn fit_temperature(logits: &Matrix, y: &[usize]) -> TemperatureFit {
    let f = |lt: f64| nll_at_temperature(logits, y, lt.exp());
    let (mut a, mut b) = (0.01f64.ln(), 100.0f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-6 {
        if fc <= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    let mut t = ((a + b) / 2.0).exp();
    // Never report a temperature that does worse than leaving the model alone.
    if f(t.ln()) > f(0.0) {
        t = 1.0;
    }
    let stats = |t: f64| {
        let p = softmax_with_temperature(logits, t);
        CalibrationStats { log_loss: nll_at_temperature(logits, y, t), ece: expected_calibration_error(y, &p) }
    };
    TemperatureFit { temperature: t, before: stats(1.0), after: stats(t) }
}
