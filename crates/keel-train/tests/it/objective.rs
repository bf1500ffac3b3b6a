//! The blocked objective kernel against a plain reference, across shapes, thread counts and
//! instruction sets.

use keel_core::Matrix;
use keel_train::{LrConfig, Objective, fit};

use crate::{Rng, gaussian_blobs, names};

/// The objective and gradient written out row by row in the most direct way.
fn reference(x: &Matrix, y: &[usize], k: usize, l2: f64, params: &[f64]) -> (f64, Vec<f64>) {
    let d = x.cols();
    let n = x.rows() as f64;
    let mut grad = vec![0.0; k * d + k];
    let mut loss = 0.0;
    for i in 0..x.rows() {
        let xi: Vec<f64> = x.row(i).iter().map(|&v| f64::from(v)).collect();
        let z: Vec<f64> =
            (0..k).map(|c| (0..d).map(|j| params[c * d + j] * xi[j]).sum::<f64>() + params[k * d + c]).collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - z[y[i]];
        for c in 0..k {
            let r = (z[c] - lse).exp() - f64::from(u8::from(c == y[i]));
            for j in 0..d {
                grad[c * d + j] += r * xi[j] / n;
            }
            grad[k * d + c] += r / n;
        }
    }
    let mut penalty = 0.0;
    for j in 0..k * d {
        grad[j] += l2 * params[j];
        penalty += params[j] * params[j];
    }
    (loss / n + 0.5 * l2 * penalty, grad)
}

#[test]
fn blocked_kernel_matches_the_reference_on_awkward_shapes() {
    // Row counts that leave partial tiles and empty blocks, class and feature counts that are
    // not multiples of the kernels' steps.
    for (n, k, d) in [(1usize, 2usize, 1usize), (7, 3, 5), (37, 5, 13), (130, 2, 384), (263, 9, 17), (1031, 20, 40)] {
        let per = n.div_ceil(k);
        let (x, mut y) = gaussian_blobs(per, k, d, 2.0, n as u64);
        y.truncate(n);
        let x = x.select_rows(&(0..n).collect::<Vec<_>>());
        let l2 = 0.01;
        let obj = Objective::new(&x, &y, k, l2).unwrap();
        let mut rng = Rng(n as u64 + 1);
        let params: Vec<f64> = (0..obj.n_params()).map(|_| 0.3 * rng.normal()).collect();
        let mut g = vec![0.0; params.len()];
        let v = obj.eval(&params, &mut g);
        let (want, want_g) = reference(&x, &y, k, l2, &params);
        assert!((v.total - want).abs() <= 1e-12 * want.abs().max(1.0), "{n}x{d}x{k}: {} vs {want}", v.total);
        for (i, (a, b)) in g.iter().zip(&want_g).enumerate() {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{n}x{d}x{k} component {i}: {a} vs {b}");
        }
    }
}

#[test]
fn vector_and_portable_kernels_give_identical_bits() {
    // On a CPU with AVX(-512) the default objective runs that compilation; `portable()` forces
    // the baseline one, `avx256()` the 256-bit one. Equal bits mean models trained on any of
    // these kinds of machine are identical.
    for (n, k, d) in [(37usize, 5usize, 13usize), (2000, 20, 384), (999, 2, 50)] {
        let (x, y) = gaussian_blobs(n / k, k, d, 3.0, 40 + n as u64);
        let fast = Objective::new(&x, &y, k, 1e-4).unwrap();
        let mut rng = Rng(7);
        let params: Vec<f64> = (0..fast.n_params()).map(|_| 0.1 * rng.normal()).collect();
        let (mut g1, mut g2) = (vec![0.0; params.len()], vec![0.0; params.len()]);
        let v1 = fast.eval(&params, &mut g1);
        let v2 = Objective::new(&x, &y, k, 1e-4).unwrap().portable().with_threads(1).eval(&params, &mut g2);
        assert_eq!(v1.total.to_bits(), v2.total.to_bits(), "{n}x{d}x{k}");
        assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}x{d}x{k}: gradients differ");
        // And the 256-bit compilation where the default is the 512-bit one.
        let mut g3 = vec![0.0; params.len()];
        let v3 = Objective::new(&x, &y, k, 1e-4).unwrap().avx256().eval(&params, &mut g3);
        assert_eq!(v1.total.to_bits(), v3.total.to_bits(), "{n}x{d}x{k} (AVX)");
        assert!(g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}x{d}x{k}: AVX gradients differ");
    }
}

#[test]
fn fitted_weights_are_identical_whatever_the_thread_count() {
    // Large enough that the objective would use threads by default; the whole optimisation
    // path, not only one gradient, must not depend on how many did the work.
    let (x, y) = gaussian_blobs(700, 6, 64, 3.0, 77);
    let fit_with = |threads| {
        let cfg = LrConfig { threads: Some(threads), ..LrConfig::default() };
        let (m, r) = fit(&x, &y, names(6), &cfg).unwrap();
        (m.to_json_bytes(), r)
    };
    let one = fit_with(1);
    assert!(one.1.converged, "{:?}", one.1);
    for threads in [2, 3, 16] {
        let many = fit_with(threads);
        assert!(one.0 == many.0, "weights differ with {threads} threads");
        assert_eq!(one.1, many.1, "{threads} threads");
    }
    let (default, _) = fit(&x, &y, names(6), &LrConfig::default()).unwrap();
    assert!(default.to_json_bytes() == one.0);
}
