//! The inner loop of [`crate::Objective`]: loss and gradient sums over a range of rows, as two
//! small register-blocked matrix products per tile of rows (logits `Z = X·Wᵀ`, then gradient
//! `G += Rᵀ·X` with the residuals `R = P − Y`), the tile's rows converted to `f64` once and
//! used by both while they are in cache.
//!
//! # Why the results do not depend on the machine
//!
//! Every output element is summed by one accumulator lane in an order fixed by this source:
//! the vector code keeps independent per-lane sums (`[f64; 4]`, `[f64; 8]` arrays) and combines
//! them in a written-out order. Each product is added with a fused multiply-add
//! ([`f64::mul_add`]: one rounding, which IEEE 754 defines exactly), so the compilations agree
//! although only some have the instruction. The same source is compiled three times — for the
//! x86-64 baseline (SSE2; `mul_add` is then the C library's correctly rounded `fma`, slow but
//! exact), with AVX2 + FMA, and with AVX-512 (one `[f64; 8]` tile column per register), picked
//! at run time — and all compute the same IEEE operations in the same order, so they give
//! bit-identical sums; a test checks it. Fusing halves the arithmetic instructions of the two
//! products against a separate multiply and add.

use keel_core::Matrix;

/// Rows per tile: the tile's `f64` copy (`TILE_ROWS × d`, 24 KiB at d = 384) stays in L1 for
/// the logits and the gradient.
pub(crate) const TILE_ROWS: usize = 8;
const _: () = assert!(TILE_ROWS == 8, "the kernels' register tiles are written for eight rows");
/// Classes are padded to a multiple of this (the logits kernel does four at a time).
pub(crate) const CLASS_STEP: usize = 4;
/// Features are padded to a multiple of this (the gradient kernel does eight at a time).
pub(crate) const FEATURE_STEP: usize = 8;

/// The weights in the kernels' padded layout: `kp × dp`, row `c` holding class `c`, zeros in
/// the padding.
pub(crate) struct Packed {
    pub k: usize,
    pub kp: usize,
    pub d: usize,
    pub dp: usize,
    pub w: Vec<f64>,
    pub bias: Vec<f64>,
}

impl Packed {
    /// Packs the flat parameter vector of [`crate::Objective`] (`k × d` weights, then `k` biases).
    pub fn new(params: &[f64], k: usize, d: usize) -> Self {
        let (kp, dp) = (k.next_multiple_of(CLASS_STEP), d.next_multiple_of(FEATURE_STEP));
        let mut w = vec![0.0; kp * dp];
        for (dst, src) in w.chunks_exact_mut(dp).zip(params[..k * d].chunks_exact(d)) {
            dst[..d].copy_from_slice(src);
        }
        let mut bias = vec![0.0; kp];
        bias[..k].copy_from_slice(&params[k * d..k * d + k]);
        Self { k, kp, d, dp, w, bias }
    }
}

/// One block's unscaled sums, in the padded layout.
pub(crate) struct Sums {
    pub loss: f64,
    /// `kp × dp`.
    pub gw: Vec<f64>,
    /// `kp`.
    pub gb: Vec<f64>,
}

impl Sums {
    pub fn new(p: &Packed) -> Self {
        Self { loss: 0.0, gw: vec![0.0; p.kp * p.dp], gb: vec![0.0; p.kp] }
    }
}

/// Which compilation of the kernel to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// x86-64 baseline / any other architecture.
    Portable,
    /// 256-bit vectors with FMA (AVX2 + FMA, checked at run time).
    #[cfg(target_arch = "x86_64")]
    Avx,
    /// 512-bit vectors (checked at run time).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The fastest compilation this CPU can run.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512_fma() {
                return Isa::Avx512;
            }
            if has_avx2_fma() {
                return Isa::Avx;
            }
        }
        Isa::Portable
    }
}

/// Whether this CPU can run the AVX2 + FMA compilation.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this CPU can run the AVX-512 compilation.
#[cfg(target_arch = "x86_64")]
fn has_avx512_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
}

