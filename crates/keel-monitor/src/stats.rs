//! Two-sample statistics with Evidently's defaults: Kolmogorov–Smirnov, normed Wasserstein,
//! Jensen–Shannon, chi-square, two-proportion z, and PSI.
//!
//! Each function takes the reference sample first and the current sample second, as
//! Evidently's stat tests do, and returns the statistic (and a p-value where the test has one).

use std::collections::BTreeMap;

/// Kolmogorov–Smirnov two-sample test: the largest gap between the two empirical CDFs, with
/// the asymptotic p-value (Kolmogorov distribution with Stephens' small-sample correction,
/// `λ = (√nₑ + 0.12 + 0.11/√nₑ)·D`, `nₑ = n·m/(n+m)`). scipy's `ks_2samp` computes an exact
/// p-value when `n·m < 10,000`; above that both agree to a few parts in a thousand.
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> (f64, f64) {
    if reference.is_empty() || current.is_empty() {
        return (0.0, 1.0);
    }
    let a = sorted(reference);
    let b = sorted(current);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let en = (n * m / (n + m)).sqrt();
    (d, kolmogorov_q((en + 0.12 + 0.11 / en) * d))
}

/// `P(K > λ)` for the Kolmogorov distribution.
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=100 {
        let jf = f64::from(j);
        let term = sign * (-2.0 * jf * jf * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 * sum.abs().max(1e-300) {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Wasserstein-1 distance between the two empirical distributions divided by the reference's
/// standard deviation (floored at 0.001), as Evidently's `wasserstein` stat test does.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> f64 {
    if reference.is_empty() || current.is_empty() {
        return 0.0;
    }
    wasserstein(reference, current) / std_dev(reference).max(0.001)
}

/// Wasserstein-1 distance: `∫ |F_ref(x) − F_cur(x)| dx` between the empirical CDFs
/// (scipy's `wasserstein_distance`).
pub fn wasserstein(reference: &[f64], current: &[f64]) -> f64 {
    let a = sorted(reference);
    let b = sorted(current);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<f64> = a.iter().chain(&b).copied().collect();
    all.sort_by(f64::total_cmp);
    let (mut i, mut j, mut w) = (0usize, 0usize, 0f64);
    for k in 0..all.len().saturating_sub(1) {
        let x = all[k];
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        w += (i as f64 / n - j as f64 / m).abs() * (all[k + 1] - x);
    }
    w
}

/// Population standard deviation (numpy's default, `ddof = 0`).
pub fn std_dev(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mean = mean(v);
    (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64).sqrt()
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// The `q`-quantile with linear interpolation (numpy's default).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    keel_eval::quantile(&sorted(v), q)
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Counts of each category.
pub fn counts<K: Ord + Clone>(values: &[K]) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v.clone()).or_insert(0) += 1;
    }
    m
}

