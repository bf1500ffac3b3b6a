//! The scalar types the trainable forward and backward run in: f32 for training, f64 for the
//! finite-difference gradient check. Matrix products go through [`Float::gemm`]: for f32 the
//! crate's `kernels::sgemm` (the `gemm` crate on AVX2 / AVX-512 CPUs), for f64 a plain loop.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};
use std::sync::OnceLock;

use crate::kernels::{self, Isa, Mat};

/// A strided view of a matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// Row-major with leading dimension `ld`.
    pub fn rows(data: &'a [T], ld: usize) -> Self {
        View { data, rs: ld, cs: 1 }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub fn transposed(data: &'a [T], ld: usize) -> Self {
        View { data, rs: 1, cs: ld }
    }
}

/// Where a product goes: a row-major `m x n` matrix with leading dimension `ld`, added to
/// (`accumulate`) or overwritten.
pub struct Out<'a, T> {
    pub data: &'a mut [T],
    pub ld: usize,
    pub accumulate: bool,
}

impl<'a, T> Out<'a, T> {
    /// The product is added to what `data` holds.
    pub fn add(data: &'a mut [T], ld: usize) -> Self {
        Out { data, ld, accumulate: true }
    }
    /// The product overwrites `data`.
    pub fn set(data: &'a mut [T], ld: usize) -> Self {
        Out { data, ld, accumulate: false }
    }
}

/// f32 or f64.
pub trait Float:
    Copy
    + Default
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn abs(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn is_finite(self) -> bool;

    /// `c[i, j] (+)= alpha * sum_k a[i, k] * b[k, j]` for the `m x n` output `c` (see [`Out`]).
    /// `threads > 1` splits the output over the current rayon pool (each element's sum over `k`
    /// runs in the same order whatever the thread count).
    fn gemm(
        threads: usize,
        mnk: (usize, usize, usize),
        a: View<'_, Self>,
        b: View<'_, Self>,
        alpha: Self,
        c: Out<'_, Self>,
    );
}

fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

impl Float for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    fn exp(self) -> f32 {
        f32::exp(self)
    }
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    fn max(self, other: f32) -> f32 {
        f32::max(self, other)
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn gemm(
        threads: usize,
        mnk: (usize, usize, usize),
        a: View<'_, f32>,
        b: View<'_, f32>,
        alpha: f32,
        c: Out<'_, f32>,
    ) {
        let a = Mat { data: a.data, rs: a.rs, cs: a.cs };
        let b = Mat { data: b.data, rs: b.rs, cs: b.cs };
        kernels::sgemm(isa(), threads, mnk, a, b, alpha, c.accumulate, c.data, c.ld);
    }
}

impl Float for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    fn from_f64(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    fn max(self, other: f64) -> f64 {
        f64::max(self, other)
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn gemm(
        _threads: usize,
        (m, n, k): (usize, usize, usize),
        a: View<'_, f64>,
        b: View<'_, f64>,
        alpha: f64,
        c: Out<'_, f64>,
    ) {
        let Out { data: c, ld: ldc, accumulate } = c;
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for kk in 0..k {
                    s += a.data[i * a.rs + kk * a.cs] * b.data[kk * b.rs + j * b.cs];
                }
                let o = &mut c[i * ldc + j];
                *o = if accumulate { *o + alpha * s } else { alpha * s };
            }
        }
    }
}

/// Abramowitz–Stegun 7.1.26 for erf (|error| < 1.5e-7), as the inference kernels compute GELU.
const AS_P: f64 = 0.327_591_1;
const AS_A: [f64; 5] = [0.254_829_592, -0.284_496_736, 1.421_413_741, -1.453_152_027, 1.061_405_429];

/// Exact-erf GELU, `0.5 x (1 + erf(x / sqrt 2))`, with erf by Abramowitz–Stegun 7.1.26.
#[inline]
pub(crate) fn gelu<T: Float>(x: T) -> T {
    let z = x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    let a = z.abs();
    let t = T::ONE / (T::ONE + T::from_f64(AS_P) * a);
    let [a1, a2, a3, a4, a5] = AS_A.map(T::from_f64);
    let poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))));
    let erf_abs = T::ONE - poly * (-(a * a)).exp();
    let erf = if z < T::ZERO { -erf_abs } else { erf_abs };
    T::from_f64(0.5) * x * (T::ONE + erf)
}

/// The derivative of [`gelu`] as computed (of the same erf approximation), so gradients are exact
/// for the function the forward evaluates.
#[inline]
pub(crate) fn gelu_grad<T: Float>(x: T) -> T {
    let z = x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    let a = z.abs();
    let p = T::from_f64(AS_P);
    let t = T::ONE / (T::ONE + p * a);
    let [a1, a2, a3, a4, a5] = AS_A.map(T::from_f64);
    let poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))));
    let (two, three, four, five) = (T::from_f64(2.0), T::from_f64(3.0), T::from_f64(4.0), T::from_f64(5.0));
    let dpoly = a1 + t * (two * a2 + t * (three * a3 + t * (four * a4 + t * five * a5)));
    let e = (-(a * a)).exp();
    let erf_abs = T::ONE - poly * e;
    let erf = if z < T::ZERO { -erf_abs } else { erf_abs };
    // d erf_abs / da, with dt/da = -p t²; erf is odd, so d erf / dz is this at |z|.
    let derf = e * (p * t * t * dpoly + two * a * poly);
    let half = T::from_f64(0.5);
    half * (T::ONE + erf) + half * x * derf * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_grad_matches_finite_differences() {
        for &x in &[-4.0, -1.3, -0.2, 0.05, 0.7, 2.5, 6.0] {
            let h = 1e-6;
            let fd = (gelu(x + h) - gelu(x - h)) / (2.0 * h);
            let g = gelu_grad(x);
            assert!((fd - g).abs() < 1e-8, "x {x}: fd {fd} analytic {g}");
        }
        // Close to the exact GELU: erf(1/sqrt 2) = 0.682689492137...
        assert!((gelu(1.0f64) - 0.5 * 1.682_689_492_137_086).abs() < 1e-7);
    }

    #[test]
    fn gemm_f32_matches_f64_loop() {
        let (m, n, k) = (5, 7, 9);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0).collect();
        let mut c32 = vec![1f32; m * n];
        // c += 0.5 * a · bᵀ with b stored n x k.
        f32::gemm(1, (m, n, k), View::rows(&a, k), View::transposed(&b, k), 0.5, Out::add(&mut c32, n));
        let a64: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
        let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
        let mut c64 = vec![1f64; m * n];
        f64::gemm(1, (m, n, k), View::rows(&a64, k), View::transposed(&b64, k), 0.5, Out::add(&mut c64, n));
        for (x, y) in c32.iter().zip(&c64) {
            assert!((f64::from(*x) - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}
