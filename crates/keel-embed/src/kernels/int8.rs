//! Int8-weight GEMM: per-output-channel symmetric int8 weights, per-row dynamic asymmetric
//! 8-bit activations (`x ≈ s (q - z)`, `q` in `0..=255`), i32 accumulation, dequantization fused
//! with the bias and the epilogue (GELU, residual).
//!
//! On AVX-512 VNNI the u8 codes go straight into `vpdpbusd` (u8 x i8, 4 MACs per lane), with the
//! zero point removed at the end through precomputed per-column weight sums
//! (`sum q w - z sum w`). Elsewhere the same codes are stored centred (`q - z`, 9 bits) as i16
//! for `vpdpwssd` / AVX2 `vpmaddwd` / the portable loop, so every kernel computes the same
//! integer sums and int8 embeddings do not depend on the CPU.
//!
//! Why asymmetric: an earlier symmetric 8-bit scheme fell to cosine 0.985 on short inputs
//! (outlier channels make per-row scales coarse); 14-bit symmetric activations gave 0.9965 but
//! ran `vpdpwssd` at about a third of `vpdpbusd`'s speed. Asymmetric u8 on every layer gives a
//! worst cosine of 0.9935 over the reference texts (bound 0.99).

use rayon::prelude::*;

use super::{Epilogue, Isa};

const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23

/// A weight matrix `w[n][k]` (PyTorch `Linear` layout: out x in) quantized per output channel.
pub struct QMatrix {
    n: usize,
    k: usize,
    /// `w[j][k] ≈ scales[j] * plain[j * k + k]`.
    scales: Vec<f32>,
    /// Row-major `n x k`, used by the portable kernel.
    plain: Vec<i8>,
    /// Layout `[n / 16][k / 2][16][2]` widened to i16 (for the VNNI and AVX2 kernels), present
    /// when `n % 16 == 0 && k % 2 == 0` and the kernels are not the portable ones.
    packed: Vec<i16>,
    /// Layout `[n / 16][k / 4][16][4]` (for the VNNI `vpdpbusd` kernel over u8 activations),
    /// present when `isa` is [`Isa::Avx512Vnni`], `n % 64 == 0` and `k % 4 == 0`.
    packed8: Vec<i8>,
    /// `sum_k plain[j][k]` per column (the zero-point correction of u8 activations); with `packed8`.
    sums: Vec<i32>,
}

impl QMatrix {
    /// Quantizes a row-major `n x k` f32 matrix (and packs it for `isa`'s kernels).
    pub fn new(isa: Isa, w: &[f32], n: usize, k: usize) -> QMatrix {
        assert_eq!(w.len(), n * k);
        let mut scales = vec![0f32; n];
        let mut plain = vec![0i8; n * k];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            scales[j] = scale;
            for (q, v) in plain[j * k..(j + 1) * k].iter_mut().zip(row) {
                *q = (v / scale).round().clamp(-127.0, 127.0) as i8;
            }
        }
        let mut packed = Vec::new();
        if isa != Isa::Portable && n.is_multiple_of(16) && k.is_multiple_of(2) {
            packed = vec![0i16; n * k];
            let mut p = 0;
            for jb in 0..n / 16 {
                for kb in 0..k / 2 {
                    for jj in 0..16 {
                        for kk in 0..2 {
                            packed[p] = i16::from(plain[(jb * 16 + jj) * k + kb * 2 + kk]);
                            p += 1;
                        }
                    }
                }
            }
        }
        let (mut packed8, mut sums) = (Vec::new(), Vec::new());
        // (Re-detected: the u8 kernel runs whenever `packed8` exists, whatever `Isa` a caller
        // passes later.)
        if isa == Isa::Avx512Vnni && Isa::detect() == Isa::Avx512Vnni && n.is_multiple_of(64) && k.is_multiple_of(4) {
            packed8.reserve_exact(n * k);
            for jb in 0..n / 16 {
                for kb in 0..k / 4 {
                    for jj in 0..16 {
                        let row = (jb * 16 + jj) * k + kb * 4;
                        packed8.extend_from_slice(&plain[row..row + 4]);
                    }
                }
            }
            sums = plain.chunks_exact(k).map(|r| r.iter().map(|&v| i32::from(v)).sum()).collect();
        }
        QMatrix { n, k, scales, plain, packed, packed8, sums }
    }

    /// Whether [`qlinear`] runs this matrix on the `vpdpbusd` kernel for 8-bit activations.
    fn u8_kernel(&self) -> bool {
        !self.packed8.is_empty()
    }
}

/// A batch of quantized activation rows (scratch reused across layers and batches).
#[derive(Default)]
pub struct QAct {
    rows: usize,
    k: usize,
    /// u8 codes, for the `vpdpbusd` kernel.
    u8s: Vec<u8>,
    /// `q - z` as i16, for the other kernels.
    i16s: Vec<i16>,
    scales: Vec<f32>,
    /// Zero points (u8 codes only).
    zeros: Vec<i32>,
    /// Which of `u8s` / `i16s` holds the current rows.
    is_u8: bool,
}