/// Adds the loss and gradient sums of `rows` of `(x, y)` at the packed weights into `out`.
pub(crate) fn accumulate(isa: Isa, x: &Matrix, y: &[usize], rows: std::ops::Range<usize>, p: &Packed, out: &mut Sums) {
    match isa {
        Isa::Portable => accumulate_body(x, y, rows, p, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx => avx::accumulate(x, y, rows, p, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx::accumulate_wide(x, y, rows, p, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    fn accumulate_avx(x: &Matrix, y: &[usize], rows: std::ops::Range<usize>, p: &Packed, out: &mut Sums) {
        accumulate_body(x, y, rows, p, out);
    }

    pub(super) fn accumulate(x: &Matrix, y: &[usize], rows: std::ops::Range<usize>, p: &Packed, out: &mut Sums) {
        assert!(has_avx2_fma(), "Isa::Avx chosen on a CPU without AVX2 + FMA");
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only requirement of a
        // `#[target_feature(enable = "avx2,fma")]` function; the body is safe Rust.
        unsafe { accumulate_avx(x, y, rows, p, out) }
    }

    #[target_feature(enable = "avx512f,fma")]
    fn accumulate_avx512(x: &Matrix, y: &[usize], rows: std::ops::Range<usize>, p: &Packed, out: &mut Sums) {
        accumulate_body(x, y, rows, p, out);
    }

    pub(super) fn accumulate_wide(x: &Matrix, y: &[usize], rows: std::ops::Range<usize>, p: &Packed, out: &mut Sums) {
        assert!(has_avx512_fma(), "Isa::Avx512 chosen on a CPU without AVX-512 F + FMA");
        // SAFETY: the CPU supports AVX-512 F and FMA (checked just above), the only requirement
        // of a `#[target_feature(enable = "avx512f,fma")]` function; the body is safe Rust.
        unsafe { accumulate_avx512(x, y, rows, p, out) }
    }
}

#[inline(always)]
fn accumulate_body(x: &Matrix, y: &[usize], rows: std::ops::Range<usize>, p: &Packed, out: &mut Sums) {
    let (k, kp, d, dp) = (p.k, p.kp, p.d, p.dp);
    // The tile's rows as f64, zero-padded to `dp` columns and to `TILE_ROWS` rows; a padded
    // row's residuals are set to zero, so it adds exact zeros.
    let mut xs = vec![0.0f64; TILE_ROWS * dp];
    let mut xt = vec![0.0f64; dp * TILE_ROWS];
    let mut z = vec![0.0f64; TILE_ROWS * kp];
    let mut start = rows.start;
    while start < rows.end {
        let t = TILE_ROWS.min(rows.end - start);
        if t < TILE_ROWS {
            xs.fill(0.0);
        }
        for (r, dst) in xs.chunks_exact_mut(dp).take(t).enumerate() {
            for (a, &b) in dst.iter_mut().zip(x.row(start + r)) {
                *a = f64::from(b);
            }
        }
        transpose(&xs, &mut xt, dp);
        logits(&xt, &p.w, &p.bias, &mut z, kp, dp);
        // Loss and residuals p − onehot(y) in place of the logits; zero in the padding.
        for (r, zr) in z.chunks_exact_mut(kp).enumerate() {
            if r >= t {
                zr.fill(0.0);
                continue;
            }
            let (zk, pad) = zr.split_at_mut(k);
            pad.fill(0.0);
            let yr = y[start + r];
            let max = zk.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let zy = zk[yr];
            let mut sum = 0.0;
            for v in zk.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            out.loss += max + sum.ln() - zy;
            let inv = 1.0 / sum;
            for v in zk.iter_mut() {
                *v *= inv;
            }
            zk[yr] -= 1.0;
        }
        gradient(&xs, &z, &mut out.gw, kp, dp);
        for zr in z.chunks_exact(kp) {
            for (g, &v) in out.gb.iter_mut().zip(zr) {
                *g += v;
            }
        }
        start += t;
    }
    let _ = d;
}

/// `z[r, c] = w_c · x_r + b_c` for the tile, from its transposed copy `xt` (`dp × TILE_ROWS`):
/// all eight rows by four classes at a time. Each logit is summed in one lane: eight features
/// at a time in order, each group's sum then added to the running total.
#[inline(always)]
fn logits(xt: &[f64], w: &[f64], bias: &[f64], z: &mut [f64], kp: usize, dp: usize) {
    let xt = &xt.as_chunks::<TILE_ROWS>().0[..dp];
    for cq in 0..kp / 4 {
        let ws = &w[cq * 4 * dp..(cq + 1) * 4 * dp];
        let (w0, rest) = ws.split_at(dp);
        let (w1, rest) = rest.split_at(dp);
        let (w2, w3) = rest.split_at(dp);
        let ws = [w0.as_chunks::<8>().0, w1.as_chunks::<8>().0, w2.as_chunks::<8>().0, w3.as_chunks::<8>().0];
        let mut total = [[0.0f64; TILE_ROWS]; 4];
        let groups = xt.chunks_exact(8).len();
        // Two feature groups at a time, each with its own accumulators (eight independent
        // chains of fused multiply-adds: enough to keep both FMA units busy), then added to the
        // total in group order; every lane does the same operations in the same order as one
        // group at a time.
        let mut g = 0;
        while g + 2 <= groups {
            let (xa, xb) = (&xt[g * 8..g * 8 + 8], &xt[(g + 1) * 8..(g + 1) * 8 + 8]);
            let wa = [ws[0][g], ws[1][g], ws[2][g], ws[3][g]];
            let wb = [ws[0][g + 1], ws[1][g + 1], ws[2][g + 1], ws[3][g + 1]];
            let mut acc_a = [[0.0f64; TILE_ROWS]; 4];
            let mut acc_b = [[0.0f64; TILE_ROWS]; 4];
            for j in 0..8 {
                for c in 0..4 {
                    for r in 0..TILE_ROWS {
                        acc_a[c][r] = wa[c][j].mul_add(xa[j][r], acc_a[c][r]);
                        acc_b[c][r] = wb[c][j].mul_add(xb[j][r], acc_b[c][r]);
                    }
                }
            }
            for c in 0..4 {
                for r in 0..TILE_ROWS {
                    total[c][r] += acc_a[c][r];
                    total[c][r] += acc_b[c][r];
                }
            }
            g += 2;
        }
        if g < groups {
            let xg = &xt[g * 8..g * 8 + 8];
            let wg = [ws[0][g], ws[1][g], ws[2][g], ws[3][g]];
            let mut acc = [[0.0f64; TILE_ROWS]; 4];
            for (j, xv) in xg.iter().enumerate() {
                for c in 0..4 {
                    for r in 0..TILE_ROWS {
                        acc[c][r] = wg[c][j].mul_add(xv[r], acc[c][r]);
                    }
                }
            }
            for c in 0..4 {
                for r in 0..TILE_ROWS {
                    total[c][r] += acc[c][r];
                }
            }
        }
        for c in 0..4 {
            for r in 0..TILE_ROWS {
                z[r * kp + cq * 4 + c] = total[c][r] + bias[cq * 4 + c];
            }
        }
    }
}

/// `xt[j][r] = xs[r][j]` for the tile, eight features of the eight rows at a time.
#[inline(always)]
fn transpose(xs: &[f64], xt: &mut [f64], dp: usize) {
    let rows: [&[[f64; 8]]; TILE_ROWS] = std::array::from_fn(|r| xs[r * dp..(r + 1) * dp].as_chunks::<8>().0);
    for (g, dst) in xt.as_chunks_mut::<{ 8 * TILE_ROWS }>().0.iter_mut().enumerate() {
        let block: [[f64; 8]; TILE_ROWS] = std::array::from_fn(|r| rows[r][g]);
        for j in 0..8 {
            for r in 0..TILE_ROWS {
                dst[j * TILE_ROWS + r] = block[r][j];
            }
        }
    }
}

/// `g[c, j] += Σ_r res[r, c] · x[r, j]` over the tile's rows in order: four classes by eight
/// features at a time, each sum in its own lane.
#[inline(always)]
fn gradient(xs: &[f64], res: &[f64], g: &mut [f64], kp: usize, dp: usize) {
    let rows: [&[[f64; 8]]; TILE_ROWS] = std::array::from_fn(|r| xs[r * dp..(r + 1) * dp].as_chunks::<8>().0);
    let res: [&[[f64; 4]]; TILE_ROWS] = std::array::from_fn(|r| res[r * kp..(r + 1) * kp].as_chunks::<4>().0);
    for cq in 0..kp / 4 {
        let (g0, rest) = g[cq * 4 * dp..(cq + 1) * 4 * dp].split_at_mut(dp);
        let (g1, rest) = rest.split_at_mut(dp);
        let (g2, g3) = rest.split_at_mut(dp);
        let gs = [
            g0.as_chunks_mut::<8>().0,
            g1.as_chunks_mut::<8>().0,
            g2.as_chunks_mut::<8>().0,
            g3.as_chunks_mut::<8>().0,
        ];
        // Two feature groups at a time (eight independent chains of fused multiply-adds, as in
        // `logits`); each lane's sum is the same sequence of operations as one group at a time.
        let groups = dp / 8;
        let mut j = 0;
        while j + 2 <= groups {
            let mut acc_a = [[0.0f64; 8]; 4];
            let mut acc_b = [[0.0f64; 8]; 4];
            for r in 0..TILE_ROWS {
                let (xa, xb) = (rows[r][j], rows[r][j + 1]);
                let rv = res[r][cq];
                for c in 0..4 {
                    for l in 0..8 {
                        acc_a[c][l] = rv[c].mul_add(xa[l], acc_a[c][l]);
                        acc_b[c][l] = rv[c].mul_add(xb[l], acc_b[c][l]);
                    }
                }
            }
            for c in 0..4 {
                for l in 0..8 {
                    gs[c][j][l] += acc_a[c][l];
                    gs[c][j + 1][l] += acc_b[c][l];
                }
            }
            j += 2;
        }
        if j < groups {
            let mut acc = [[0.0f64; 8]; 4];
            for r in 0..TILE_ROWS {
                let xv = rows[r][j];
                let rv = res[r][cq];
                for c in 0..4 {
                    for l in 0..8 {
                        acc[c][l] = rv[c].mul_add(xv[l], acc[c][l]);
                    }
                }
            }
            for c in 0..4 {
                let dst = &mut gs[c][j];
                for l in 0..8 {
                    dst[l] += acc[c][l];
                }
            }
        }
    }
}
