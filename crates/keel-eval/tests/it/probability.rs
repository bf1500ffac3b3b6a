//! Brier score, ECE, ROC-AUC, temperature scaling, slices and confidently wrong examples.

use keel_core::Matrix;
use keel_eval::{
    binary_roc_auc, brier_score, confidently_wrong, expected_calibration_error, fit_temperature, length_keys,
    nll_at_temperature, reliability_bins, roc_auc, slice_metrics,
};

use crate::{Rng, case_a, labels};

#[test]
fn brier_score_by_hand() {
    // Row 0: (.7−1)² + .2² + .1² = 0.14; the mean over case A's 8 rows is 4.42/8 (hand sum).
    let (y, proba) = case_a();
    let rows: f64 = (0..8)
        .map(|i| {
            proba
                .row(i)
                .iter()
                .enumerate()
                .map(|(c, &p)| (f64::from(p) - f64::from(u8::from(c == y[i]))).powi(2))
                .sum::<f64>()
        })
        .sum();
    assert!((brier_score(&y, &proba) - rows / 8.0).abs() < 1e-12);
    let one = Matrix::from_vec(1, 3, vec![0.7, 0.2, 0.1]);
    assert!((brier_score(&[0], &one) - 0.14).abs() < 1e-6);
}

#[test]
fn ece_uses_fifteen_equal_width_bins() {
    // Four rows at confidence 0.9 (bin 13: (13/15, 14/15]), three right: |0.75 − 0.9| = 0.15.
    let proba = Matrix::from_vec(4, 2, vec![0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1]);
    let y = [0, 0, 0, 1];
    assert!((expected_calibration_error(&y, &proba) - 0.15).abs() < 1e-6);
    let bins = reliability_bins(&y, &proba);
    assert_eq!(bins.len(), 15);
    assert_eq!(bins[13].count, 4);
    assert!((bins[13].accuracy - 0.75).abs() < 1e-12);
    // Confidence 1 goes in the last bin, 0.5 in bin 7 ((7/15, 8/15]); 0.75 in bin 11 ((11/15, 12/15]).
    let proba = Matrix::from_vec(3, 2, vec![1.0, 0.0, 0.5, 0.5, 0.75, 0.25]);
    let bins = reliability_bins(&[0, 0, 0], &proba);
    assert_eq!((bins[14].count, bins[7].count, bins[11].count), (1, 1, 1));
    // Perfectly calibrated: 10 rows at 0.6 with 6 right.
    let proba = Matrix::from_vec(10, 2, [0.6f32, 0.4].repeat(10));
    let y: Vec<usize> = (0..10).map(|i| usize::from(i >= 6)).collect();
    assert!(expected_calibration_error(&y, &proba) < 1e-6);
}

