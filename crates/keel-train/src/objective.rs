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
//! The sum over examples is the expensive part: two matrix products per evaluation, done by
//! the register-blocked kernels in `kernel.rs` tile by tile. Rows are cut into 16 contiguous
//! blocks whatever the number of threads; each block's partial sums are computed in a fixed
//! order and the partials are added in block order. The result is therefore bit-identical
//! whether one thread or several did the work, in whatever order the threads finished, and
//! whether the CPU ran the AVX or the baseline compilation of the kernel.

use std::sync::{Mutex, PoisonError};

use keel_core::Matrix;

use crate::TrainError;
use crate::kernel::{self, Isa, Packed, Sums};

/// Number of row blocks the data sum is cut into. Fixed, so results do not depend on threads.
const BLOCKS: usize = 16;
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
    isa: Isa,
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
        Ok(Self { x, y, n_classes, l2, threads, isa: Isa::detect() })
    }

    /// Uses `threads` worker threads (clamped to `1..=16`) instead of one per core. The result
    /// is bit-identical whatever the number.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.clamp(1, BLOCKS);
        self
    }

    /// Runs the kernel compiled for the x86-64 baseline even where a faster one is available.
    /// The result is bit-identical (this exists so tests can show that).
    pub fn portable(mut self) -> Self {
        self.isa = Isa::Portable;
        self
    }

    /// Runs the 256-bit AVX2 + FMA compilation where the CPU has both, even where AVX-512 is
    /// available (elsewhere: unchanged). The result is bit-identical (this exists so tests can
    /// show that).
    pub fn avx256(mut self) -> Self {
        #[cfg(target_arch = "x86_64")]
        if kernel::has_avx2_fma() {
            self.isa = Isa::Avx;
        }
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

        let packed = Packed::new(params, k, d);
        let block_len = n.div_ceil(BLOCKS);
        let mut partials: Vec<Sums> = (0..BLOCKS).map(|_| Sums::new(&packed)).collect();
        let run_block = |b: usize, part: &mut Sums| {
            let lo = (b * block_len).min(n);
            let hi = ((b + 1) * block_len).min(n);
            kernel::accumulate(self.isa, self.x, self.y, lo..hi, &packed, part);
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

        // Reduce in block order, dropping the padding: deterministic whatever the threads did.
        grad.fill(0.0);
        let mut loss_sum = 0.0;
        let (gw, gb) = grad.split_at_mut(k * d);
        for part in &partials {
            loss_sum += part.loss;
            for (g_row, p_row) in gw.chunks_exact_mut(d).zip(part.gw.chunks_exact(packed.dp)) {
                for (g, p) in g_row.iter_mut().zip(p_row) {
                    *g += p;
                }
            }
            for (g, p) in gb.iter_mut().zip(&part.gb) {
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
