//! Limited-memory BFGS with a strong-Wolfe line search (Nocedal & Wright, *Numerical
//! Optimization*, 2nd ed., algorithms 7.4, 3.5 and 3.6).

use serde::{Deserialize, Serialize};

/// Why the optimiser stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The largest gradient component fell to the tolerance: converged.
    GradientTolerance,
    /// The objective stopped decreasing (relative change below `ftol`, or no step along the
    /// search direction decreased it): the optimum is reached to floating-point precision.
    NoProgress,
    /// The iteration budget ran out first.
    MaxIterations,
}

pub(crate) struct Params {
    /// Number of curvature pairs kept.
    pub memory: usize,
    pub max_iter: usize,
    /// Stop when `max_i |g_i| <= gtol`.
    pub gtol: f64,
    /// Stop when `(f_prev − f) <= ftol · max(|f_prev|, |f|, 1)` (scipy's L-BFGS-B rule).
    pub ftol: f64,
}

pub(crate) struct Outcome {
    pub x: Vec<f64>,
    pub f: f64,
    pub grad_max: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub stop: StopReason,
}

const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const MAX_LINE_EVALS: usize = 40;

/// Minimises `f`, which returns the value at `x` and writes the gradient into its last argument.
pub(crate) fn minimize<F>(mut f: F, x0: Vec<f64>, p: &Params) -> Outcome
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut evaluations = 1;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho_hist: Vec<f64> = Vec::new();
    let mut d = vec![0.0; n];
    let mut iterations = 0;

    let stop = loop {
        if max_abs(&g) <= p.gtol {
            break StopReason::GradientTolerance;
        }
        if iterations >= p.max_iter {
            break StopReason::MaxIterations;
        }
        iterations += 1;

        two_loop(&g, &s_hist, &y_hist, &rho_hist, &mut d);
        let mut slope = dot(&d, &g);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (lost curvature information): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            two_loop(&g, &s_hist, &y_hist, &rho_hist, &mut d);
            slope = dot(&d, &g);
        }
        // Without curvature information the direction is −g; a unit step would be arbitrary.
        let a0 = if s_hist.is_empty() { (1.0 / norm(&g)).min(1.0) } else { 1.0 };
        let Some(step) = line_search(&mut f, &x, fx, slope, &d, a0, &mut evaluations) else {
            if s_hist.is_empty() {
                break StopReason::NoProgress;
            }
            // Retry once from steepest descent before giving up.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            continue;
        };

        let s: Vec<f64> = d.iter().map(|di| step.alpha * di).collect();
        let yv: Vec<f64> = step.g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        let yy = dot(&yv, &yv);
        let f_prev = fx;
        for (xi, si) in x.iter_mut().zip(&s) {
            *xi += si;
        }
        fx = step.f;
        g = step.g;
        if sy > 1e-10 * yy && sy > 0.0 {
            if s_hist.len() == p.memory {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(yv);
            rho_hist.push(1.0 / sy);
        }
        if f_prev - fx <= p.ftol * f_prev.abs().max(fx.abs()).max(1.0) && max_abs(&g) > p.gtol {
            break StopReason::NoProgress;
        }
    };
    Outcome { grad_max: max_abs(&g), x, f: fx, iterations, evaluations, stop }
}

/// `d = −H g`, with `H` the L-BFGS inverse-Hessian approximation scaled by `s'y / y'y`.
fn two_loop(g: &[f64], s: &[Vec<f64>], y: &[Vec<f64>], rho: &[f64], d: &mut [f64]) {
    for (di, gi) in d.iter_mut().zip(g) {
        *di = -gi;
    }
    let m = s.len();
    let mut alpha = vec![0.0; m];
    for i in (0..m).rev() {
        alpha[i] = rho[i] * dot(&s[i], d);
        axpy(-alpha[i], &y[i], d);
    }
    if let Some(last) = m.checked_sub(1) {
        let gamma = dot(&s[last], &y[last]) / dot(&y[last], &y[last]);
        d.iter_mut().for_each(|v| *v *= gamma);
    }
    for i in 0..m {
        let beta = rho[i] * dot(&y[i], d);
        axpy(alpha[i] - beta, &s[i], d);
    }
}

struct Point {
    alpha: f64,
    f: f64,
    g: Vec<f64>,
    slope: f64,
}

