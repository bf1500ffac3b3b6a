//! liblinear's dual coordinate descent for one L2-regularised squared-hinge problem.

use super::features::{Csr, DenseBlock};
use crate::rng::SplitMix64;

/// Rows a problem reads: TF-IDF columns as CSR and, for the combined model, dense embedding
/// columns after them (`dense.dim` columns starting at `offset`).
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub(super) sparse: &'a Csr,
    pub(super) dense: Option<&'a DenseBlock>,
}

impl Rows<'_> {
    pub(super) fn rows(&self) -> usize {
        self.sparse.rows()
    }
}

/// One binary problem's solver state: the dual variables and `w = Σ α_i y_i x_i` (bias last).
/// Kept between calls of [`Dcd::solve`] so a grid of increasing `C` starts each fit from the
/// previous solution (still feasible: the only constraint is `α ≥ 0`).
pub(super) struct Dcd<'a> {
    pub(super) x: Rows<'a>,
    /// First dense column (the number of sparse columns).
    pub(super) offset: usize,
    pub(super) y: &'a [bool],
    /// `‖x_i‖² + 1` (the bias feature).
    pub(super) sq: Vec<f64>,
    pub(super) alpha: Vec<f64>,
    pub(super) w: Vec<f32>,
    /// Visiting order; `index[..active]` are the rows not set aside.
    pub(super) index: Vec<usize>,
    pub(super) active: usize,
    /// Largest projected gradient of the last pass (∞ when none counts).
    pub(super) pg_max_old: f64,
}

/// `Σ w_j x_j` over a contiguous block, in f32 with sixteen running sums (a fixed order: the
/// same bits on every CPU, in lanes the compiler keeps in vector registers; f32 because the
/// block is embedding components of similar size, where single precision loses nothing that
/// moves a decision, at twice the lanes of f64).
fn dense_dot(w: &[f32], x: &[f32]) -> f64 {
    let mut acc = [0.0f32; 16];
    let (wc, xc) = (w.chunks_exact(16), x.chunks_exact(16));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (w16, x16) in wc.zip(xc) {
        for l in 0..16 {
            acc[l] += w16[l] * x16[l];
        }
    }
    for (l, (&a, &b)) in wr.iter().zip(xr).enumerate() {
        acc[l] += a * b;
    }
    let mut sum = 0.0f64;
    for pair in acc.chunks_exact(2) {
        sum += f64::from(pair[0] + pair[1]);
    }
    sum
}

impl<'a> Dcd<'a> {
    /// A problem over rows `x` with `offset` sparse columns (then the dense ones) and labels `y`
    /// (true: positive).
    pub(super) fn new(x: Rows<'a>, offset: usize, y: &'a [bool]) -> Self {
        let n = x.rows();
        let dim = offset + x.dense.map_or(0, |d| d.dim);
        let sq = (0..n).map(|i| {
            let s: f64 = x.sparse.row(i).1.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let d = x.dense.map_or(0.0, |d| d.row(i).iter().map(|&v| f64::from(v) * f64::from(v)).sum());
            s + d + 1.0
        });
        Self {
            x,
            offset,
            y,
            sq: sq.collect(),
            alpha: vec![0.0; n],
            w: vec![0.0; dim + 1],
            index: (0..n).collect(),
            active: n,
            pg_max_old: f64::INFINITY,
        }
    }

    pub(super) fn dot(&self, i: usize) -> f64 {
        self.decision(self.x, i)
    }

    /// Decision value for row `r` of other rows over the same columns.
    pub(super) fn decision(&self, x: Rows<'_>, r: usize) -> f64 {
        let (idx, val) = x.sparse.row(r);
        // Four running sums, not one: a single chain of dependent additions is what limits a
        // sparse dot product; the order is fixed, so the result is too.
        let mut acc = [0.0f64; 4];
        let (ic, vc) = (idx.chunks_exact(4), val.chunks_exact(4));
        let (ir, vr) = (ic.remainder(), vc.remainder());
        for (i4, v4) in ic.zip(vc) {
            for l in 0..4 {
                acc[l] += f64::from(self.w[i4[l] as usize]) * f64::from(v4[l]);
            }
        }
        for (l, (&j, &v)) in ir.iter().zip(vr).enumerate() {
            acc[l] += f64::from(self.w[j as usize]) * f64::from(v);
        }
        let bias = self.w.len() - 1;
        let dense = x.dense.map_or(0.0, |d| dense_dot(&self.w[self.offset..bias], d.row(r)));
        f64::from(self.w[bias]) + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + dense
    }

    /// `w += d · x_i` (the bias feature included).
    fn update(&mut self, i: usize, d: f64) {
        let (idx, val) = self.x.sparse.row(i);
        for (&jj, &v) in idx.iter().zip(val) {
            let wj = &mut self.w[jj as usize];
            *wj = (f64::from(*wj) + d * f64::from(v)) as f32;
        }
        let bias = self.w.len() - 1;
        if let Some(dense) = self.x.dense {
            let d = d as f32;
            for (wj, &v) in self.w[self.offset..bias].iter_mut().zip(dense.row(i)) {
                *wj += d * v;
            }
        }
        self.w[bias] = (f64::from(self.w[bias]) + d) as f32;
    }

    /// liblinear's `solve_l2r_l1l2_svc` for the squared hinge (no upper bound on `α`); returns
    /// the passes taken.
    pub(super) fn solve(&mut self, c: f64, eps: f64, max_iter: usize, rng: &mut SplitMix64) -> usize {
        let l = self.x.rows();
        let diag = 0.5 / c;
        let qd: Vec<f64> = self.sq.iter().map(|s| s + diag).collect();
        // A warm start keeps the previous fit's last pass: its largest projected gradient and
        // so the rows it would set aside. For a row at α = 0 the gradient does not depend on
        // `C`, so the test is as sound as within one fit, and the final full pass still checks
        // every row.
        let (mut index, mut active) = (std::mem::take(&mut self.index), self.active);
        // Without an upper bound on α only the lower bound shrinks, so only the old maximum is kept.
        let mut pg_max_old = self.pg_max_old;
        let mut iter = 0;
        while iter < max_iter {
            let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
            for s in 0..active {
                let j = s + rng.below(active - s);
                index.swap(s, j);
            }
            let mut s = 0;
            while s < active {
                let i = index[s];
                let yi = if self.y[i] { 1.0 } else { -1.0 };
                let g = yi * self.dot(i) - 1.0 + self.alpha[i] * diag;
                let mut pg = 0.0;
                if self.alpha[i] == 0.0 {
                    if g > pg_max_old {
                        active -= 1;
                        index.swap(s, active);
                        continue;
                    } else if g < 0.0 {
                        pg = g;
                    }
                } else {
                    pg = g;
                }
                pg_max = pg_max.max(pg);
                pg_min = pg_min.min(pg);
                if pg.abs() > 1e-12 {
                    let old = self.alpha[i];
                    let new = (old - g / qd[i]).max(0.0);
                    self.alpha[i] = new;
                    self.update(i, (new - old) * yi);
                }
                s += 1;
            }
            iter += 1;
            if pg_max - pg_min <= eps {
                if active == l {
                    pg_max_old = if pg_max <= 0.0 { f64::INFINITY } else { pg_max };
                    break;
                }
                active = l;
                pg_max_old = f64::INFINITY;
                continue;
            }
            pg_max_old = if pg_max <= 0.0 { f64::INFINITY } else { pg_max };
        }
        (self.index, self.active, self.pg_max_old) = (index, active, pg_max_old);
        iter
    }
}

// ---------------------------------------------------------------------------------------------
// Threads
