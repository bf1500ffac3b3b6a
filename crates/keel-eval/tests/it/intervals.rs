//! Bootstrap intervals: determinism, and coverage of the true accuracy.

use keel_eval::{BootstrapConfig, bootstrap_interval, bootstrap_intervals, quantile};

use crate::{Rng, synthetic};

/// Share of `reps` synthetic test sets (each `n` rows of a classifier with true accuracy `p`)
/// whose bootstrap interval at `level` contains `p`.
fn coverage(reps: usize, n: usize, k: usize, p: f64, level: f64, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let mut hits = 0;
    for r in 0..reps {
        let (y, proba) = synthetic(n, k, p, &mut rng);
        let cfg = BootstrapConfig { resamples: 1000, level, seed: 1000 + r as u64 };
        let iv = bootstrap_intervals(&y, &proba, &cfg);
        hits += usize::from(iv.accuracy.contains(p));
    }
    hits as f64 / reps as f64
}

/// 400 repetitions estimate a coverage `c` with binomial standard error `sqrt(c(1−c)/400)`:
/// 0.0109 at c = 0.95 and 0.02 at c = 0.80. We allow 3 standard errors either way (a correct
/// implementation fails this about 3 times in 1,000 seeds; this seed is fixed, so the test is
/// deterministic), plus 0.02 on the low side only: percentile intervals of a proportion behave
/// like Wald intervals, which undercover by about 1–2 points at n = 150–300 (Brown, Cai &
/// DasGupta 2001), and 1,000 resamples add a little Monte Carlo noise to the endpoints.
/// An interval at the wrong level (say 90% instead of 95%, or a biased centre) falls outside.
#[test]
fn bootstrap_intervals_cover_the_true_accuracy_at_their_nominal_rate() {
    let se = |c: f64| (c * (1.0 - c) / 400.0).sqrt();
    for (n, k, p, seed) in [(200, 3, 0.8, 11), (300, 5, 0.65, 12)] {
        let c95 = coverage(400, n, k, p, 0.95, seed);
        assert!(
            c95 >= 0.95 - 0.02 - 3.0 * se(0.95) && c95 <= 0.95 + 3.0 * se(0.95),
            "95% intervals covered the true accuracy {p} in {c95} of 400 repetitions (n = {n})"
        );
        // The same machinery at 80% must cover markedly less: the level is really used.
        let c80 = coverage(400, n, k, p, 0.80, seed);
        assert!(
            c80 >= 0.80 - 0.02 - 3.0 * se(0.80) && c80 <= 0.80 + 3.0 * se(0.80),
            "80% intervals covered the true accuracy {p} in {c80} of 400 repetitions (n = {n})"
        );
    }
}

#[test]
fn intervals_are_deterministic_given_the_seed_and_bracket_the_point() {
    let mut rng = Rng::new(5);
    let (y, proba) = synthetic(300, 4, 0.7, &mut rng);
    let cfg = BootstrapConfig::default();
    assert_eq!((cfg.resamples, cfg.level), (1000, 0.95));
    let a = bootstrap_intervals(&y, &proba, &cfg);
    let b = bootstrap_intervals(&y, &proba, &cfg);
    assert_eq!(a, b);
    for iv in a.all() {
        assert!(iv.lo <= iv.point && iv.point <= iv.hi, "{iv:?}");
        assert!(iv.hi > iv.lo, "{iv:?}");
    }
    let e = keel_eval::evaluate(&y, &proba, &(0..4).map(|c| c.to_string()).collect::<Vec<_>>());
    assert_eq!(a.accuracy.point, e.accuracy);
    assert!((a.macro_f1.point - e.macro_f1).abs() < 1e-12);
    assert!((a.log_loss.point - e.log_loss).abs() < 1e-12);
    assert!((a.ece.point - keel_eval::expected_calibration_error(&y, &proba)).abs() < 1e-12);
    let other = bootstrap_intervals(&y, &proba, &BootstrapConfig { seed: 99, ..cfg });
    assert_ne!(a.accuracy.lo, other.accuracy.lo);
}

#[test]
fn interval_width_matches_the_binomial_standard_error() {
    // For accuracy 0.8 on 1,000 rows, the 95% half-width is about 1.96·sqrt(.8·.2/1000) = 0.0248.
    let mut rng = Rng::new(8);
    let (y, proba) = synthetic(1000, 2, 0.8, &mut rng);
    let iv = bootstrap_intervals(&y, &proba, &BootstrapConfig::default()).accuracy;
    let se = (iv.point * (1.0 - iv.point) / 1000.0).sqrt();
    let half = (iv.hi - iv.lo) / 2.0;
    assert!((half / (1.96 * se) - 1.0).abs() < 0.12, "half-width {half}, normal theory {}", 1.96 * se);
}

#[test]
fn quantile_interpolates_like_numpy() {
    let v = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(quantile(&v, 0.0), 1.0);
    assert_eq!(quantile(&v, 1.0), 4.0);
    // numpy.quantile([1,2,3,4], 0.025) = 1.075; 0.975 → 3.925.
    assert!((quantile(&v, 0.025) - 1.075).abs() < 1e-12);
    assert!((quantile(&v, 0.975) - 3.925).abs() < 1e-12);
}

#[test]
fn custom_statistic_interval() {
    // Mean of a 0/1 column with 30 ones out of 100.
    let x: Vec<f64> = (0..100).map(|i| if i % 10 < 3 { 1.0 } else { 0.0 }).collect();
    let iv = bootstrap_interval("mean", x.len(), &BootstrapConfig::default(), |w| {
        let n: u32 = w.iter().sum();
        w.iter().zip(&x).map(|(&k, v)| f64::from(k) * v).sum::<f64>() / f64::from(n)
    });
    assert_eq!(iv.point, 0.3);
    assert!(iv.lo > 0.18 && iv.lo < 0.23 && iv.hi > 0.37 && iv.hi < 0.42, "{iv:?}");
}
