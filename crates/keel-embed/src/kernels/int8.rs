//! Int8-weight GEMM: per-output-channel symmetric int8 weights, per-row dynamic activation
//! quantization to 14-bit integers, i32 accumulation (AVX-512 VNNI `vpdpwssd`, or AVX2
//! `vpmaddwd` + `vpaddd` in `super::avx2`), dequantization fused with the bias and the epilogue.
//!
//! Why 14-bit activations and not 8-bit: with 8-bit activations (`vpdpbusd`) MiniLM's short
//! inputs fell to cosine 0.985 against the f32 reference (outlier channels make per-row scales
//! coarse), below the 0.99 bound. 14 bits keep activation error negligible and
//! `k * 127 * 8191 < 2^31`, so the i32 sums cannot overflow for k up to 2,064.

use rayon::prelude::*;

use super::{Epilogue, Isa};

const ROUND_MAGIC: f32 = 12_582_912.0;

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
        QMatrix { n, k, scales, plain, packed }
    }
}

/// Largest activation level for inner dimension `k`: `k * 127 * level` must fit in an i32.
fn act_levels(k: usize) -> f32 {
    ((i32::MAX as usize / (127 * k.max(1))).min(8191)) as f32
}

/// Quantizes each row of `x` (`rows x k`) symmetrically to `round(x / s)` with
/// `s = max|x_row| / levels`, writing the integers to `out` and `s` to `scales`.
pub fn quantize_rows(isa: Isa, x: &[f32], k: usize, out: &mut [i16], scales: &mut [f32]) {
    let rows = x.len() / k;
    assert!(x.len() == rows * k && out.len() >= rows * k && scales.len() >= rows);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` returns these only when the CPU has AVX2 + FMA (AVX-512 CPUs have
        // them too); the function is safe Rust compiled with those features.
        Isa::Avx512Vnni | Isa::Avx512 | Isa::Avx2 => unsafe { quantize_rows_avx2(x, k, out, scales) },
        _ => quantize_body(x, k, out, scales),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_rows_avx2(x: &[f32], k: usize, out: &mut [i16], scales: &mut [f32]) {
    quantize_body(x, k, out, scales)
}

#[inline(always)]
fn quantize_body(x: &[f32], k: usize, out: &mut [i16], scales: &mut [f32]) {
    let levels = act_levels(k);
    for ((row, q), s) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)).zip(scales.iter_mut()) {
        let mut mx = [0f32; 8];
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
        for c in chunks {
            for l in 0..8 {
                mx[l] = mx[l].max(c[l].abs());
            }
        }
        let max = mx.iter().fold(tail, |m, &v| m.max(v));
        let scale = if max > 0.0 { max / levels } else { 1.0 };
        *s = scale;
        let inv = 1.0 / scale;
        for (o, v) in q.iter_mut().zip(row) {
            // Round half to even via the 1.5 * 2^23 trick; the clamp guards the edge.
            let r = ((v * inv + ROUND_MAGIC) - ROUND_MAGIC).clamp(-levels, levels);
            *o = r as i16;
        }
    }
}

/// `out[i][j] = epi(a_scales[i] * w.scales[j] * sum_k a[i][k] * w[j][k] + bias[j])` for
/// `m = a_scales.len()` rows; `out` is row-major `m x n`.
#[allow(clippy::too_many_arguments)]
pub fn qgemm(
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

    /// Rows per micro-tile: 6 rows x 64 columns = 24 zmm accumulators.
    const MR: usize = 6;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn qgemm(a: &[i16], a_scales: &[f32], w: &QMatrix, bias: &[f32], out: &mut [f32]) {
        let (m, n, k) = (a_scales.len(), w.n, w.k);
        let block = 16 * k; // values per 16-column block
        for jb in (0..n).step_by(64) {
            // SAFETY (all pointer arithmetic below): jb + 64 <= n, so the four 16-column blocks
            // starting at jb / 16 lie inside `packed`, and the column vectors are in bounds.
            let wp = unsafe { w.packed.as_ptr().add((jb / 16) * block) };
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(MR);
                let ap = unsafe { a.as_ptr().add(i * k) };
                let op = unsafe { out.as_mut_ptr().add(i * n + jb) };
                let sp = unsafe { a_scales.as_ptr().add(i) };
                unsafe {
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

    /// `R` rows x 64 columns: accumulate over all of k, then dequantize, add bias, store.
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

    #[test]
    fn vnni_and_portable_agree_and_approximate_f32() {
        let (m, n, k) = (13, 128, 96);
        let w: Vec<f32> = (0..n * k).map(|i| (((i * 7919) % 255) as f32 - 127.0) * 0.01).collect();
        let x: Vec<f32> = (0..m * k).map(|i| (((i * 104_729) % 199) as f32 - 99.0) * 0.02).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1).collect();
        let q = QMatrix::new(Isa::detect(), &w, n, k);
        let qp = QMatrix::new(Isa::Portable, &w, n, k);
        let mut a = vec![0i16; m * k];
        let mut s = vec![0f32; m];
        quantize_rows(Isa::detect(), &x, k, &mut a, &mut s);
        let (mut a2, mut s2) = (vec![0i16; m * k], vec![0f32; m]);
        quantize_rows(Isa::Portable, &x, k, &mut a2, &mut s2);
        assert_eq!((&a, &s), (&a2, &s2));
        let mut fast = vec![0f32; m * n];
        let mut slow = vec![0f32; m * n];
        qgemm(Isa::detect(), 2, &a, &s, &q, &bias, Epilogue::Bias, &mut fast);
        qgemm(Isa::Portable, 1, &a, &s, &qp, &bias, Epilogue::Bias, &mut slow);
        let (mut err, mut norm) = (0f64, 0f64);
        for i in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum::<f32>() + bias[j];
                let (f, p) = (fast[i * n + j], slow[i * n + j]);
                assert!((f - p).abs() <= 1e-3 * (1.0 + p.abs()), "({i},{j}) {f} vs {p}");
                err += f64::from(p - exact).powi(2);
                norm += f64::from(exact).powi(2);
            }
        }
        assert!((err / norm).sqrt() < 0.02, "relative error {}", (err / norm).sqrt());
    }
}
