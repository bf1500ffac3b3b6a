//! AVX2 + FMA GEMM kernels over weights packed once at load, with the bias, the residual add or
//! GELU fused into the store.
//!
//! - f32: weights packed `[n / 16][k][16]`; a 6 x 16 register tile (12 accumulators) broadcasts
//!   one activation per row and multiplies it by 16 packed weights with two FMAs.
//! - int8 weights / i16 activations (8-bit codes centred on their zero point): weights widened to i16 and packed `[n / 16][k / 2][16][2]`
//!   (the layout the AVX-512 VNNI kernel uses too); `vpmaddwd` multiplies a broadcast pair of
//!   activations by 8 columns x 2 weights and adds pairs into i32 lanes, then `vpaddd`
//!   accumulates. A 4 x 16 tile.
//!
//! Blocking: rows in blocks whose activations fit in L2 (about 192 KB), inside that every 16-column
//! panel of weights (reused from L1/L2 by every row tile of the block).
//!
//! Every function here is `unsafe` and `target_feature`-gated; the callers in `super` check the
//! CPU features and every slice length first (see the SAFETY notes there).

use std::arch::x86_64::*;

use super::EpiPtr;

/// Columns per packed panel.
pub(super) const NR: usize = 16;
const MR_F32: usize = 6;
const MR_I16: usize = 4;

/// Activation rows per block: about 192 KB of them, a multiple of `mr`.
fn row_block(k: usize, elem: usize, mr: usize) -> usize {
    ((192 * 1024 / (k * elem).max(1)) / mr).max(1) * mr
}

/// Packs a row-major `n x k` matrix (PyTorch's out x in) into `[n / 16][k][16]`.
pub(super) fn pack_f32(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!(w.len() == n * k && n.is_multiple_of(NR));
    let mut p = vec![0f32; n * k];
    for jb in 0..n / NR {
        for kk in 0..k {
            for jj in 0..NR {
                p[(jb * k + kk) * NR + jj] = w[(jb * NR + jj) * k + kk];
            }
        }
    }
    p
}

/// `out[i][j] = epi(bias[j] + sum_k a[i][k] * w[j][k])` for `m` rows.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` holds `m * k` values, `packed` is `pack_f32` of an `n x k`
/// matrix with `n % 16 == 0`, `bias` has `n` values, `out` (and the residual, if any) `m * n`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn sgemm_packed(
    a: &[f32],
    m: usize,
    k: usize,
    packed: &[f32],
    n: usize,
    bias: &[f32],
    epi: EpiPtr,
    out: &mut [f32],
) {
    debug_assert!(a.len() >= m * k && packed.len() == n * k && bias.len() == n && out.len() >= m * n);
    let mc = row_block(k, 4, MR_F32);
    let mut i0 = 0;
    while i0 < m {
        let end = (i0 + mc).min(m);
        for jb in 0..n / NR {
            let j = jb * NR;
            // SAFETY: jb < n / 16, so the panel (k * 16 values) lies inside `packed`.
            let bp = unsafe { packed.as_ptr().add(jb * k * NR) };
            let mut i = i0;
            while i < end {
                let r = (end - i).min(MR_F32);
                // SAFETY: rows i..i + r < m and columns j..j + 16 <= n are inside a, out and the
                // residual; bias has n values.
                unsafe {
                    let ap = a.as_ptr().add(i * k);
                    let op = out.as_mut_ptr().add(i * n + j);
                    let bi = bias.as_ptr().add(j);
                    let e = epi.offset(i * n + j);
                    match r {
                        6 => tile_f32::<6>(ap, k, bp, bi, e, op, n),
                        5 => tile_f32::<5>(ap, k, bp, bi, e, op, n),
                        4 => tile_f32::<4>(ap, k, bp, bi, e, op, n),
                        3 => tile_f32::<3>(ap, k, bp, bi, e, op, n),
                        2 => tile_f32::<2>(ap, k, bp, bi, e, op, n),
                        _ => tile_f32::<1>(ap, k, bp, bi, e, op, n),
                    }
                }
                i += r;
            }
        }
        i0 = end;
    }
}

