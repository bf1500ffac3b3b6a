//! Principal components of embeddings: covariance, then orthogonal (subspace) iteration with a
//! Rayleigh–Ritz rotation by Jacobi sweeps on the small projected matrix. Deterministic: a
//! seeded start, a fixed number of iterations, and each component's sign fixed so its largest
//! coordinate is positive.

use keel_core::{Matrix, SplitMix64};

pub(crate) struct Pca {
    pub mean: Vec<f32>,
    /// `k × dim`, row `j` is component `j` (unit length), by decreasing variance.
    pub basis: Vec<f32>,
    pub variance: Vec<f64>,
    pub total_variance: f64,
}

const ITERATIONS: usize = 150;

pub(crate) fn fit(x: &Matrix, rows: &[usize], k: usize, seed: u64) -> Pca {
    let d = x.cols();
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0f64; d];
    for &i in rows {
        for (m, v) in mean.iter_mut().zip(x.row(i)) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    // Covariance (population), upper triangle then mirrored.
    let mut cov = vec![0f64; d * d];
    let mut r = vec![0f64; d];
    for &i in rows {
        for ((c, v), m) in r.iter_mut().zip(x.row(i)).zip(&mean) {
            *c = f64::from(*v) - m;
        }
        for a in 0..d {
            let ra = r[a];
            let row = &mut cov[a * d..(a + 1) * d];
            for b in a..d {
                row[b] += ra * r[b];
            }
        }
    }
    for a in 0..d {
        for b in a..d {
            let v = cov[a * d + b] / n;
            cov[a * d + b] = v;
            cov[b * d + a] = v;
        }
    }
    let total_variance: f64 = (0..d).map(|a| cov[a * d + a]).sum();
    let k = k.min(d);
    // Q: k columns of length d, stored as k rows.
    let mut rng = SplitMix64::new(seed);
    let mut q: Vec<Vec<f64>> = (0..k).map(|_| (0..d).map(|_| rng.signed_unit()).collect()).collect();
    orthonormalise(&mut q);
    for _ in 0..ITERATIONS {
        q = cov_times(&cov, &q, d);
        orthonormalise(&mut q);
    }
    // Rayleigh–Ritz: diagonalise Qᵀ C Q and rotate Q by its eigenvectors.
    let cq = cov_times(&cov, &q, d);
    let mut small = vec![0f64; k * k];
    for a in 0..k {
        for b in 0..k {
            small[a * k + b] = dot(&q[a], &cq[b]);
        }
    }
    let (vals, vecs) = jacobi(small, k);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
    let mut basis = Vec::with_capacity(k * d);
    let mut variance = Vec::with_capacity(k);
    for &j in &order {
        let mut comp = vec![0f64; d];
        for a in 0..k {
            let w = vecs[a * k + j];
            for (c, v) in comp.iter_mut().zip(&q[a]) {
                *c += w * v;
            }
        }
        let norm = dot(&comp, &comp).sqrt().max(1e-300);
        let big = comp.iter().copied().fold(0f64, |m, v| if v.abs() > m.abs() { v } else { m });
        let sign = if big < 0.0 { -1.0 } else { 1.0 };
        basis.extend(comp.iter().map(|v| (sign * v / norm) as f32));
        variance.push(vals[j].max(0.0));
    }
    Pca { mean: mean.iter().map(|&m| m as f32).collect(), basis, variance, total_variance }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `C·Q` for the `k` vectors of `q` at once: each row of `C` is read once and its entries
/// scale a contiguous row of `Qᵀ`, which the compiler vectorises over the `k` columns (one
/// matrix-vector product per vector, with a serial sum per entry, took most of a profile's
/// build time).
fn cov_times(cov: &[f64], q: &[Vec<f64>], d: usize) -> Vec<Vec<f64>> {
    let k = q.len();
    if k == 0 {
        return Vec::new();
    }
    let mut qt = vec![0f64; d * k];
    for (j, v) in q.iter().enumerate() {
        for (b, x) in v.iter().enumerate() {
            qt[b * k + j] = *x;
        }
    }
    let mut out = vec![vec![0f64; d]; k];
    let mut acc = vec![0f64; k];
    for a in 0..d {
        acc.fill(0.0);
        for (c, qrow) in cov[a * d..(a + 1) * d].iter().zip(qt.chunks_exact(k)) {
            for (s, x) in acc.iter_mut().zip(qrow) {
                *s += c * x;
            }
        }
        for (o, s) in out.iter_mut().zip(&acc) {
            o[a] = *s;
        }
    }
    out
}

/// Modified Gram–Schmidt; a vector that collapses is replaced by a unit basis vector.
fn orthonormalise(q: &mut [Vec<f64>]) {
    for j in 0..q.len() {
        for i in 0..j {
            let (done, rest) = q.split_at_mut(j);
            let p = dot(&done[i], &rest[0]);
            for (x, y) in rest[0].iter_mut().zip(&done[i]) {
                *x -= p * y;
            }
        }
        let norm = dot(&q[j], &q[j]).sqrt();
        if norm > 1e-12 {
            q[j].iter_mut().for_each(|x| *x /= norm);
        } else {
            let d = q[j].len();
            q[j] = (0..d).map(|a| if a == j % d { 1.0 } else { 0.0 }).collect();
        }
    }
}

/// Eigen-decomposition of a symmetric `k × k` matrix by cyclic Jacobi rotations. Returns the
/// eigenvalues and the eigenvectors as columns of a row-major `k × k` matrix.
fn jacobi(mut a: Vec<f64>, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; k * k];
    (0..k).for_each(|i| v[i * k + i] = 1.0);
    for _ in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|p| (0..k).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| a[p * k + q].powi(2))
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..k).map(|i| a[i * k + i]).collect(), v)
}
