//! Compute kernels for the native BERT engine: f32 GEMM (own AVX2 + FMA kernel over weights packed
//! at load on AVX2 CPUs, the `gemm` crate on AVX-512 ones), int8-weight GEMM over 8-bit
//! activations (AVX-512 VNNI `vpdpbusd`, else i16 `vpdpwssd` / AVX2 `vpmaddwd`), bias / residual /
//! GELU fused into the GEMM's store, and the
//! exp-heavy passes (GELU, attention with its softmax) compiled for AVX-512 / AVX2.
//!
//! This is the only module of the crate allowed to use `unsafe`. Every entry point is a safe
//! function that checks slice bounds before handing raw pointers to a kernel, and every kernel
//! has a portable safe fallback that [`Isa::Portable`] forces (the tests run both).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
mod int8;

pub use int8::{QAct, QMatrix, qlinear, qlinear_then, quantize, quantize_after};

/// What a linear layer does with `x · Wᵀ + bias` before storing it.
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    /// Store it.
    Bias,
    /// Store `gelu(·)`.
    Gelu,
    /// Store `· + residual` (same shape as the output).
    Residual(&'a [f32]),
}

/// [`Epilogue`] as the raw kernels take it.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum EpiPtr {
    Bias,
    Gelu,
    Residual(*const f32),
}

impl EpiPtr {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn offset(self, o: usize) -> EpiPtr {
        match self {
            EpiPtr::Residual(p) => EpiPtr::Residual(p.wrapping_add(o)),
            e => e,
        }
    }
}

impl<'a> Epilogue<'a> {
    /// The same epilogue for output rows `rows` of a matrix with `n` columns.
    fn rows(self, rows: std::ops::Range<usize>, n: usize) -> Epilogue<'a> {
        match self {
            Epilogue::Residual(r) => Epilogue::Residual(&r[rows.start * n..rows.end * n]),
            e => e,
        }
    }
    /// The raw form, after checking a residual holds at least `len` values.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn ptr(self, len: usize) -> EpiPtr {
        match self {
            Epilogue::Bias => EpiPtr::Bias,
            Epilogue::Gelu => EpiPtr::Gelu,
            Epilogue::Residual(r) => {
                assert!(r.len() >= len, "residual too short");
                EpiPtr::Residual(r.as_ptr())
            }
        }
    }
    /// Applies the epilogue to `out` after a kernel that only added the bias.
    fn apply(self, isa: Isa, out: &mut [f32]) {
        match self {
            Epilogue::Bias => {}
            Epilogue::Gelu => gelu_in_place(isa, out),
            Epilogue::Residual(r) => {
                for (o, v) in out.iter_mut().zip(r) {
                    *o += v;
                }
            }
        }
    }
}

/// An f32 weight matrix `w[n][k]` (PyTorch `Linear` layout), laid out once at load for the
/// kernels of one [`Isa`].
pub struct F32Matrix {
    n: usize,
    k: usize,
    /// `k x n` row-major (for the `gemm` crate and the portable kernel); empty when packed.
    wt: Vec<f32>,
    /// `[n / 16][k][16]` panels for the AVX2 kernel; empty otherwise.
    packed: Vec<f32>,
}

impl F32Matrix {
    pub fn new(isa: Isa, w: &[f32], n: usize, k: usize) -> F32Matrix {
        assert_eq!(w.len(), n * k);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2 && n.is_multiple_of(avx2::NR) {
            return F32Matrix { n, k, wt: Vec::new(), packed: avx2::pack_f32(w, n, k) };
        }
        let _ = isa;
        let mut wt = vec![0f32; n * k];
        for j in 0..n {
            for kk in 0..k {
                wt[kk * n + j] = w[j * k + kk];
            }
        }
        F32Matrix { n, k, wt, packed: Vec::new() }
    }
}