impl QAct {
    /// Sizes the buffers for `len / k` rows quantized for `w`'s kernel and records the shape;
    /// returns the row count and the rows per thread for `threads`.
    fn prepare(&mut self, len: usize, k: usize, w: &QMatrix, threads: usize) -> (usize, usize) {
        assert_eq!(k, w.k, "activation width");
        let rows = len / k;
        assert_eq!(len, rows * k);
        self.rows = rows;
        self.k = k;
        self.is_u8 = w.u8_kernel();
        grow(&mut self.scales, rows);
        if self.is_u8 {
            grow(&mut self.u8s, rows * k);
            grow(&mut self.zeros, rows);
        } else {
            grow(&mut self.i16s, rows * k);
        }
        (rows, if threads > 1 { rows.div_ceil(threads).max(1) } else { rows.max(1) })
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// Quantizes `x` (rows of `k`) asymmetrically to 8 bits per row, `x ≈ s (q - z)` with `q` in
/// `0..=255`, into `act` in the form `w`'s kernel takes: u8 codes and zero points for
/// `vpdpbusd` (AVX-512 VNNI), else `q - z` as i16 for the i16 kernels, so that every kernel
/// computes the same integer sums. `threads > 1` splits the rows over the current rayon pool.
pub fn quantize(isa: Isa, threads: usize, x: &[f32], k: usize, w: &QMatrix, act: &mut QAct) {
    let (rows, per) = act.prepare(x.len(), k, w, threads);
    let scales = &mut act.scales[..rows];
    if act.is_u8 {
        let (q, z) = (&mut act.u8s[..rows * k], &mut act.zeros[..rows]);
        x.par_chunks(per * k)
            .zip(q.par_chunks_mut(per * k))
            .zip(scales.par_chunks_mut(per).zip(z.par_chunks_mut(per)))
            .for_each(|((x, q), (s, z))| quantize_u8(isa, x, k, U8Out::Codes(q, z), s));
    } else {
        let q = &mut act.i16s[..rows * k];
        x.par_chunks(per * k)
            .zip(q.par_chunks_mut(per * k))
            .zip(scales.par_chunks_mut(per))
            .for_each(|((x, q), s)| quantize_u8(isa, x, k, U8Out::Centered(q), s));
    }
}

/// Like [`quantize`], but first runs `prep(first_row, rows)` in place on each block of a few rows
/// of `x` (the rows `first_row..`), so that the rows are still in L1 when they are quantized
/// (e.g. LayerNorm, whose output feeds the next linear layer).
pub fn quantize_after<F>(isa: Isa, threads: usize, x: &mut [f32], k: usize, w: &QMatrix, act: &mut QAct, prep: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    const BLOCK: usize = 8;
    let (rows, per) = act.prepare(x.len(), k, w, threads);
    let scales = &mut act.scales[..rows];
    if act.is_u8 {
        let (q, z) = (&mut act.u8s[..rows * k], &mut act.zeros[..rows]);
        x.par_chunks_mut(per * k)
            .zip(q.par_chunks_mut(per * k))
            .zip(scales.par_chunks_mut(per).zip(z.par_chunks_mut(per)))
            .enumerate()
            .for_each(|(c, ((x, q), (s, z)))| {
                for (b, (((x, q), s), z)) in x
                    .chunks_mut(BLOCK * k)
                    .zip(q.chunks_mut(BLOCK * k))
                    .zip(s.chunks_mut(BLOCK))
                    .zip(z.chunks_mut(BLOCK))
                    .enumerate()
                {
                    prep(c * per + b * BLOCK, x);
                    quantize_u8(isa, x, k, U8Out::Codes(q, z), s);
                }
            });
    } else {
        let q = &mut act.i16s[..rows * k];
        x.par_chunks_mut(per * k).zip(q.par_chunks_mut(per * k)).zip(scales.par_chunks_mut(per)).enumerate().for_each(
            |(c, ((x, q), s))| {
                for (b, ((x, q), s)) in
                    x.chunks_mut(BLOCK * k).zip(q.chunks_mut(BLOCK * k)).zip(s.chunks_mut(BLOCK)).enumerate()
                {
                    prep(c * per + b * BLOCK, x);
                    quantize_u8(isa, x, k, U8Out::Centered(q), s);
                }
            },
        );
    }
}

/// `out = epi(x · wᵀ + bias)` for the activations `act` quantized by [`quantize`] for `w`.
pub fn qlinear(isa: Isa, threads: usize, act: &QAct, w: &QMatrix, bias: &[f32], epi: Epilogue<'_>, out: &mut [f32]) {
    qlinear_then(isa, threads, act, w, bias, epi, out, None)
}

/// [`qlinear`], then (with `next`) [`quantize`] of `out` for the next layer's weights into its
/// activations. On the `vpdpbusd` kernel for both, fused: each block of a few dozen output rows
/// is quantized right after it is computed, while it is still in L2.
#[allow(clippy::too_many_arguments)]
pub fn qlinear_then(
    isa: Isa,
    threads: usize,
    act: &QAct,
    w: &QMatrix,
    bias: &[f32],
    epi: Epilogue<'_>,
    out: &mut [f32],
    next: Option<(&QMatrix, &mut QAct)>,
) {
    /// Output rows per fused block (a multiple of the kernel's 6-row tile).
    const MB: usize = 48;
    let (m, n, k) = (act.rows, w.n, w.k);
    assert!(act.k == k && out.len() >= m * n && bias.len() == n, "qlinear operand sizes");
    let Some((nw, nact)) = next else {
        return qlinear_only(isa, threads, act, w, bias, epi, out);
    };
    if !(act.is_u8 && nw.u8_kernel()) || m == 0 {
        qlinear_only(isa, threads, act, w, bias, epi, out);
        return quantize(isa, threads, &out[..m * n], n, nw, nact);
    }
    assert_eq!(nw.k, n, "next layer's input width");
    nact.rows = m;
    nact.k = n;
    nact.is_u8 = true;
    grow(&mut nact.u8s, m * n);
    grow(&mut nact.zeros, m);
    grow(&mut nact.scales, m);
    let per = if threads > 1 && m >= 2 { m.div_ceil(threads) } else { m };
    out[..m * n]
        .par_chunks_mut(per * n)
        .zip(nact.u8s[..m * n].par_chunks_mut(per * n))
        .zip(nact.scales[..m].par_chunks_mut(per).zip(nact.zeros[..m].par_chunks_mut(per)))
        .enumerate()
        .for_each(|(c, ((o, q), (s, z)))| {
            let mut b = 0;
            while b < s.len() {
                let e = (b + MB).min(s.len());
                let rows = c * per + b..c * per + e;
                qgemm_u8_rows(act, w, bias, rows.clone(), epi.rows(rows, n), &mut o[b * n..e * n]);
                let codes = U8Out::Codes(&mut q[b * n..e * n], &mut z[b..e]);
                quantize_u8(isa, &o[b * n..e * n], n, codes, &mut s[b..e]);
                b = e;
            }
        });
}

/// Rows `rows` of `act` through the `vpdpbusd` kernel into `o` (those rows of the output).
fn qgemm_u8_rows(
    act: &QAct,
    w: &QMatrix,
    bias: &[f32],
    rows: std::ops::Range<usize>,
    epi: Epilogue<'_>,
    o: &mut [f32],
) {
    let (n, k) = (w.n, w.k);
    let (a, sa, za) = (&act.u8s[rows.start * k..rows.end * k], &act.scales[rows.clone()], &act.zeros[rows.clone()]);
    assert!(act.is_u8 && w.packed8.len() == n * k && w.sums.len() == n && bias.len() == n && o.len() >= sa.len() * n);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `packed8` exists only when `Isa::detect` found AVX-512 F/BW/VNNI (`QMatrix::new`),
    // with n % 64 == 0 and k % 4 == 0; the assert above and `quantize` bound a (rows x k), the
    // row vectors (rows), packed8 (n x k), the column vectors (n), bias (n) and o (rows x n);
    // `epi.ptr` checks the residual (rows x n).
    unsafe {
        vnni::qgemm_u8(a, sa, za, k, w, bias, epi.ptr(sa.len() * n), o)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, sa, za, epi, o);
}

#[allow(clippy::too_many_arguments)]
fn qlinear_only(isa: Isa, threads: usize, act: &QAct, w: &QMatrix, bias: &[f32], epi: Epilogue<'_>, out: &mut [f32]) {
    let (m, n, k) = (act.rows, w.n, w.k);
    assert!(act.k == k && out.len() >= m * n && bias.len() == n, "qlinear operand sizes");
    if !act.is_u8 {
        return qgemm(isa, threads, &act.i16s[..m * k], &act.scales[..m], w, bias, epi, out);
    }
    if let Epilogue::Residual(r) = epi {
        assert!(r.len() >= m * n, "qlinear residual size");
    }
    let run =
        |rows: std::ops::Range<usize>, epi: Epilogue<'_>, o: &mut [f32]| qgemm_u8_rows(act, w, bias, rows, epi, o);
    if m == 0 {
        return;
    }
    if threads > 1 && m >= 2 {
        let per = m.div_ceil(threads);
        out[..m * n].par_chunks_mut(per * n).enumerate().for_each(|(c, o)| {
            let rows = c * per..(c * per + per).min(m);
            run(rows.clone(), epi.rows(rows, n), o)
        });
    } else {
        run(0..m, epi, &mut out[..m * n]);
    }
}

/// Where [`quantize_u8`] writes a row's codes.
enum U8Out<'a> {
    /// `q` and the row's zero point `z`.
    Codes(&'a mut [u8], &'a mut [i32]),
    /// `q - z` as i16 (for the i16 kernels).
    Centered(&'a mut [i16]),
}

fn quantize_u8(isa: Isa, x: &[f32], k: usize, out: U8Out<'_>, scales: &mut [f32]) {
    let rows = x.len() / k;
    assert!(x.len() == rows * k && scales.len() >= rows);
    match &out {
        U8Out::Codes(q, z) => assert!(q.len() >= rows * k && z.len() >= rows),
        U8Out::Centered(q) => assert!(q.len() >= rows * k),
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx512 if matches!(out, U8Out::Codes(..)) => {
            let U8Out::Codes(q, z) = out else { unreachable!() };
            // SAFETY: `Isa::detect` returns these only when the CPU has AVX-512 F/BW; the asserts
            // above bound x and the outputs (rows x k codes, rows zero points and scales).
            unsafe { vnni::quantize_codes(x, k, q, z, scales) }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` returns these only when the CPU has AVX-512 F/BW (and AVX2 +
        // FMA); the function is safe Rust compiled with those features.
        Isa::Avx512Vnni | Isa::Avx512 => unsafe { quantize_u8_avx512(x, k, out, scales) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` returned it, so the CPU has AVX2 + FMA; the function is safe Rust.
        Isa::Avx2 => unsafe { quantize_u8_avx2(x, k, out, scales) },
        _ => quantize_u8_body(x, k, out, scales),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
fn quantize_u8_avx512(x: &[f32], k: usize, out: U8Out<'_>, scales: &mut [f32]) {
    quantize_u8_body(x, k, out, scales)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_u8_avx2(x: &[f32], k: usize, out: U8Out<'_>, scales: &mut [f32]) {
    quantize_u8_body(x, k, out, scales)
}

/// Per row: range `[min(x, 0), max(x, 0)]` over 255 steps, `z = round(-min / s)`,
/// `q = clamp(round(x / s) + z, 0, 255)`.
#[inline(always)]
fn quantize_u8_body(x: &[f32], k: usize, mut out: U8Out<'_>, scales: &mut [f32]) {
    for (i, (row, s)) in x.chunks_exact(k).zip(scales.iter_mut()).enumerate() {
        let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
        let chunks = row.chunks_exact(8);
        let (tlo, thi) = chunks.remainder().iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        for c in chunks {
            for l in 0..8 {
                lo[l] = lo[l].min(c[l]);
                hi[l] = hi[l].max(c[l]);
            }
        }
        let lo = lo.iter().fold(tlo, |m, &v| m.min(v));
        let hi = hi.iter().fold(thi, |m, &v| m.max(v));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        *s = scale;
        let inv = 1.0 / scale;
        // round(t) for |t| < 2^22 as integer bits, half to even: no float-to-int conversion, so
        // the loops vectorise.
        let magic = ROUND_MAGIC.to_bits() as i32;
        let round = |t: f32| (t + ROUND_MAGIC).to_bits() as i32 - magic;
        let z = round(-lo * inv).clamp(0, 255);
        match &mut out {
            U8Out::Codes(q, zs) => {
                zs[i] = z;
                for (o, v) in q[i * k..(i + 1) * k].iter_mut().zip(row) {
                    *o = (round(v * inv) + z).clamp(0, 255) as u8;
                }
            }
            U8Out::Centered(q) => {
                for (o, v) in q[i * k..(i + 1) * k].iter_mut().zip(row) {
                    *o = ((round(v * inv) + z).clamp(0, 255) - z) as i16;
                }
            }
        }
    }
}

/// `out[i][j] = epi(a_scales[i] * w.scales[j] * sum_k a[i][k] * w[j][k] + bias[j])` for
/// `m = a_scales.len()` rows; `out` is row-major `m x n`.
#[allow(clippy::too_many_arguments)]
fn qgemm(
    isa: Isa,
    threads: usize,
    a: &[i16],
    a_scales: &[f32],
    w: &QMatrix,
    bias: &[f32],
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    let (m, n, k) = (a_scales.len(), w.n, w.k);
    assert!(a.len() >= m * k && out.len() >= m * n && bias.len() == n, "qgemm operand sizes");
    if let Epilogue::Residual(r) = epi {
        assert!(r.len() >= m * n, "qgemm residual size");
    }
    if m == 0 {
        return;
    }
    if threads > 1 && m >= 2 {
        let per = m.div_ceil(threads);
        out[..m * n].par_chunks_mut(per * n).enumerate().for_each(|(c, o)| {
            let rows = c * per..(c * per + per).min(m);
            qgemm_serial(isa, &a[rows.start * k..rows.end * k], &a_scales[rows.clone()], w, bias, epi.rows(rows, n), o)
        });
    } else {
        qgemm_serial(isa, a, a_scales, w, bias, epi, out);
    }
}

fn qgemm_serial(isa: Isa, a: &[i16], a_scales: &[f32], w: &QMatrix, bias: &[f32], epi: Epilogue<'_>, out: &mut [f32]) {
    let (m, n, k) = (a_scales.len(), w.n, w.k);
    assert!(a.len() >= m * k && out.len() >= m * n && bias.len() == n);
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) && !w.packed.is_empty() {
        assert!(w.packed.len() == n * k && n.is_multiple_of(16) && k.is_multiple_of(2));
        // SAFETY: the CPU has AVX2 + FMA (`Isa::detect`); the asserts bound a (m x k), packed
        // (n x k), scales, bias and out (m x n); `epi.ptr` checked the residual's length (m x n).
        unsafe { super::avx2::qgemm_packed(a, a_scales, k, &w.packed, &w.scales, n, bias, epi.ptr(m * n), out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && !w.packed.is_empty() && n.is_multiple_of(64) {
        assert!(w.packed.len() == n * k && k.is_multiple_of(2));
        // SAFETY: the CPU has AVX-512 F/BW/VNNI (`Isa::detect`), and the asserts above bound every
        // read of `a` (m rows of k values), `w.packed` (n * k values), the per-column vectors
        // (n each) and every write of `out` (m rows of n floats) that the kernel performs.
        unsafe { vnni::qgemm(a, a_scales, w, bias, out) };
        epi.apply(isa, &mut out[..m * n]);
        return;
    }
    qgemm_portable(a, a_scales, w, bias, out);
    epi.apply(isa, &mut out[..m * n]);
}

fn qgemm_portable(a: &[i16], a_scales: &[f32], w: &QMatrix, bias: &[f32], out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    for (i, &sa) in a_scales.iter().enumerate() {
        let arow = &a[i * k..(i + 1) * k];
        let orow = &mut out[i * n..(i + 1) * n];
        for j in 0..n {
            let wrow = &w.plain[j * k..(j + 1) * k];
            let acc: i32 = arow.iter().zip(wrow).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
            orow[j] = sa * w.scales[j] * acc as f32 + bias[j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::QMatrix;
    use crate::kernels::EpiPtr;

    /// Rows per micro-tile: 6 rows x 64 columns = 24 zmm accumulators.
    const MR: usize = 6;

    /// `out = a_scales[i] * w.scales[j] * sum_k a[i][k] w[j][k] + bias[j]` with `vpdpwssd`, 64
    /// columns at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `a` holds `m * k` values (`m = a_scales.len()`),
    /// `w.packed` is the `[n / 16][k / 2][16][2]` packing of `n * k` values with `n % 64 == 0`
    /// and `k % 2 == 0`, `bias` holds `n` values and `out` at least `m * n`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn qgemm(a: &[i16], a_scales: &[f32], w: &QMatrix, bias: &[f32], out: &mut [f32]) {
        let (m, n, k) = (a_scales.len(), w.n, w.k);
        let block = 16 * k; // values per 16-column block
        for jb in (0..n).step_by(64) {
            // SAFETY: jb + 64 <= n (n % 64 == 0), so the four 16-column blocks starting at
            // jb / 16 lie inside `packed`.
            let wp = unsafe { w.packed.as_ptr().add((jb / 16) * block) };
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(MR);
                // SAFETY: rows i..i + rows <= m lie inside `a` (m rows of k), `a_scales` (m) and
                // `out` (m rows of n, of which columns jb..jb + 64 <= n); `tile` reads the four
                // blocks at `wp` and columns jb..jb + 64 of `w.scales` and `bias` (n each), all
                // bounded above; the CPU has the features this function requires.
                unsafe {
                    let ap = a.as_ptr().add(i * k);
                    let op = out.as_mut_ptr().add(i * n + jb);
                    let sp = a_scales.as_ptr().add(i);
                    match rows {
                        6 => tile::<6>(ap, k, wp, block, w, jb, bias, sp, op, n),
                        5 => tile::<5>(ap, k, wp, block, w, jb, bias, sp, op, n),
                        4 => tile::<4>(ap, k, wp, block, w, jb, bias, sp, op, n),
                        3 => tile::<3>(ap, k, wp, block, w, jb, bias, sp, op, n),
                        2 => tile::<2>(ap, k, wp, block, w, jb, bias, sp, op, n),
                        _ => tile::<1>(ap, k, wp, block, w, jb, bias, sp, op, n),
                    }
                }
                i += rows;
            }
        }
    }

    /// Rows per cache block of the u8 kernel: about 96 KB of activations, a multiple of `MR`.
    fn row_block_u8(k: usize) -> usize {
        ((96 * 1024 / k.max(1)) / MR).max(1) * MR
    }

    /// `out = epi(a_scales[i] * w.scales[j] * (sum_k a[i][k] w[j][k] - a_zeros[i] * w.sums[j]) + bias[j])`
    /// over u8 activation codes, with `vpdpbusd`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `a` holds `m * k` codes (`m = a_scales.len()`), `a_zeros`
    /// `m` values, `w.packed8` is the `[n / 16][k / 4][16][4]` packing (n % 64 == 0, k % 4 == 0),
    /// `w.sums`, `w.scales` and `bias` hold `n` values, `out` (and the residual) `m * n`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(super) unsafe fn qgemm_u8(
        a: &[u8],
        a_scales: &[f32],
        a_zeros: &[i32],
        k: usize,
        w: &QMatrix,
        bias: &[f32],
        epi: EpiPtr,
        out: &mut [f32],
    ) {
        let (m, n) = (a_scales.len(), w.n);
        debug_assert!(a.len() >= m * k && a_zeros.len() >= m && w.packed8.len() == n * k && out.len() >= m * n);
        let block = 16 * k; // bytes per 16-column block
        let mc = row_block_u8(k);
        let mut i0 = 0;
        while i0 < m {
            let end = (i0 + mc).min(m);
            for jb in (0..n).step_by(64) {
                // SAFETY: jb + 64 <= n (n % 64 == 0), so the four 16-column blocks starting at
                // jb / 16 lie inside `packed8`.
                let wp = unsafe { w.packed8.as_ptr().add((jb / 16) * block) };
                // SAFETY: `w.sums`, `w.scales` and `bias` hold n values each and jb + 64 <= n.
                let cols = unsafe {
                    Cols {
                        sums: w.sums.as_ptr().add(jb),
                        scales: w.scales.as_ptr().add(jb),
                        bias: bias.as_ptr().add(jb),
                    }
                };
                let mut i = i0;
                while i < end {
                    let rows = (end - i).min(MR);
                    // SAFETY: rows i..i + rows <= m lie inside `a` (m rows of k codes), the row
                    // scales and zero points (m each), `out` and the residual (m rows of n, of
                    // which columns jb..jb + 64 <= n); `tile_u8`'s weight and column reads were
                    // bounded above; the CPU has the features this function requires.
                    unsafe {
                        let ap = a.as_ptr().add(i * k);
                        let op = out.as_mut_ptr().add(i * n + jb);
                        let rs = (a_scales.as_ptr().add(i), a_zeros.as_ptr().add(i));
                        let e = epi.offset(i * n + jb);
                        match rows {
                            6 => tile_u8::<6>(ap, k, wp, block, &cols, rs, e, op, n),
                            5 => tile_u8::<5>(ap, k, wp, block, &cols, rs, e, op, n),
                            4 => tile_u8::<4>(ap, k, wp, block, &cols, rs, e, op, n),
                            3 => tile_u8::<3>(ap, k, wp, block, &cols, rs, e, op, n),
                            2 => tile_u8::<2>(ap, k, wp, block, &cols, rs, e, op, n),
                            _ => tile_u8::<1>(ap, k, wp, block, &cols, rs, e, op, n),
                        }
                    }
                    i += rows;
                }
            }
            i0 = end;
        }
    }

    /// `quantize_u8_body` into u8 codes with AVX-512 intrinsics; the same results (`vcvtps2dq`
    /// rounds half to even like the body's `ROUND_MAGIC`, and |x / s| <= 255).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; `x` holds whole rows of `k`, `q` as many values, `zeros` and
    /// `scales` one per row.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_codes(x: &[f32], k: usize, q: &mut [u8], zeros: &mut [i32], scales: &mut [f32]) {
        let rows = x.len() / k;
        debug_assert!(q.len() >= rows * k && zeros.len() >= rows && scales.len() >= rows);
        let tail = k % 16;
        let tail_mask: __mmask16 = (1u32 << tail).wrapping_sub(1) as u16;
        for i in 0..rows {
            // SAFETY: row i has k values in x and q; full vectors cover k - tail of them, the
            // masked ones the rest.
            unsafe {
                let xp = x.as_ptr().add(i * k);
                let qp = q.as_mut_ptr().add(i * k);
                let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut c = 0;
                while c + 16 <= k {
                    let v = _mm512_loadu_ps(xp.add(c));
                    lo = _mm512_min_ps(lo, v);
                    hi = _mm512_max_ps(hi, v);
                    c += 16;
                }
                if tail > 0 {
                    let v = _mm512_maskz_loadu_ps(tail_mask, xp.add(c));
                    lo = _mm512_min_ps(lo, v);
                    hi = _mm512_max_ps(hi, v);
                }
                let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
                let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
                scales[i] = scale;
                let inv = 1.0 / scale;
                let magic = super::ROUND_MAGIC.to_bits() as i32;
                let z = (((-lo * inv) + super::ROUND_MAGIC).to_bits() as i32 - magic).clamp(0, 255);
                zeros[i] = z;
                let (vinv, vz) = (_mm512_set1_ps(inv), _mm512_set1_epi32(z));
                let (v0, v255) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
                // A macro, not a closure, so the intrinsics inline under this function's features.
                macro_rules! code {
                    ($v:expr) => {{
                        let r = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps($v, vinv)), vz);
                        _mm512_min_epi32(_mm512_max_epi32(r, v0), v255)
                    }};
                }
                let mut c = 0;
                while c + 16 <= k {
                    let r = code!(_mm512_loadu_ps(xp.add(c)));
                    _mm_storeu_si128(qp.add(c) as *mut __m128i, _mm512_cvtepi32_epi8(r));
                    c += 16;
                }
                if tail > 0 {
                    let r = code!(_mm512_maskz_loadu_ps(tail_mask, xp.add(c)));
                    _mm512_mask_cvtepi32_storeu_epi8(qp.add(c) as *mut i8, tail_mask, r);
                }
            }
        }
    }

    /// Per-column vectors of one 64-column block.
    struct Cols {
        sums: *const i32,
        scales: *const f32,
        bias: *const f32,
    }

    /// `R` rows x 64 columns of u8 codes x int8 weights: accumulate over all of k, then remove
    /// the zero point, dequantize, add the bias, apply the epilogue, store.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI, AVX2 and FMA; `k % 4 == 0`; `a` points at `R` rows of `k`
    /// codes at stride `k`, `wp` at four blocks of `k * 16` weights `block` apart, each pointer
    /// of `cols` at 64 values, the row pointers at `R` values each, `out` at `R` rows of 64
    /// writable floats at stride `ldo`, and a residual `epi` at the same layout as `out` (as
    /// [`qgemm_u8`] passes them).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    unsafe fn tile_u8<const R: usize>(
        a: *const u8,
        k: usize,
        wp: *const i8,
        block: usize,
        cols: &Cols,
        (a_scales, a_zeros): (*const f32, *const i32),
        epi: EpiPtr,
        out: *mut f32,
        ldo: usize,
    ) {
        // SAFETY: (the whole body) the caller guarantees R rows of k codes at stride k, four blocks
        // of k * 16 weights at stride `block`, 64 values behind each column pointer, R row
        // scales and zero points, and R rows of 64 outputs (and residuals) at stride ldo.
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 4]; R];
            let rows: [*const u8; R] = std::array::from_fn(|r| a.add(r * k));
            let mut kk = 0;
            while kk < k {
                let off = kk * 16;
                let w0 = _mm512_loadu_si512(wp.add(off) as *const __m512i);
                let w1 = _mm512_loadu_si512(wp.add(block + off) as *const __m512i);
                let w2 = _mm512_loadu_si512(wp.add(2 * block + off) as *const __m512i);
                let w3 = _mm512_loadu_si512(wp.add(3 * block + off) as *const __m512i);
                for (acc, row) in acc.iter_mut().zip(&rows) {
                    let xv = _mm512_set1_epi32((row.add(kk) as *const i32).read_unaligned());
                    acc[0] = _mm512_dpbusd_epi32(acc[0], xv, w0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], xv, w1);
                    acc[2] = _mm512_dpbusd_epi32(acc[2], xv, w2);
                    acc[3] = _mm512_dpbusd_epi32(acc[3], xv, w3);
                }
                kk += 4;
            }
            for c in 0..4 {
                let sums = _mm512_loadu_si512(cols.sums.add(c * 16) as *const __m512i);
                let ws = _mm512_loadu_ps(cols.scales.add(c * 16));
                let b = _mm512_loadu_ps(cols.bias.add(c * 16));
                for (r, acc) in acc.iter().enumerate() {
                    let v = _mm512_sub_epi32(acc[c], _mm512_mullo_epi32(_mm512_set1_epi32(*a_zeros.add(r)), sums));
                    let s = _mm512_mul_ps(ws, _mm512_set1_ps(*a_scales.add(r)));
                    let mut y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), s, b);
                    let off = r * ldo + c * 16;
                    match epi {
                        EpiPtr::Bias => {}
                        EpiPtr::Residual(res) => y = _mm512_add_ps(y, _mm512_loadu_ps(res.add(off))),
                        EpiPtr::Gelu => {
                            let mut t = [0f32; 16];
                            _mm512_storeu_ps(t.as_mut_ptr(), y);
                            super::super::gelu_body(&mut t);
                            y = _mm512_loadu_ps(t.as_ptr());
                        }
                    }
                    _mm512_storeu_ps(out.add(off), y);
                }
            }
        }
    }

    /// `R` rows x 64 columns: accumulate over all of k, then dequantize, add bias, store.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `k % 2 == 0`; `a` points at `R` rows of `k` i16 values at
    /// stride `k`, `wp` at four blocks of `k * 16` i16 weights `block` apart, `a_scales` at `R`
    /// values, `jb + 64 <= w.n` (so columns jb..jb + 64 of `w.scales` and `bias` exist), and
    /// `out` at `R` rows of 64 writable floats at stride `ldo` (as [`qgemm`] passes them).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize>(
        a: *const i16,
        k: usize,
        wp: *const i16,
        block: usize,
        w: &QMatrix,
        jb: usize,
        bias: &[f32],
        a_scales: *const f32,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut acc = [[_mm512_setzero_si512(); 4]; R];
        let mut kk = 0;
        while kk < k {
            // SAFETY: kk + 2 <= k, so each 64-byte load stays inside its block (k / 2 groups of 32
            // values) and each 2-value activation read stays inside its row of k values.
            unsafe {
                let off = kk * 16;
                let w0 = _mm512_loadu_si512(wp.add(off) as *const __m512i);
                let w1 = _mm512_loadu_si512(wp.add(block + off) as *const __m512i);
                let w2 = _mm512_loadu_si512(wp.add(2 * block + off) as *const __m512i);
                let w3 = _mm512_loadu_si512(wp.add(3 * block + off) as *const __m512i);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = (a.add(r * k + kk) as *const i32).read_unaligned();
                    let xv = _mm512_set1_epi32(x);
                    acc[0] = _mm512_dpwssd_epi32(acc[0], xv, w0);
                    acc[1] = _mm512_dpwssd_epi32(acc[1], xv, w1);
                    acc[2] = _mm512_dpwssd_epi32(acc[2], xv, w2);
                    acc[3] = _mm512_dpwssd_epi32(acc[3], xv, w3);
                }
            }
            kk += 2;
        }
        for c in 0..4 {
            let j = jb + c * 16;
            // SAFETY: j + 16 <= n for the per-column vectors; each row r < R has n floats in
            // `out` starting at r * ldo, of which columns j..j + 16 are written.
            unsafe {
                let ws = _mm512_loadu_ps(w.scales.as_ptr().add(j));
                let b = _mm512_loadu_ps(bias.as_ptr().add(j));
                for (r, acc) in acc.iter().enumerate() {
                    let v = _mm512_cvtepi32_ps(acc[c]);
                    let s = _mm512_mul_ps(ws, _mm512_set1_ps(*a_scales.add(r)));
                    let y = _mm512_fmadd_ps(v, s, b);
                    _mm512_storeu_ps(out.add(r * ldo + c * 16), y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, mul: usize, m: usize, scale: f32, off: f32) -> Vec<f32> {
        (0..len).map(|i| ((i * mul) % m) as f32 * scale - off).collect()
    }

    #[test]
    fn u8_activations_agree_across_kernels_and_approximate_f32() {
        // n = 192: three 64-column blocks; m = 17: tiles of 6, 6, 5 rows; residual and GELU;
        // k = 202 takes the i16 kernels (`vpdpwssd` on AVX-512 VNNI) for lack of whole quads.
        for k in [200, 202] {
            u8_case(17, 192, k);
        }
    }

    fn u8_case(m: usize, n: usize, k: usize) {
        let w = data(n * k, 7919, 255, 0.01, 1.27);
        // Mostly positive inputs with a long tail, like GELU outputs, plus an outlier column.
        let mut x = data(m * k, 104_729, 199, 0.01, 0.17);
        for i in 0..m {
            x[i * k + 3] = -4.0 - i as f32;
        }
        let bias = data(n, 1, n, 0.01, 0.5);
        let res = data(m * n, 31, 23, 0.1, 1.0);
        let exact: Vec<f32> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum::<f32>() + bias[j]
            })
            .collect();
        let isas = [Isa::detect(), Isa::Avx2, Isa::Portable];
        for epi in [Epilogue::Bias, Epilogue::Gelu, Epilogue::Residual(&res)] {
            let mut outs = Vec::new();
            for isa in isas {
                if isa == Isa::Avx2 && !matches!(Isa::detect(), Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni) {
                    continue;
                }
                let q = QMatrix::new(isa, &w, n, k);
                for threads in [1, 2] {
                    let mut act = QAct::default();
                    quantize(isa, threads, &x, k, &q, &mut act);
                    let mut o = vec![0f32; m * n];
                    qlinear(isa, threads, &act, &q, &bias, epi, &mut o);
                    outs.push((isa, o));
                }
            }
            let (_, want) = outs.last().unwrap();
            for (isa, o) in &outs {
                for (a, b) in o.iter().zip(want) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{isa:?}: {a} vs {b}");
                }
            }
            let (mut err, mut norm) = (0f64, 0f64);
            for (ij, (&e, &p)) in exact.iter().zip(want).enumerate() {
                let e = match epi {
                    Epilogue::Bias => e,
                    Epilogue::Gelu => super::super::gelu(e),
                    Epilogue::Residual(r) => e + r[ij],
                };
                err += f64::from(p - e).powi(2);
                norm += f64::from(e).powi(2);
            }
            assert!((err / norm).sqrt() < 0.02, "relative error {}", (err / norm).sqrt());
        }
    }

    #[test]
    fn u8_codes_reconstruct_rows() {
        // k = 40: two vectors of 16 and a tail of 8 in the AVX-512 quantizer.
        let (m, k) = (5, 40);
        let mut x = data(m * k, 37, 41, 0.05, 0.3);
        x[7] = 0.0; // row 0 keeps its sign mix; row 4 all-zero below
        for v in &mut x[4 * k..] {
            *v = 0.0;
        }
        let (mut q, mut z, mut s) = (vec![0u8; m * k], vec![0i32; m], vec![0f32; m]);
        quantize_u8(Isa::Portable, &x, k, U8Out::Codes(&mut q, &mut z), &mut s);
        let mut c = vec![0i16; m * k];
        let mut s2 = vec![0f32; m];
        quantize_u8(Isa::detect(), &x, k, U8Out::Centered(&mut c), &mut s2);
        assert_eq!(s, s2);
        let (mut q3, mut z3, mut s3) = (vec![0u8; m * k], vec![0i32; m], vec![0f32; m]);
        quantize_u8(Isa::detect(), &x, k, U8Out::Codes(&mut q3, &mut z3), &mut s3);
        assert_eq!((&q, &z, &s), (&q3, &z3, &s3));
        for i in 0..m {
            for kk in 0..k {
                let (qi, ci) = (i32::from(q[i * k + kk]), i32::from(c[i * k + kk]));
                assert_eq!(qi - z[i], ci);
                let back = s[i] * ci as f32;
                assert!((back - x[i * k + kk]).abs() <= 0.5 * s[i] + 1e-6, "({i},{kk}) {back} vs {}", x[i * k + kk]);
            }
        }
        assert!(q[4 * k..].iter().all(|&v| v == q[4 * k]) && c[4 * k..].iter().all(|&v| v == 0));
    }

    /// Kernel timings for MiniLM's shapes: `cargo test --release -p keel-embed --lib -- --ignored
    /// kernel_timings --nocapture`.
    #[test]
    #[ignore]
    fn kernel_timings() {
        let isa = Isa::detect();
        let m: usize = std::env::var("KEEL_M").ok().and_then(|v| v.parse().ok()).unwrap_or(800);
        for (name, n, k) in [("qkv", 1152, 384), ("attn_out", 384, 384), ("ff1", 1536, 384), ("ff2", 384, 1536)] {
            let w = data(n * k, 7919, 255, 0.01, 1.27);
            let x = data(m * k, 104_729, 199, 0.01, 0.9);
            let bias = vec![0.1f32; n];
            let q = QMatrix::new(isa, &w, n, k);
            let mut o = vec![0f32; m * n];
            let mut line = format!("{name:>8} m {m} n {n} k {k}:");
            let mut act = QAct::default();
            let mut best = (f64::INFINITY, f64::INFINITY);
            for _ in 0..7 {
                let t = std::time::Instant::now();
                quantize(isa, 1, &x, k, &q, &mut act);
                let tq = t.elapsed().as_secs_f64();
                let t = std::time::Instant::now();
                qlinear(isa, 1, &act, &q, &bias, Epilogue::Bias, &mut o);
                let tg = t.elapsed().as_secs_f64();
                best = (best.0.min(tq), best.1.min(tg));
            }
            let gmacs = (m * n * k) as f64 / best.1 * 1e-9;
            line += &format!("  int8: quant {:.3} ms gemm {:.3} ms ({gmacs:.1} GMAC/s)", best.0 * 1e3, best.1 * 1e3);
            let wm = super::super::F32Matrix::new(isa, &w, n, k);
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                super::super::linear_f32(isa, 1, &x, &wm, &bias, Epilogue::Bias, &mut o);
                best = best.min(t.elapsed().as_secs_f64());
            }
            line += &format!("  f32: {:.3} ms ({:.1} GMAC/s)", best * 1e3, (m * n * k) as f64 / best * 1e-9);
            let wm = super::super::F32Matrix::new(Isa::Avx2, &w, n, k);
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                super::super::linear_f32(Isa::Avx2, 1, &x, &wm, &bias, Epilogue::Bias, &mut o);
                best = best.min(t.elapsed().as_secs_f64());
            }
            line += &format!("  f32-avx2: {:.3} ms ({:.1} GMAC/s)", best * 1e3, (m * n * k) as f64 / best * 1e-9);
            eprintln!("{line}");
        }
    }
}
