//! The training objective of multinomial logistic regression and its gradient.
//!
//! Parameters are one flat `f64` vector: the `k × d` weight matrix row-major (row `c` holds
//! class `c`'s weights), then the `k` biases.
//!
//! ```text
//! L(W, b) = (1/n) Σ_i [ logsumexp(W x_i + b) − (W x_i + b)_{y_i} ]  +  (l2/2) ‖W‖²_F
//! ∂L/∂W_c = (1/n) Σ_i (p_ic − [y_i = c]) x_i  +  l2 · W_c
//! ∂L/∂b_c = (1/n) Σ_i (p_ic − [y_i = c])
//! ```
//!
//! The sum over examples is the expensive part. Rows are cut into 16 contiguous blocks whatever
//! the number of threads; each block's partial sums are computed in a fixed order and the
//! partials are added in block order. The result is therefore bit-identical whether one thread
//! or several did the work, and in whatever order the threads finished.

use std::sync::{Mutex, PoisonError};

use keel_core::Matrix;

use crate::TrainError;

/// Number of row blocks the data sum is cut into. Fixed, so results do not depend on threads.
const BLOCKS: usize = 16;
/// Rows handled together by the kernel, so each weight is loaded once per `TILE` rows.
/// [`axpy_tile`] is written out for exactly eight.
const TILE: usize = 8;
/// Below this many multiply-adds per evaluation, threads cost more than they save.
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// The penalised mean cross-entropy of a softmax classifier on one data set.
#[derive(Debug)]
pub struct Objective<'a> {
    x: &'a Matrix,
    y: &'a [usize],
    n_classes: usize,
    l2: f64,
    threads: usize,
}

/// The value of the objective at one point, split into its two terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Value {
    /// Mean cross-entropy (log loss) over the examples.
    pub data_loss: f64,
    /// `data_loss + (l2/2)·‖W‖²`: what is minimised.
    pub total: f64,
}

impl<'a> Objective<'a> {
    /// Checks the inputs once; [`Objective::eval`] then assumes them valid.
    pub fn new(x: &'a Matrix, y: &'a [usize], n_classes: usize, l2: f64) -> Result<Self, TrainError> {
        if x.rows() != y.len() {
            return Err(TrainError::LengthMismatch { rows: x.rows(), labels: y.len() });
        }
        if x.rows() == 0 {
            return Err(TrainError::Empty);
        }
        if x.cols() == 0 {
            return Err(TrainError::NoFeatures);
        }
        if let Some(pos) = x.as_slice().iter().position(|v| !v.is_finite()) {
            return Err(TrainError::NonFiniteFeature { row: pos / x.cols(), col: pos % x.cols() });
        }
        if let Some((row, &label)) = y.iter().enumerate().find(|(_, l)| **l >= n_classes) {
            return Err(TrainError::LabelOutOfRange { row, label, n_classes });
        }
        if !(l2.is_finite() && l2 >= 0.0) {
            return Err(TrainError::InvalidConfig(format!("l2 must be finite and >= 0, got {l2}")));
        }
        let work = x.rows() * x.cols() * n_classes;
        let threads = if work < PARALLEL_MIN_WORK {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(BLOCKS)
        };
        Ok(Self { x, y, n_classes, l2, threads })
    }

    /// Uses `threads` worker threads (clamped to `1..=16`) instead of one per core. The result
    /// is bit-identical whatever the number.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.clamp(1, BLOCKS);
        self
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    pub fn dim(&self) -> usize {
        self.x.cols()
    }

    /// Length of the parameter vector: `k·d + k`.
    pub fn n_params(&self) -> usize {
        self.n_classes * self.x.cols() + self.n_classes
    }

    /// Evaluates the objective at `params` and writes its gradient into `grad`.
    ///
    /// Panics if either slice is not [`Objective::n_params`] long.
    pub fn eval(&self, params: &[f64], grad: &mut [f64]) -> Value {
        let (k, d, n) = (self.n_classes, self.x.cols(), self.x.rows());
        assert_eq!(params.len(), self.n_params(), "parameter vector has the wrong length");
        assert_eq!(grad.len(), self.n_params(), "gradient vector has the wrong length");

        let block_len = n.div_ceil(BLOCKS);
        let mut partials: Vec<Partial> = (0..BLOCKS).map(|_| Partial::new(k, d)).collect();
        let run_block = |b: usize, part: &mut Partial| {
            let lo = (b * block_len).min(n);
            let hi = ((b + 1) * block_len).min(n);
            self.accumulate(params, lo..hi, part);
        };
        if self.threads <= 1 {
            for (b, part) in partials.iter_mut().enumerate() {
                run_block(b, part);
            }
        } else {
            // Threads take the next unclaimed block, so a thread slowed by other load on the
            // machine does not hold the rest up; each block writes only its own partial.
            let queue = Mutex::new(partials.iter_mut().enumerate());
            let worker = || {
                loop {
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                    match next {
                        Some((b, part)) => run_block(b, part),
                        None => break,
                    }
                }
            };
            std::thread::scope(|s| {
                for _ in 1..self.threads {
                    s.spawn(worker);
                }
                worker();
            });
        }

        // Reduce in block order: deterministic whatever the threads did.
        grad.fill(0.0);
        let mut loss_sum = 0.0;
        for part in &partials {
            loss_sum += part.loss;
            for (g, p) in grad.iter_mut().zip(&part.grad) {
                *g += p;
            }
        }
        let inv_n = 1.0 / n as f64;
        let data_loss = loss_sum * inv_n;
        let (w, _) = params.split_at(k * d);
        let mut penalty = 0.0;
        for (g, &wj) in grad[..k * d].iter_mut().zip(w) {
            *g = *g * inv_n + self.l2 * wj;
            penalty += wj * wj;
        }
        for g in &mut grad[k * d..] {
            *g *= inv_n;
        }
        Value { data_loss, total: data_loss + 0.5 * self.l2 * penalty }
    }

