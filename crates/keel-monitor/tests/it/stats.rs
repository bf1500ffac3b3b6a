//! The statistics against scipy 1.17.1 (values computed there and pasted here).

use std::collections::BTreeMap;

use keel_monitor::stats::{chi_square, gamma_q, jensen_shannon, ks_2samp, psi, wasserstein, wasserstein_normed};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn ks_two_sample_matches_scipy() {
    let a = [0.3, 1.2, 2.5, 2.5, 3.1, 4.8, 5.0, 6.6, 7.2, 8.9, 9.1, 10.4];
    let b = [1.0, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9.9, 11.0, 12.1, 13.2, 14.3, 15.4];
    let (d, p) = ks_2samp(&a, &b);
    assert!(close(d, 0.357_142_857_142_857_15, 1e-12), "D {d}");
    // scipy: exact 0.3004, asymptotic 0.3438; Stephens' corrected asymptotic lies between.
    assert!((0.28..0.36).contains(&p), "p {p}");
    let a: Vec<f64> = (0..600).map(|i| f64::from((i * 7919) % 1000) / 100.0).collect();
    let b: Vec<f64> = (0..500).map(|i| f64::from((i * 7907) % 1000) / 100.0 * 1.1 + 0.3).collect();
    let (d, p) = ks_2samp(&a, &b);
    assert!(close(d, 0.120_333_333_333_333_33, 1e-12), "D {d}");
    assert!(close(p, 0.000_674_619_157_992_724_7, 0.000_03), "p {p} against scipy's exact 0.000675");
    assert!(close(wasserstein_normed(&a, &b), 0.262_022_737_562_439_77, 1e-9));
    // Same sample: nothing to see.
    assert_eq!(ks_2samp(&a, &a), (0.0, 1.0));
}

#[test]
fn wasserstein_jensen_shannon_chi_square_match_scipy() {
    let a = [0.3, 1.2, 2.5, 2.5, 3.1, 4.8, 5.0, 6.6, 7.2, 8.9, 9.1, 10.4];
    let b = [1.0, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9.9, 11.0, 12.1, 13.2, 14.3, 15.4];
    assert!(close(wasserstein(&a, &b), 3.109_523_809_523_809, 1e-12));
    assert!(close(wasserstein_normed(&a, &b), 0.979_057_260_268_687_7, 1e-12));
    let r: BTreeMap<&str, u64> = [("a", 30), ("b", 20), ("c", 10)].into();
    let c: BTreeMap<&str, u64> = [("a", 10), ("b", 15), ("c", 25)].into();
    assert!(close(jensen_shannon(&r, &c), 0.277_938_785_308_750_16, 1e-12));
    let (chi, p) = chi_square(&r, &c);
    assert!(close(chi, 42.5, 1e-9) && close(p, 5.905_303_998_944_073e-10, 1e-15), "{chi} {p}");
    assert!(close(gamma_q(1.5, 3.65), 0.062_926_236_459_043_12, 1e-10));
    assert!(close(gamma_q(0.5, 0.25), 0.479_500_122_186_953_37, 1e-10));
    assert!(close(gamma_q(5.0, 20.0), 1.694_474_393_006_737e-05, 1e-12));
    // A category never seen in the reference is drift outright.
    let new: BTreeMap<&str, u64> = [("a", 10), ("z", 1)].into();
    assert_eq!(chi_square(&r, &new).1, 0.0);
    // PSI: zero for the same sample, large for a shifted one.
    assert!(psi(&a, &a, 10).abs() < 1e-12);
    assert!(psi(&a, &b, 10) > 0.2);
}