/// `R` rows x 16 columns of the f32 GEMM: bias, then the k products, then the epilogue.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` points at `R` rows of `k` activations at stride `k`, `bp` at
/// one packed panel of `k * 16` weights, `bias` at 16 values, `out` at `R` rows of 16 writable
/// floats at stride `ldo`, and a residual `epi` at the same layout as `out` (as
/// [`sgemm_packed`] passes them).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32<const R: usize>(
    a: *const f32,
    k: usize,
    bp: *const f32,
    bias: *const f32,
    epi: EpiPtr,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: (the whole body) the caller guarantees R rows of k activations at stride k, a panel of
    // k * 16 weights, 16 bias values, and R rows of 16 outputs (and residuals) at stride ldo.
    unsafe {
        let b0 = _mm256_loadu_ps(bias);
        let b1 = _mm256_loadu_ps(bias.add(8));
        let mut acc = [[b0, b1]; R];
        let rows: [*const f32; R] = std::array::from_fn(|r| a.add(r * k));
        let mut w = bp;
        for kk in 0..k {
            let w0 = _mm256_loadu_ps(w);
            let w1 = _mm256_loadu_ps(w.add(8));
            w = w.add(NR);
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let x = _mm256_broadcast_ss(&*row.add(kk));
                acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            store(out.add(r * ldo), acc[0], acc[1], epi, r * ldo);
        }
    }
}

/// Stores 16 floats at `o`, applying the epilogue (`off` is the offset from the tile origin).
///
/// # Safety
/// The CPU has AVX2 (its only callers are the `avx2,fma` tiles above, into which it inlines);
/// `o` points at 16 writable floats and, for [`EpiPtr::Residual`], the residual pointer plus
/// `off` at 16 readable ones.
#[inline(always)]
unsafe fn store(o: *mut f32, mut y0: __m256, mut y1: __m256, epi: EpiPtr, off: usize) {
    // SAFETY: the caller guarantees 16 writable floats at `o` and, for a residual, 16 readable
    // floats at the same offset of the residual.
    unsafe {
        match epi {
            EpiPtr::Bias => {}
            EpiPtr::Residual(res) => {
                y0 = _mm256_add_ps(y0, _mm256_loadu_ps(res.add(off)));
                y1 = _mm256_add_ps(y1, _mm256_loadu_ps(res.add(off + 8)));
            }
            EpiPtr::Gelu => {
                let mut t = [0f32; 16];
                _mm256_storeu_ps(t.as_mut_ptr(), y0);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), y1);
                super::gelu_body(&mut t);
                y0 = _mm256_loadu_ps(t.as_ptr());
                y1 = _mm256_loadu_ps(t.as_ptr().add(8));
            }
        }
        _mm256_storeu_ps(o, y0);
        _mm256_storeu_ps(o.add(8), y1);
    }
}

/// `out[i][j] = epi(bias[j] + a_scales[i] * w_scales[j] * sum_k a[i][k] * w[j][k])`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` holds `m * k` i16 values with |a| small enough that the i32
/// sums cannot overflow, `packed` is the `[n / 16][k / 2][16][2]` packing of an `n x k` matrix
/// (`n % 16 == 0`, `k % 2 == 0`), `a_scales` has `m` values, `w_scales` and `bias` `n`, `out` (and
/// the residual) `m * n`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn qgemm_packed(
    a: &[i16],
    a_scales: &[f32],
    k: usize,
    packed: &[i16],
    w_scales: &[f32],
    n: usize,
    bias: &[f32],
    epi: EpiPtr,
    out: &mut [f32],
) {
    let m = a_scales.len();
    debug_assert!(a.len() >= m * k && packed.len() == n * k && bias.len() == n && out.len() >= m * n);
    let mc = row_block(k, 2, MR_I16);
    let mut i0 = 0;
    while i0 < m {
        let end = (i0 + mc).min(m);
        for jb in 0..n / NR {
            let j = jb * NR;
            // SAFETY: the panel of 16 columns x k values lies inside `packed`.
            let wp = unsafe { packed.as_ptr().add(jb * k * NR) };
            let mut i = i0;
            while i < end {
                let r = (end - i).min(MR_I16);
                // SAFETY: rows i..i + r < m, columns j..j + 16 <= n.
                unsafe {
                    let ap = a.as_ptr().add(i * k);
                    let op = out.as_mut_ptr().add(i * n + j);
                    let sa = a_scales.as_ptr().add(i);
                    let sw = w_scales.as_ptr().add(j);
                    let bi = bias.as_ptr().add(j);
                    let e = epi.offset(i * n + j);
                    match r {
                        4 => tile_i16::<4>(ap, k, wp, sa, sw, bi, e, op, n),
                        3 => tile_i16::<3>(ap, k, wp, sa, sw, bi, e, op, n),
                        2 => tile_i16::<2>(ap, k, wp, sa, sw, bi, e, op, n),
                        _ => tile_i16::<1>(ap, k, wp, sa, sw, bi, e, op, n),
                    }
                }
                i += r;
            }
        }
        i0 = end;
    }
}