/// `out = epi(x · wᵀ + bias)` over all `x.len() / w.k` rows; `threads > 1` splits the rows over
/// the current rayon pool.
pub fn linear_f32(
    isa: Isa,
    threads: usize,
    x: &[f32],
    w: &F32Matrix,
    bias: &[f32],
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    let (n, k) = (w.n, w.k);
    let m = x.len() / k;
    assert!(x.len() == m * k && out.len() >= m * n && bias.len() == n, "linear operand sizes");
    if m == 0 {
        return;
    }
    if !w.packed.is_empty() {
        let run = |x: &[f32], epi: Epilogue<'_>, out: &mut [f32]| {
            let rows = x.len() / k;
            let e = epi.ptr(rows * n);
            assert!(out.len() >= rows * n && w.packed.len() == n * k && n.is_multiple_of(16));
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `packed` is only built for `Isa::Avx2`, which `Isa::detect` returns when the
            // CPU has AVX2 + FMA; the asserts bound x (rows x k), packed, bias (n), out and the
            // residual (rows x n).
            unsafe {
                avx2::sgemm_packed(x, rows, k, &w.packed, n, bias, e, out)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (e, out);
        };
        if threads > 1 && m >= 2 {
            let per = m.div_ceil(threads);
            out[..m * n].par_chunks_mut(per * n).enumerate().for_each(|(c, o)| {
                let rows = c * per..(c * per + per).min(m);
                run(&x[rows.start * k..rows.end * k], epi.rows(rows, n), o)
            });
        } else {
            run(x, epi, &mut out[..m * n]);
        }
        return;
    }
    let out = &mut out[..m * n];
    for row in out.chunks_exact_mut(n) {
        row.copy_from_slice(bias);
    }
    sgemm(isa, threads, (m, n, k), Mat::rows(x, k), Mat::rows(&w.wt, n), 1.0, true, out, n);
    epi.apply(isa, out);
}