/// Jensen–Shannon distance (the square root of the divergence, natural log; scipy's
/// `jensenshannon`) between the category frequencies of the two samples. 0 is identical, the
/// maximum is `√ln 2 ≈ 0.833`.
pub fn jensen_shannon<K: Ord + Clone>(reference: &BTreeMap<K, u64>, current: &BTreeMap<K, u64>) -> f64 {
    let (p, q) = aligned(reference, current);
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter().zip(m).filter(|(x, _)| **x > 0.0).map(|(x, y)| x * (x / y).ln()).sum::<f64>()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// Shares of each category in both samples over the union of categories, in key order.
fn aligned<K: Ord + Clone>(reference: &BTreeMap<K, u64>, current: &BTreeMap<K, u64>) -> (Vec<f64>, Vec<f64>) {
    let keys: std::collections::BTreeSet<&K> = reference.keys().chain(current.keys()).collect();
    let nr = reference.values().sum::<u64>().max(1) as f64;
    let nc = current.values().sum::<u64>().max(1) as f64;
    keys.iter()
        .map(|k| {
            (reference.get(*k).copied().unwrap_or(0) as f64 / nr, current.get(*k).copied().unwrap_or(0) as f64 / nc)
        })
        .unzip()
}

/// Chi-square goodness of fit of the current counts against the reference frequencies scaled
/// to the current size (Evidently's `chisquare` stat test). Returns `(χ², p)`; a category seen
/// only in the current sample gives `p = 0`.
pub fn chi_square<K: Ord + Clone>(reference: &BTreeMap<K, u64>, current: &BTreeMap<K, u64>) -> (f64, f64) {
    let (p, q) = aligned(reference, current);
    let nc = current.values().sum::<u64>() as f64;
    let mut chi = 0.0;
    for (e, o) in p.iter().zip(&q) {
        let (e, o) = (e * nc, o * nc);
        if e == 0.0 {
            if o > 0.0 {
                return (f64::INFINITY, 0.0);
            }
            continue;
        }
        chi += (o - e) * (o - e) / e;
    }
    let dof = p.len().saturating_sub(1);
    if dof == 0 {
        return (0.0, 1.0);
    }
    (chi, gamma_q(dof as f64 / 2.0, chi / 2.0))
}

/// Two-proportion z-test (pooled) for a category with two values (Evidently's `z` stat test).
/// Returns `(z, two-sided p)`.
pub fn proportion_z<K: Ord + Clone>(reference: &BTreeMap<K, u64>, current: &BTreeMap<K, u64>) -> (f64, f64) {
    let key = reference.keys().chain(current.keys()).next();
    let Some(key) = key else { return (0.0, 1.0) };
    let nr = reference.values().sum::<u64>() as f64;
    let nc = current.values().sum::<u64>() as f64;
    if nr == 0.0 || nc == 0.0 {
        return (0.0, 1.0);
    }
    let xr = reference.get(key).copied().unwrap_or(0) as f64;
    let xc = current.get(key).copied().unwrap_or(0) as f64;
    let p = (xr + xc) / (nr + nc);
    let se = (p * (1.0 - p) * (1.0 / nr + 1.0 / nc)).sqrt();
    if se == 0.0 {
        return (0.0, 1.0);
    }
    let z = (xr / nr - xc / nc) / se;
    (z, erfc(z.abs() / std::f64::consts::SQRT_2))
}

/// Population stability index over `bins` equal-width bins of the reference range (values
/// outside fall in the end bins), empty bins floored at 0.0001 as Evidently does.
/// `Σ (r − c)·ln(r / c)`; Evidently flags drift at 0.1.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> f64 {
    if reference.is_empty() || current.is_empty() || bins == 0 {
        return 0.0;
    }
    let lo = reference.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = reference.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = (hi - lo) / bins as f64;
    let hist = |v: &[f64]| -> Vec<f64> {
        let mut h = vec![0f64; bins];
        for &x in v {
            let b = if width > 0.0 { (((x - lo) / width).floor().max(0.0) as usize).min(bins - 1) } else { 0 };
            h[b] += 1.0;
        }
        let n = v.len() as f64;
        h.iter().map(|c| (c / n).max(0.0001)).collect()
    };
    let (r, c) = (hist(reference), hist(current));
    r.iter().zip(&c).map(|(r, c)| (r - c) * (r / c).ln()).sum()
}

/// Regularised upper incomplete gamma `Q(a, x)` (series below `a + 1`, continued fraction
/// above; Numerical Recipes §6.2).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if !x.is_finite() {
        return 0.0;
    }
    let gln = ln_gamma(a);
    if x < a + 1.0 {
        let (mut ap, mut sum) = (a, 1.0 / a);
        let mut del = sum;
        for _ in 0..1000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * (-x + a * x.ln() - gln).exp()).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        ((-x + a * x.ln() - gln).exp() * h).clamp(0.0, 1.0)
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Complementary error function, |error| < 1.2e-7 (Numerical Recipes `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}