    /// Adds the unscaled loss and gradient sums of rows `rows` into `part`.
    fn accumulate(&self, params: &[f64], rows: std::ops::Range<usize>, part: &mut Partial) {
        let (k, d) = (self.n_classes, self.x.cols());
        let (w, bias) = params.split_at(k * d);
        let (gw, gb) = part.grad.split_at_mut(k * d);
        // The tile's rows twice: row-major for the gradient, interleaved (`xt[j·TILE + r]`) for
        // the logits. A short last tile is padded with zero rows, whose residuals are set to
        // zero, so they add exact zeros.
        let mut xs = vec![0.0f64; TILE * d];
        let mut xt = vec![0.0f64; TILE * d];
        let mut z = vec![0.0f64; TILE * k];
        let mut start = rows.start;
        while start < rows.end {
            let t = TILE.min(rows.end - start);
            if t < TILE {
                xs.fill(0.0);
                xt.fill(0.0);
            }
            for (r, dst) in xs.chunks_exact_mut(d).take(t).enumerate() {
                for (a, &b) in dst.iter_mut().zip(self.x.row(start + r)) {
                    *a = f64::from(b);
                }
            }
            for (r, row) in xs.chunks_exact(d).enumerate() {
                for (dst, &v) in xt.chunks_exact_mut(TILE).zip(row) {
                    dst[r] = v;
                }
            }
            // Logits: z[r, c] = w_c · x_r + b_c.
            for c in 0..k {
                for (r, v) in dot_tile(&w[c * d..(c + 1) * d], &xt).into_iter().enumerate() {
                    z[r * k + c] = v + bias[c];
                }
            }
            // Loss and residuals p − onehot(y), in place of the logits.
            for r in 0..TILE {
                let zr = &mut z[r * k..(r + 1) * k];
                if r >= t {
                    zr.fill(0.0);
                    continue;
                }
                let yr = self.y[start + r];
                let max = zr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = zr.iter().map(|v| (v - max).exp()).sum();
                let lse = max + sum.ln();
                part.loss += lse - zr[yr];
                for v in zr.iter_mut() {
                    *v = (*v - lse).exp();
                }
                zr[yr] -= 1.0;
            }
            // Gradient: g_c += Σ_r residual[r, c] · x_r.
            for c in 0..k {
                let rs: [f64; TILE] = std::array::from_fn(|r| z[r * k + c]);
                axpy_tile(&mut gw[c * d..(c + 1) * d], rs, &xs);
                gb[c] += rs.iter().sum::<f64>();
            }
            start += t;
        }
    }
}

/// One block's unscaled sums.
struct Partial {
    loss: f64,
    grad: Vec<f64>,
}

impl Partial {
    fn new(k: usize, d: usize) -> Self {
        Self { loss: 0.0, grad: vec![0.0; k * d + k] }
    }
}

/// Dot product with eight independent accumulators so the compiler can vectorise it.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// `w · x_r` for the `TILE` rows of an interleaved tile (`xt[j·TILE + r]`): each weight is
/// loaded once and multiplied into a vector of rows, with no horizontal sums.
#[inline]
fn dot_tile(w: &[f64], xt: &[f64]) -> [f64; TILE] {
    let (mut even, mut odd) = ([0.0f64; TILE], [0.0f64; TILE]);
    let pairs = w.chunks_exact(2);
    let last = pairs.remainder().first().copied();
    for (wp, xp) in pairs.zip(xt.chunks_exact(2 * TILE)) {
        let (x0, x1) = xp.split_at(TILE);
        for r in 0..TILE {
            even[r] += wp[0] * x0[r];
        }
        for r in 0..TILE {
            odd[r] += wp[1] * x1[r];
        }
    }
    if let Some(wl) = last {
        let xl = &xt[xt.len() - TILE..];
        for r in 0..TILE {
            even[r] += wl * xl[r];
        }
    }
    std::array::from_fn(|r| even[r] + odd[r])
}

/// `g += Σ_r rs[r] · x_r` over the eight consecutive rows of `xs` (each `g.len()` long),
/// loading and storing each gradient element once for eight rows.
#[inline]
fn axpy_tile(g: &mut [f64], rs: [f64; TILE], xs: &[f64]) {
    let d = g.len();
    let (x0, rest) = xs.split_at(d);
    let (x1, rest) = rest.split_at(d);
    let (x2, rest) = rest.split_at(d);
    let (x3, rest) = rest.split_at(d);
    let (x4, rest) = rest.split_at(d);
    let (x5, rest) = rest.split_at(d);
    let (x6, x7) = rest.split_at(d);
    let x7 = &x7[..d];
    for j in 0..d {
        let a = (rs[0] * x0[j] + rs[1] * x1[j]) + (rs[2] * x2[j] + rs[3] * x3[j]);
        let b = (rs[4] * x4[j] + rs[5] * x5[j]) + (rs[6] * x6[j] + rs[7] * x7[j]);
        g[j] += a + b;
    }
}