/// Finds a step satisfying the strong Wolfe conditions along `d`, or `None` if no step with
/// sufficient decrease was found.
fn line_search<F>(f: &mut F, x: &[f64], f0: f64, slope0: f64, d: &[f64], a0: f64, evals: &mut usize) -> Option<Point>
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let mut xa = vec![0.0; x.len()];
    let mut eval = |alpha: f64| -> Point {
        for ((xi, x0), di) in xa.iter_mut().zip(x).zip(d) {
            *xi = x0 + alpha * di;
        }
        let mut g = vec![0.0; x.len()];
        let fa = f(&xa, &mut g);
        *evals += 1;
        Point { alpha, f: fa, slope: dot(&g, d), g }
    };
    let armijo = |p: &Point| p.f.is_finite() && p.f <= f0 + C1 * p.alpha * slope0;
    let curvature = |p: &Point| p.slope.abs() <= -C2 * slope0;

    let mut prev = Point { alpha: 0.0, f: f0, g: Vec::new(), slope: slope0 };
    let mut alpha = a0;
    let mut used = 0;
    // Bracketing phase (algorithm 3.5).
    let (mut lo, mut hi) = loop {
        if used == MAX_LINE_EVALS {
            return None;
        }
        used += 1;
        let cur = eval(alpha);
        if !cur.f.is_finite() {
            // Overflow: the step is far too long; shrink towards the last good point.
            alpha = prev.alpha + 0.1 * (alpha - prev.alpha);
            continue;
        }
        if !armijo(&cur) || (used > 1 && cur.f >= prev.f) {
            break (prev, cur);
        }
        if curvature(&cur) {
            return Some(cur);
        }
        if cur.slope >= 0.0 {
            break (cur, prev);
        }
        alpha = cur.alpha * 2.0;
        prev = cur;
    };
    // Zoom phase (algorithm 3.6): `lo` satisfies Armijo and has the lowest value so far.
    while used < MAX_LINE_EVALS {
        used += 1;
        let (a_min, a_max) = (lo.alpha.min(hi.alpha), lo.alpha.max(hi.alpha));
        let width = a_max - a_min;
        if width <= f64::EPSILON * a_max {
            break;
        }
        let mut trial = cubic_min(&lo, &hi);
        if !(trial > a_min + 0.1 * width && trial < a_max - 0.1 * width) {
            trial = 0.5 * (lo.alpha + hi.alpha);
        }
        let cur = eval(trial);
        if !armijo(&cur) || cur.f >= lo.f {
            hi = cur;
        } else {
            if curvature(&cur) {
                return Some(cur);
            }
            if cur.slope * (hi.alpha - lo.alpha) >= 0.0 {
                hi = lo;
            }
            lo = cur;
        }
    }
    // Out of budget: accept the best point if it decreased the objective at all.
    (lo.alpha > 0.0 && lo.f < f0).then_some(lo)
}

/// Minimiser of the cubic matching values and slopes at two points (N&W eq. 3.59); NaN if none.
fn cubic_min(a: &Point, b: &Point) -> f64 {
    let d1 = a.slope + b.slope - 3.0 * (a.f - b.f) / (a.alpha - b.alpha);
    let disc = d1 * d1 - a.slope * b.slope;
    if disc.is_nan() || disc < 0.0 {
        return f64::NAN;
    }
    let d2 = (b.alpha - a.alpha).signum() * disc.sqrt();
    b.alpha - (b.alpha - a.alpha) * (b.slope + d2 - d1) / (b.slope - a.slope + 2.0 * d2)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    crate::objective::dot(a, b)
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rosenbrock function: a curved valley that plain gradient descent crawls along.
    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let (a, b) = (x[0], x[1]);
        g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
        g[1] = 200.0 * (b - a * a);
        (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
    }

    #[test]
    fn minimises_rosenbrock() {
        let p = Params { memory: 10, max_iter: 200, gtol: 1e-8, ftol: 0.0 };
        let out = minimize(rosenbrock, vec![-1.2, 1.0], &p);
        assert_eq!(out.stop, StopReason::GradientTolerance);
        assert!((out.x[0] - 1.0).abs() < 1e-6 && (out.x[1] - 1.0).abs() < 1e-6, "{:?}", out.x);
        assert!(out.iterations < 100, "took {} iterations", out.iterations);
    }

    #[test]
    fn stops_at_max_iter() {
        let p = Params { memory: 10, max_iter: 3, gtol: 1e-12, ftol: 0.0 };
        let out = minimize(rosenbrock, vec![-1.2, 1.0], &p);
        assert_eq!(out.stop, StopReason::MaxIterations);
        assert_eq!(out.iterations, 3);
    }

    #[test]
    fn quadratic_converges_in_few_steps() {
        // f = Σ c_i x_i² / 2 with condition number 100: steepest descent would need thousands
        // of steps for this accuracy; quasi-Newton a few per dimension.
        let c = [1.0, 3.0, 10.0, 30.0, 100.0];
        let f = |x: &[f64], g: &mut [f64]| {
            let mut v = 0.0;
            for i in 0..x.len() {
                g[i] = c[i] * x[i];
                v += 0.5 * c[i] * x[i] * x[i];
            }
            v
        };
        let p = Params { memory: 10, max_iter: 100, gtol: 1e-10, ftol: 0.0 };
        let out = minimize(f, vec![1.0; 5], &p);
        assert_eq!(out.stop, StopReason::GradientTolerance);
        assert!(out.iterations <= 40, "took {} iterations", out.iterations);
    }
}