fn auc_by_pairs(scores: &[f64], pos: &[bool]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..scores.len() {
        for j in 0..scores.len() {
            if pos[i] && !pos[j] {
                den += 1.0;
                num += if scores[i] > scores[j] {
                    1.0
                } else if scores[i] == scores[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    num / den
}

#[test]
fn roc_auc_matches_scikit_learn_and_pair_counting() {
    // scikit-learn's docs example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75.
    assert_eq!(binary_roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
    // Ties count one half.
    assert_eq!(binary_roc_auc(&[0.5, 0.5, 0.5, 0.9], &[false, true, false, true]), Some(0.75));
    assert_eq!(binary_roc_auc(&[0.1, 0.2], &[true, true]), None);
    // Random scores on a coarse grid (many ties) against O(n²) pair counting.
    let mut rng = Rng::new(9);
    let scores: Vec<f64> = (0..300).map(|_| (rng.uniform() * 10.0).floor() / 10.0).collect();
    let pos: Vec<bool> = scores.iter().map(|s| rng.uniform() < 0.3 + 0.5 * s).collect();
    let fast = binary_roc_auc(&scores, &pos).unwrap();
    assert!((fast - auc_by_pairs(&scores, &pos)).abs() < 1e-12);
    assert!(fast > 0.6);
}

#[test]
fn multi_class_roc_auc_is_the_one_vs_rest_mean() {
    let (y, proba) = case_a();
    let auc = roc_auc(&y, &proba).unwrap();
    let mut sum = 0.0;
    for c in 0..3 {
        let s: Vec<f64> = (0..8).map(|i| f64::from(proba.row(i)[c])).collect();
        let p: Vec<bool> = y.iter().map(|&t| t == c).collect();
        let v = auc_by_pairs(&s, &p);
        assert!((auc.per_class[c].unwrap() - v).abs() < 1e-12);
        sum += v;
    }
    assert!((auc.value - sum / 3.0).abs() < 1e-12);
    // Binary: the AUC of class 1's probability.
    let proba = Matrix::from_vec(4, 2, vec![0.9, 0.1, 0.6, 0.4, 0.65, 0.35, 0.2, 0.8]);
    assert_eq!(roc_auc(&[0, 0, 1, 1], &proba).unwrap().value, 0.75);
}

/// Logits of an over-confident model: the true class probabilities are `softmax(z)`, labels
/// are drawn from them, and the model reports `4·z`.
fn overconfident(n: usize, k: usize, seed: u64) -> (Matrix, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let mut logits = Matrix::zeros(n, k);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let z: Vec<f64> = (0..k).map(|_| 1.5 * rng.normal()).collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let u = rng.uniform() * s;
        let mut acc = 0.0;
        let mut t = k - 1;
        for (c, v) in e.iter().enumerate() {
            acc += v;
            if u < acc {
                t = c;
                break;
            }
        }
        y.push(t);
        for (o, v) in logits.row_mut(i).iter_mut().zip(&z) {
            *o = (4.0 * v) as f32;
        }
    }
    (logits, y)
}

#[test]
fn temperature_scaling_fixes_an_over_confident_model() {
    let (logits, y) = overconfident(4000, 4, 21);
    let fit = fit_temperature(&logits, &y);
    // The logits were inflated four-fold; the fitted temperature should undo it.
    assert!((fit.temperature - 4.0).abs() < 0.4, "{fit:?}");
    assert!(fit.after.log_loss < fit.before.log_loss - 0.1, "{fit:?}");
    assert!(fit.after.ece < fit.before.ece / 2.0, "{fit:?}");
    // It is the 1-D minimum: nudging T either way does not help.
    for t in [fit.temperature * 0.97, fit.temperature * 1.03] {
        assert!(nll_at_temperature(&logits, &y, t) >= fit.after.log_loss);
    }
    // On held-out data from the same model the fitted temperature helps too.
    let (logits2, y2) = overconfident(2000, 4, 22);
    assert!(nll_at_temperature(&logits2, &y2, fit.temperature) < nll_at_temperature(&logits2, &y2, 1.0));
}

#[test]
fn slices_and_confidently_wrong() {
    let (y, proba) = case_a();
    let names = labels(&["neg", "neu", "pos"]);
    let keys: Vec<String> = ["a", "b", "a", "b", "a", "b", "a", "b"].iter().map(|s| (*s).to_owned()).collect();
    let s = slice_metrics("source", &keys, &y, &proba, &names);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].key.as_str(), s[0].n, s[1].key.as_str(), s[1].n), ("a", 4, "b", 4));
    // Rows 0, 2, 4, 6: predictions 0, 1, 2, 2 against truth 0, 0, 1, 2 → 2 right.
    assert_eq!(s[0].accuracy, 0.5);
    // Rows 1, 3, 5, 7: predictions 0, 1, 2, 0 against 0, 1, 2, 2 → 3 right.
    assert_eq!(s[1].accuracy, 0.75);
    let w = confidently_wrong(&y, &proba, 2);
    // Wrong rows: 2 (pred 1 at .5), 4 (pred 2 at .4), 7 (pred 0 at .6). Most confident first.
    assert_eq!(w.iter().map(|e| e.index).collect::<Vec<_>>(), [7, 2]);
    assert!((w[0].confidence - 0.6).abs() < 1e-6 && (w[0].true_probability - 0.1).abs() < 1e-6);
    let lens = length_keys(&["", "one two", &"w ".repeat(20), &"w ".repeat(600)]);
    assert_eq!(lens, ["0-5 words", "0-5 words", "16-50 words", ">500 words"]);
}