/// `R` rows x 16 columns of the int8-weight GEMM: i32 sums over k by `vpmaddwd`, then the two
/// scales, the bias and the epilogue.
///
/// # Safety
/// The CPU has AVX2 and FMA; `k` is even; `a` points at `R` rows of `k` i16 activations at
/// stride `k`, `wp` at one packed panel of `k * 16` i16 weights, `a_scales` at `R` values,
/// `w_scales` and `bias` at 16, `out` at `R` rows of 16 writable floats at stride `ldo`, and a
/// residual `epi` at the same layout as `out` (as [`qgemm_packed`] passes them).
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_i16<const R: usize>(
    a: *const i16,
    k: usize,
    wp: *const i16,
    a_scales: *const f32,
    w_scales: *const f32,
    bias: *const f32,
    epi: EpiPtr,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: (the whole body) as for `tile_f32`, with k / 2 pairs per row and a panel of k * 16 i16.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let rows: [*const i16; R] = std::array::from_fn(|r| a.add(r * k));
        let mut w = wp;
        let mut kk = 0;
        while kk < k {
            let w0 = _mm256_loadu_si256(w as *const __m256i);
            let w1 = _mm256_loadu_si256(w.add(NR) as *const __m256i);
            w = w.add(2 * NR);
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let x = _mm256_set1_epi32((row.add(kk) as *const i32).read_unaligned());
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x, w0));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x, w1));
            }
            kk += 2;
        }
        let (ws0, ws1) = (_mm256_loadu_ps(w_scales), _mm256_loadu_ps(w_scales.add(8)));
        let (b0, b1) = (_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8)));
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm256_set1_ps(*a_scales.add(r));
            let y0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[0]), _mm256_mul_ps(ws0, s), b0);
            let y1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[1]), _mm256_mul_ps(ws1, s), b1);
            store(out.add(r * ldo), y0, y1, epi, r * ldo);
        }
    }
}

/// Self-attention of one head over one sequence for head size `8 * D8`: q, k, v rows at stride
/// `ld`, `n` rows of output at stride `ldo`; `row` is scratch for `n` scores.
///
/// # Safety
/// The CPU has AVX2 and FMA; q, k and v hold `(n - 1) * ld + 8 * D8` values, `row` at least
/// `n`, `out` `(n - 1) * ldo + 8 * D8`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn attend<const D8: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ld: usize,
    n: usize,
    scale: f32,
    row: &mut [f32],
    out: &mut [f32],
    ldo: usize,
) {
    let (qp, kp, vp, op, sp) = (q.as_ptr(), k.as_ptr(), v.as_ptr(), out.as_mut_ptr(), row.as_mut_ptr());
    // SAFETY: (the whole body) every row index is below n, every column below 8 * D8, so each
    // access stays inside the lengths the caller guarantees.
    unsafe {
        for i in 0..n {
            let mut qi = [_mm256_setzero_ps(); D8];
            for (c, qc) in qi.iter_mut().enumerate() {
                *qc = _mm256_loadu_ps(qp.add(i * ld + 8 * c));
            }
            // No closure: closures do not inherit `target_feature`.
            macro_rules! dot {
                ($j:expr) => {{
                    let kj = kp.add($j * ld);
                    let mut acc = _mm256_mul_ps(qi[0], _mm256_loadu_ps(kj));
                    for (c, qc) in qi.iter().enumerate().skip(1) {
                        acc = _mm256_fmadd_ps(*qc, _mm256_loadu_ps(kj.add(8 * c)), acc);
                    }
                    acc
                }};
            }
            let mut j = 0;
            while j + 4 <= n {
                // Four dot products reduced together: hadd pairs, then add the 128-bit halves.
                let (a0, a1, a2, a3) = (dot!(j), dot!(j + 1), dot!(j + 2), dot!(j + 3));
                let h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
                let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
                _mm_storeu_ps(sp.add(j), _mm_mul_ps(s, _mm_set1_ps(scale)));
                j += 4;
            }
            while j < n {
                let a = dot!(j);
                let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
                let s = _mm_hadd_ps(s, s);
                let s = _mm_hadd_ps(s, s);
                *sp.add(j) = _mm_cvtss_f32(s) * scale;
                j += 1;
            }
            super::softmax_body(std::slice::from_raw_parts_mut(sp, n));
            let mut o = [_mm256_setzero_ps(); D8];
            for j in 0..n {
                let p = _mm256_set1_ps(*sp.add(j));
                let vj = vp.add(j * ld);
                for (c, oc) in o.iter_mut().enumerate() {
                    *oc = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj.add(8 * c)), *oc);
                }
            }
            for (c, oc) in o.iter().enumerate() {
                _mm256_storeu_ps(op.add(i * ldo + 8 * c), *oc);
            }
        }
    }
}