/// Instruction sets the kernels can use, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW + VNNI (int8 dot products with `vpdpbusd`).
    Avx512Vnni,
    /// AVX-512 F/BW without VNNI.
    Avx512,
    /// AVX2 + FMA.
    Avx2,
    /// Plain Rust; whatever the compiler's baseline target allows.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                if is_x86_feature_detected!("avx512vnni") {
                    return Isa::Avx512Vnni;
                }
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// A strided view of an f32 matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with leading dimension `ld`.
    pub fn rows(data: &'a [f32], ld: usize) -> Self {
        Mat { data, rs: ld, cs: 1 }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`.
    #[cfg(test)]
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        Mat { data, rs: 1, cs: ld }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `c[i, j] (+)= alpha * sum_k a[i, k] * b[k, j]` for an `m x n` row-major `c` with leading
/// dimension `ldc`. `accumulate` adds to what `c` holds; otherwise `c` is overwritten.
/// `threads > 1` splits the work over the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    isa: Isa,
    threads: usize,
    (m, n, k): (usize, usize, usize),
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
    accumulate: bool,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(a.fits(m, k) && b.fits(k, n), "sgemm operand out of bounds");
    assert!(m == 0 || n == 0 || (m - 1) * ldc + n <= c.len(), "sgemm output out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    if isa == Isa::Portable {
        return sgemm_portable((m, n, k), a, b, alpha, accumulate, c, ldc);
    }
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above prove every element (i, k) of `a`, (k, j) of `b` and (i, j) of
    // `c` the kernel touches lies inside its slice; `c` is borrowed mutably so nothing aliases it.
    // The strides fit in isize because they index existing slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn sgemm_portable(
    (m, n, k): (usize, usize, usize),
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
    accumulate: bool,
    c: &mut [f32],
    ldc: usize,
) {
    if b.cs == 1 {
        let mut row = vec![0f32; n];
        for i in 0..m {
            row.fill(0.0);
            for kk in 0..k {
                let aik = a.data[i * a.rs + kk * a.cs];
                let brow = &b.data[kk * b.rs..kk * b.rs + n];
                for (r, bv) in row.iter_mut().zip(brow) {
                    *r += aik * bv;
                }
            }
            let out = &mut c[i * ldc..i * ldc + n];
            for (o, r) in out.iter_mut().zip(&row) {
                *o = if accumulate { *o + alpha * r } else { alpha * r };
            }
        }
    } else {
        for i in 0..m {
            for j in 0..n {
                let s = if a.cs == 1 && b.rs == 1 {
                    let (x, y) = (&a.data[i * a.rs..i * a.rs + k], &b.data[j * b.cs..j * b.cs + k]);
                    let mut acc = [0f32; 8];
                    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
                    let tail: f32 = xc.remainder().iter().zip(yc.remainder()).map(|(p, q)| p * q).sum();
                    for (p, q) in xc.zip(yc) {
                        for l in 0..8 {
                            acc[l] += p[l] * q[l];
                        }
                    }
                    acc.iter().sum::<f32>() + tail
                } else {
                    (0..k).map(|kk| a.data[i * a.rs + kk * a.cs] * b.data[kk * b.rs + j * b.cs]).sum()
                };
                let o = &mut c[i * ldc + j];
                *o = if accumulate { *o + alpha * s } else { alpha * s };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise passes. The bodies are plain branch-free Rust, inlined into copies compiled with
// AVX-512 or AVX2 enabled so the compiler vectorises them 16 or 8 wide.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23

/// e^x to about 2 ulp, branch-free so it vectorises.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let ki = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((ki + 127) << 23) as u32)
}

/// Exact-erf GELU, `0.5 x (1 + erf(x / sqrt 2))`, with Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let az = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * az);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let erf_abs = 1.0 - poly * exp(-az * az);
    0.5 * x * (1.0 + erf_abs.copysign(z))
}

#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

/// `row = (row - mean) / sqrt(var + eps) * gamma + beta`; sums in 16 lanes so they vectorise.
#[inline(always)]
fn layer_norm_body(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    #[inline(always)]
    fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let mut acc = [0f32; 16];
        let chunks = row.chunks_exact(16);
        let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
        for c in chunks {
            for l in 0..16 {
                acc[l] += f(c[l]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
    let n = row.len() as f32;
    let mean = lanes_sum(row, |v| v) / n;
    let var = lanes_sum(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((r, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *r = (*r - mean) * inv * g + b;
    }
}

#[inline(always)]
fn layer_norm_rows_body(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        layer_norm_body(row, gamma, beta, eps);
    }
}

/// LayerNorm of every row of `x` (rows as long as `gamma`).
pub fn layer_norm(isa: Isa, x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert!(gamma.len() == beta.len() && !gamma.is_empty() && x.len().is_multiple_of(gamma.len()));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns these variants when the CPU has the features the
        // functions are compiled for; the functions themselves are safe Rust.
        Isa::Avx512Vnni | Isa::Avx512 => unsafe { wide::layer_norm_avx512(x, gamma, beta, eps) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2 + FMA were detected.
        Isa::Avx2 => unsafe { wide::layer_norm_avx2(x, gamma, beta, eps) },
        _ => layer_norm_rows_body(x, gamma, beta, eps),
    }
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // Separate passes (no loop-carried sum) so the exp vectorises.
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let mut sum: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    sum += lanes.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Self-attention of one head over one sequence of `n` tokens: `q`, `k`, `v` rows of `d` floats
/// at stride `ld`; `scores` holds at least `(n + d) * n` floats (the score matrix and `kᵀ`);
/// writes `n` rows of `d` at stride `ldo` into `out`. Loops run along contiguous rows so they
/// vectorise.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_body(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ld: usize,
    n: usize,
    d: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    ldo: usize,
) {
    let (scores, kt) = scores.split_at_mut(n * n);
    let kt = &mut kt[..d * n];
    for j in 0..n {
        for (c, &x) in k[j * ld..j * ld + d].iter().enumerate() {
            kt[c * n + j] = x;
        }
    }
    for i in 0..n {
        let qi = &q[i * ld..i * ld + d];
        let row = &mut scores[i * n..(i + 1) * n];
        row.fill(0.0);
        for (&qc, kc) in qi.iter().zip(kt.chunks_exact(n)) {
            let qc = qc * scale;
            for (s, &x) in row.iter_mut().zip(kc) {
                *s += qc * x;
            }
        }
        softmax_body(row);
        let o = &mut out[i * ldo..i * ldo + d];
        o.fill(0.0);
        for (j, &p) in row.iter().enumerate() {
            let vj = &v[j * ld..j * ld + d];
            for (a, b) in o.iter_mut().zip(vj) {
                *a += p * b;
            }
        }
    }
}

/// Attention for one (sequence, head); see `attend_body`. Slices are bounds-checked there.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ld: usize,
    n: usize,
    d: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    ldo: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 + FMA were detected (AVX-512 CPUs have them too). The intrinsic kernel
        // beats the AVX-512 compilation of the generic body 2.5x at 8-40 tokens.
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni if (d == 32 || d == 64) && n > 0 => {
            assert!(q.len() >= (n - 1) * ld + d && k.len() >= (n - 1) * ld + d && v.len() >= (n - 1) * ld + d);
            assert!(scores.len() >= n && out.len() >= (n - 1) * ldo + d, "attention buffers");
            // SAFETY: AVX2 + FMA were detected; the asserts are the kernel's bounds contract.
            unsafe {
                if d == 32 {
                    avx2::attend::<4>(q, k, v, ld, n, scale, scores, out, ldo)
                } else {
                    avx2::attend::<8>(q, k, v, ld, n, scale, scores, out, ldo)
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns these variants when the CPU has AVX-512 F/BW.
        Isa::Avx512Vnni | Isa::Avx512 => unsafe { wide::attend_avx512(q, k, v, ld, n, d, scale, scores, out, ldo) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 + FMA were detected.
        Isa::Avx2 => unsafe { wide::attend_avx2(q, k, v, ld, n, d, scale, scores, out, ldo) },
        _ => attend_body(q, k, v, ld, n, d, scale, scores, out, ldo),
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) fn attend_avx512(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ld: usize,
        n: usize,
        d: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
        ldo: usize,
    ) {
        super::attend_body(q, k, v, ld, n, d, scale, scores, out, ldo)
    }
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn attend_avx2(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ld: usize,
        n: usize,
        d: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
        ldo: usize,
    ) {
        super::attend_body(q, k, v, ld, n, d, scale, scores, out, ldo)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) fn layer_norm_avx512(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        super::layer_norm_rows_body(x, gamma, beta, eps)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn layer_norm_avx2(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        super::layer_norm_rows_body(x, gamma, beta, eps)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) fn gelu_avx512(x: &mut [f32]) {
        super::gelu_body(x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu_avx2(x: &mut [f32]) {
        super::gelu_body(x)
    }
}

/// `x = gelu(x)` element-wise (exact-erf GELU).
pub fn gelu_in_place(isa: Isa, x: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns these variants when the CPU has the features the
        // functions are compiled for; the functions themselves are safe Rust.
        Isa::Avx512Vnni | Isa::Avx512 => unsafe { wide::gelu_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2 + FMA were detected.
        Isa::Avx2 => unsafe { wide::gelu_avx2(x) },
        _ => gelu_body(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // Series / continued fraction are overkill here: integrate numerically.
        let n = 20_000;
        let h = x / n as f64;
        let mut s = 0.0;
        for i in 0..n {
            let t = (i as f64 + 0.5) * h;
            s += (-t * t).exp();
        }
        s * h * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_and_gelu_are_accurate() {
        for i in -800..=800 {
            let x = i as f32 * 0.1;
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            assert!(rel < 1e-6, "exp({x}): rel {rel}");
        }
        for i in -120..=120 {
            let x = i as f32 * 0.05;
            let want = 0.5 * x as f64 * (1.0 + erf_ref(x as f64 / std::f64::consts::SQRT_2));
            let got = gelu(x) as f64;
            assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn wide_and_portable_elementwise_agree() {
        let isa = Isa::detect();
        let x: Vec<f32> = (0..37 * 5).map(|i| ((i * 7919) % 200) as f32 * 0.05 - 5.0).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        gelu_in_place(isa, &mut a);
        gelu_in_place(Isa::Portable, &mut b);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5);
        }
        // Attention over 5 tokens, head size 37, rows at stride 40 (q, k, v interleaved).
        let (n, d, ld) = (5, 37, 40);
        let qkv: Vec<f32> = (0..n * ld + 2 * d).map(|i| ((i * 7919) % 200) as f32 * 0.01 - 1.0).collect();
        let (q, k, v) = (&qkv[..], &qkv[1..], &qkv[2..]);
        let (mut sa, mut sb) = (vec![0f32; (n + d) * n], vec![0f32; (n + d) * n]);
        let (mut oa, mut ob) = (vec![0f32; n * d], vec![0f32; n * d]);
        attend(isa, q, k, v, ld, n, d, 0.3, &mut sa, &mut oa, d);
        attend(Isa::Portable, q, k, v, ld, n, d, 0.3, &mut sb, &mut ob, d);
        for row in sa[..n * n].chunks(n) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        for i in 0..n {
            let mut s: Vec<f32> =
                (0..n).map(|j| 0.3 * (0..d).map(|c| q[i * ld + c] * k[j * ld + c]).sum::<f32>()).collect();
            let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let z: f32 = s.iter().map(|x| (x - max).exp()).sum();
            for x in &mut s {
                *x = (*x - max).exp() / z;
            }
            for c in 0..d {
                let want: f32 = (0..n).map(|j| s[j] * v[j * ld + c]).sum();
                assert!((oa[i * d + c] - want).abs() < 1e-5 && (ob[i * d + c] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn attention_kernels_agree_for_head_sizes_32_and_64() {
        for (n, d) in [(1, 32), (7, 32), (25, 32), (9, 64)] {
            let ld = 3 * d + 5;
            let qkv: Vec<f32> = (0..n * ld).map(|i| ((i * 7919) % 211) as f32 * 0.02 - 2.0).collect();
            let (q, k, v) = (&qkv[..], &qkv[d..], &qkv[2 * d..]);
            let mut s = vec![0f32; (n + d) * n];
            let ldo = d + 3;
            let (mut a, mut b) = (vec![0f32; n * ldo], vec![0f32; n * ldo]);
            attend(Isa::detect(), q, k, v, ld, n, d, 0.17, &mut s, &mut a, ldo);
            attend(Isa::Portable, q, k, v, ld, n, d, 0.17, &mut s, &mut b, ldo);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "n {n} d {d}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn fused_epilogues_match_separate_passes() {
        let (m, n, k) = (11, 48, 40);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 23) as f32 * 0.05 - 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 17) % 19) as f32 * 0.05 - 0.45).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 0.2).collect();
        let res: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 * 0.3).collect();
        let plain: Vec<f32> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                bias[j] + (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum::<f32>()
            })
            .collect();
        for isa in [Isa::detect(), Isa::Portable] {
            let wm = F32Matrix::new(isa, &w, n, k);
            for threads in [1, 2] {
                let mut o = vec![0f32; m * n];
                linear_f32(isa, threads, &x, &wm, &bias, Epilogue::Gelu, &mut o);
                for (a, p) in o.iter().zip(&plain) {
                    assert!((a - gelu(*p)).abs() < 1e-4, "{isa:?} gelu");
                }
                linear_f32(isa, threads, &x, &wm, &bias, Epilogue::Residual(&res), &mut o);
                for ((a, p), r) in o.iter().zip(&plain).zip(&res) {
                    assert!((a - (p + r)).abs() < 1e-4, "{isa:?} residual");
                }
            }
            let q = QMatrix::new(isa, &w, n, k);
            let mut act = QAct::default();
            quantize(isa, 2, &x, k, &q, &mut act);
            let mut o = vec![0f32; m * n];
            qlinear(isa, 2, &act, &q, &bias, Epilogue::Residual(&res), &mut o);
            for ((a, p), r) in o.iter().zip(&plain).zip(&res) {
                assert!((a - (p + r)).abs() < 2e-2, "{isa:?} int8 residual {a} vs {}", p + r);
            }
            qlinear(isa, 1, &act, &q, &bias, Epilogue::Gelu, &mut o);
            for (a, p) in o.iter().zip(&plain) {
                assert!((a - gelu(*p)).abs() < 2e-2, "{isa:?} int8 gelu");
            }
        }
    }

    #[test]
    fn sgemm_matches_portable_with_strides() {
        let (m, n, k) = (13, 70, 33);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| ((i * 13) % 11) as f32 * 0.1 - 0.5).collect();
        for isa in [Isa::detect(), Isa::Portable] {
            let mut c1 = vec![1.0f32; m * n];
            sgemm(isa, 1, (m, n, k), Mat::rows(&a, k), Mat::transposed(&bt, k), 0.5, true, &mut c1, n);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = 1.0 + 0.5 * (0..k).map(|kk| a[i * k + kk] * bt[j * k + kk]).sum::<f32>();
                    assert!((c1[i * n + j] - want).abs() < 1e-4, "{isa:?} ({i},{j})");
                }
            }
        }
    }

    /// `cargo test --release -p keel-embed --lib -- --ignored attention_timings --nocapture`.
    #[test]
    #[ignore]
    fn attention_timings() {
        let (h, d) = (384, 32);
        for n in [8, 18, 40, 128] {
            let ld = 3 * h;
            let qkv: Vec<f32> = (0..n * ld).map(|i| ((i * 7919) % 211) as f32 * 0.02 - 2.0).collect();
            let mut s = vec![0f32; (n + d) * n];
            let mut o = vec![0f32; n * h];
            let mut line = format!("n {n:>3}:");
            for (name, isa) in [("detect", Isa::detect()), ("avx2", Isa::Avx2), ("portable", Isa::Portable)] {
                let mut best = f64::INFINITY;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    for _ in 0..10 {
                        for hd in 0..h / d {
                            let b = hd * d;
                            attend(
                                isa,
                                &qkv[b..],
                                &qkv[b + h..],
                                &qkv[b + 2 * h..],
                                ld,
                                n,
                                d,
                                0.17,
                                &mut s,
                                &mut o[b..],
                                h,
                            );
                        }
                    }
                    best = best.min(t.elapsed().as_secs_f64() / 10.0);
                }
                line += &format!("  {name} {:.1} us ({:.2} us/token)", best * 1e6, best * 1e6 / n as f64);
            }
            eprintln!("{line}");
        }
    }
}
