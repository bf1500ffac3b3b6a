//! The promotion gate on constructed cases.

use keel_core::Matrix;
use keel_eval::{Gate, paired_macro_f1_diff};

use crate::{Rng, synthetic};

fn one_hot(pred: &[usize], k: usize) -> Matrix {
    let mut m = Matrix::zeros(pred.len(), k);
    for (i, &p) in pred.iter().enumerate() {
        m.row_mut(i)[p] = 1.0;
    }
    m
}

/// Predictions that are right on the rows where `right(i)` holds, and wrong (next class)
/// elsewhere.
fn predictions(y: &[usize], k: usize, right: impl Fn(usize) -> bool) -> Matrix {
    let pred: Vec<usize> = y.iter().enumerate().map(|(i, &t)| if right(i) { t } else { (t + 1) % k }).collect();
    one_hot(&pred, k)
}

#[test]
fn reasons_read_as_specified() {
    let g = Gate::default();
    let d = g.decide_from(0.004, (-0.008, 0.016), 0.95, 0.804, 0.8, 500);
    assert!(!d.promote);
    assert_eq!(d.reason, "not promoted: macro-F1 +0.4 pt, 95% interval [\u{2212}0.8, +1.6] includes a loss");
    let d = g.decide_from(0.021, (0.009, 0.033), 0.95, 0.821, 0.8, 500);
    assert!(d.promote);
    assert_eq!(d.reason, "promoted: macro-F1 +2.1 pt, 95% interval [+0.9, +3.3]");
    // Lower bound just above −0.5 pt with a positive point estimate passes the default rule.
    assert!(g.decide_from(0.003, (-0.0049, 0.011), 0.95, 0.0, 0.0, 1).promote);
    // ... and exactly at the bound does not.
    assert!(!g.decide_from(0.003, (-0.005, 0.011), 0.95, 0.0, 0.0, 1).promote);
    let d = g.decide_from(-0.002, (-0.004, 0.0), 0.95, 0.0, 0.0, 1);
    assert!(!d.promote && d.reason.ends_with("no gain over production"), "{}", d.reason);
}

#[test]
fn a_clearly_better_challenger_is_promoted() {
    let mut rng = Rng::new(1);
    let (y, _) = synthetic(2000, 4, 0.5, &mut rng);
    let prod = predictions(&y, 4, |i| i % 10 < 7);
    let chal = predictions(&y, 4, |i| i % 10 < 8);
    let d = Gate::default().decide(&y, &chal, &prod);
    assert!(d.promote, "{d:?}");
    assert!(d.reason.starts_with("promoted: macro-F1 +"), "{}", d.reason);
    assert!(d.ci.0 > 0.0 && d.diff > 0.05 && d.diff < 0.15, "{d:?}");
    assert!((d.diff - (d.challenger_macro_f1 - d.production_macro_f1)).abs() < 1e-12);
}

#[test]
fn the_same_model_is_not_promoted() {
    let mut rng = Rng::new(2);
    let (y, proba) = synthetic(500, 3, 0.8, &mut rng);
    let d = Gate::default().decide(&y, &proba, &proba);
    assert!(!d.promote);
    assert_eq!(d.diff, 0.0);
    assert_eq!(d.ci, (0.0, 0.0));
    assert!(d.reason.contains("no gain"), "{}", d.reason);
}

#[test]
fn a_small_noisy_gain_is_held_back() {
    // 200 rows; the challenger fixes 6 rows and breaks 4: +1 point on 200 rows is noise.
    let mut rng = Rng::new(3);
    let (y, _) = synthetic(200, 2, 0.5, &mut rng);
    let prod_right = |i: usize| !i.is_multiple_of(5);
    let fixed = [0, 5, 10, 15, 20, 25];
    let broken = [1, 2, 3, 4];
    let prod = predictions(&y, 2, prod_right);
    let chal = predictions(&y, 2, |i| (prod_right(i) || fixed.contains(&i)) && !broken.contains(&i));
    let d = Gate::default().decide(&y, &chal, &prod);
    assert!(d.diff > 0.0, "{d:?}");
    assert!(!d.promote, "{d:?}");
    assert!(d.reason.ends_with("includes a loss"), "{}", d.reason);
}

#[test]
fn a_worse_challenger_is_not_promoted() {
    let mut rng = Rng::new(4);
    let (y, _) = synthetic(1000, 5, 0.5, &mut rng);
    let prod = predictions(&y, 5, |i| i % 10 < 8);
    let chal = predictions(&y, 5, |i| i % 10 < 7);
    let d = Gate::default().decide(&y, &chal, &prod);
    assert!(!d.promote && d.diff < 0.0 && d.ci.1 < 0.0, "{d:?}");
}

#[test]
fn paired_interval_is_narrower_than_unpaired_noise() {
    // Two models that agree on 98% of rows: the paired interval of the difference is much
    // narrower than the interval of either model's own macro-F1.
    let mut rng = Rng::new(6);
    let (y, _) = synthetic(1000, 3, 0.5, &mut rng);
    let a = predictions(&y, 3, |i| i % 10 < 8);
    let b = predictions(&y, 3, |i| i % 10 < 8 && i % 100 != 0 || i % 100 == 9);
    let cfg = keel_eval::BootstrapConfig::default();
    let diff = paired_macro_f1_diff(&y, &a, &b, &cfg);
    let single = keel_eval::bootstrap_intervals(&y, &a, &cfg).macro_f1;
    assert!((diff.hi - diff.lo) < 0.6 * (single.hi - single.lo), "{diff:?} vs {single:?}");
}
