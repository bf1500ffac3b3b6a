//! Choosing the L2 strength of logistic regression by stratified k-fold cross-validation on
//! the training split.

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::rng;
use crate::{FitReport, LogisticRegression, LrConfig, TrainError, fit, fit_from};

/// The L2 strengths [`fit_cv`] tries when given an empty grid.
pub const DEFAULT_L2_GRID: [f64; 5] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2];

/// One grid point's cross-validated scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvPoint {
    pub l2: f64,
    /// Held-out log loss pooled over all folds (each row scored once, by the model that did not
    /// see it).
    pub log_loss: f64,
    pub accuracy: f64,
}

/// What cross-validation found, and the final fit on all rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    pub folds: usize,
    pub grid: Vec<CvPoint>,
    /// The grid value with the lowest pooled held-out log loss (the larger `l2` on ties).
    pub chosen_l2: f64,
    pub fit: FitReport,
}

/// Fold of each row: within each class, rows are shuffled by a seeded generator and dealt
/// round-robin, so every fold has each class in proportion (stratified) and the assignment
/// depends only on the labels and the seed.
pub fn stratified_folds(y: &[usize], folds: usize, seed: u64) -> Vec<usize> {
    let k = y.iter().copied().max().map_or(0, |m| m + 1);
    let mut rng = rng::seeded(seed);
    let mut out = vec![0; y.len()];
    let mut offset = 0;
    for c in 0..k {
        let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        rng.shuffle(&mut rows);
        for (j, &i) in rows.iter().enumerate() {
            // Continue the deal where the previous class stopped so small classes spread out.
            out[i] = (offset + j) % folds;
        }
        offset += rows.len();
    }
    out
}

/// Logistic regression with the L2 strength chosen from `grid` (empty: [`DEFAULT_L2_GRID`]) by
/// `folds`-fold stratified cross-validation on `(x, y)`, then refitted on all rows. Other
/// settings are [`LrConfig::default`]. Deterministic for a given seed.
pub fn fit_cv(
    x: &Matrix,
    y: &[usize],
    labels: Vec<String>,
    grid: &[f64],
    folds: usize,
    seed: u64,
) -> Result<(LogisticRegression, CvReport), TrainError> {
    fit_cv_with(x, y, labels, grid, folds, seed, CV_TOL)
}

/// [`fit_cv`] with the fits inside cross-validation converged to `cv_tol` instead of
/// [`CV_TOL`] (the final fit always uses [`LrConfig::default`]'s). For measuring that choice.
pub fn fit_cv_with(
    x: &Matrix,
    y: &[usize],
    labels: Vec<String>,
    grid: &[f64],
    folds: usize,
    seed: u64,
    cv_tol: f64,
) -> Result<(LogisticRegression, CvReport), TrainError> {
    let (model, report, _) = cross_validate(x, y, labels, grid, (folds, seed), cv_tol)?;
    Ok((model, report))
}

/// Held-out accuracy of every fold at every grid point of a cross-validation, for comparing
/// model families on the same folds ([`stratified_folds`] with the same seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvFolds {
    /// Held-out rows in each fold.
    pub fold_rows: Vec<usize>,
    /// `fold_accuracy[g][f]`: accuracy on fold `f`'s held-out rows at grid point `g` (the
    /// report's grid order).
    pub fold_accuracy: Vec<Vec<f64>>,
}

/// [`fit_cv`], also returning each fold's held-out accuracy at each grid point.
pub fn fit_cv_folds(
    x: &Matrix,
    y: &[usize],
    labels: Vec<String>,
    grid: &[f64],
    folds: usize,
    seed: u64,
) -> Result<(LogisticRegression, CvReport, CvFolds), TrainError> {
    cross_validate(x, y, labels, grid, (folds, seed), CV_TOL)
}

fn cross_validate(
    x: &Matrix,
    y: &[usize],
    labels: Vec<String>,
    grid: &[f64],
    (folds, seed): (usize, u64),
    cv_tol: f64,
) -> Result<(LogisticRegression, CvReport, CvFolds), TrainError> {
    if folds < 2 {
        return Err(TrainError::InvalidConfig(format!("need at least 2 folds, got {folds}")));
    }
    crate::check_labels(&labels)?;
    crate::check_xy(x, y, labels.len())?;
    if x.rows() < folds {
        return Err(TrainError::InvalidConfig(format!("{} rows cannot be cut into {folds} folds", x.rows())));
    }
    let grid: Vec<f64> = if grid.is_empty() { DEFAULT_L2_GRID.to_vec() } else { grid.to_vec() };
    let fold_of = stratified_folds(y, folds, seed);
    let shared = Folds { x, y, labels: &labels, grid: &grid, fold_of: &fold_of };
    let all: Vec<usize> = (0..folds).collect();
    let per_fold = run_folds(&shared, &all, cv_tol, (false, false));
    let (mut loss, mut hits) = (vec![0.0; grid.len()], vec![0usize; grid.len()]);
    let mut fold_rows = vec![0usize; folds];
    for &f in &fold_of {
        fold_rows[f] += 1;
    }
    let mut fold_accuracy = vec![vec![0.0; folds]; grid.len()];
    for (f, r) in per_fold.into_iter().enumerate() {
        let r = r?;
        for g in 0..grid.len() {
            let h = r.correct[g].iter().filter(|&&b| b).count();
            loss[g] += r.loss[g];
            hits[g] += h;
            fold_accuracy[g][f] = h as f64 / fold_rows[f].max(1) as f64;
        }
    }
    let n = y.len() as f64;
    let points: Vec<CvPoint> =
        (0..grid.len()).map(|g| CvPoint { l2: grid[g], log_loss: loss[g] / n, accuracy: hits[g] as f64 / n }).collect();
    let mut best = 0;
    for (i, p) in points.iter().enumerate() {
        let b = &points[best];
        if p.log_loss < b.log_loss || (p.log_loss == b.log_loss && p.l2 > b.l2) {
            best = i;
        }
    }
    let chosen_l2 = points[best].l2;
    // The final fit is converged tightly from zero, like any other fit: cross-validation only
    // chose the strength.
    let (model, fit_report) = fit(x, y, labels, &LrConfig { l2: chosen_l2, ..LrConfig::default() })?;
    let report = CvReport { folds, grid: points, chosen_l2, fit: fit_report };
    Ok((model, report, CvFolds { fold_rows, fold_accuracy }))
}

/// What every fold of cross-validation shares: the rows, the labels, the grid of strengths and
/// each row's fold.
#[derive(Clone, Copy)]
struct Folds<'a> {
    x: &'a Matrix,
    y: &'a [usize],
    labels: &'a [String],
    grid: &'a [f64],
    fold_of: &'a [usize],
}

/// One fold of a logistic-regression cross-validation ([`cross_validate_folds`]).
#[derive(Clone, Debug)]
pub struct LrFold {
    pub fold: usize,
    /// Held-out log-loss sum at each grid point (the grid's order).
    pub loss: Vec<f64>,
    /// `correct[g][r]`: whether the model at grid point `g` classified the fold's `r`-th held-out
    /// row (rows in ascending order) right.
    pub correct: Vec<Vec<bool>>,
    /// The last model of the fold's path, when asked for: to time predictions without a fit
    /// on all rows.
    pub model: Option<LogisticRegression>,
    /// False when the path stopped early (`stop_when_worse`): the grid points not reached have
    /// an infinite loss and no correct rows.
    pub complete: bool,
}

/// Cross-validates logistic regression on the folds listed in `which` of the assignment
/// `fold_of` (fold `f` trains on the rows with `fold_of[i] != f`), each along `grid` from the
/// strongest penalty down with warm starts at [`CV_TOL`]; with `stop_when_worse` a fold's path
/// stops at the first point whose held-out loss is above the previous point's (the weakest
/// penalties, the slowest fits, are then not fitted: for a quick look at a family, not for
/// choosing its strength). Several folds run on separate cores, a single fold's fit on all of
/// them; results in `which` order, the same whatever the number of cores.
pub fn cross_validate_folds(
    x: &Matrix,
    y: &[usize],
    labels: &[String],
    grid: &[f64],
    fold_of: &[usize],
    (which, keep_model, stop_when_worse): (&[usize], bool, bool),
) -> Result<Vec<LrFold>, TrainError> {
    crate::check_labels(labels)?;
    crate::check_xy(x, y, labels.len())?;
    if fold_of.len() != y.len() || grid.is_empty() {
        return Err(TrainError::InvalidConfig("one fold per row and a non-empty grid are needed".into()));
    }
    let shared = Folds { x, y, labels, grid, fold_of };
    run_folds(&shared, which, CV_TOL, (keep_model, stop_when_worse)).into_iter().collect()
}

/// Folds `which` of `p`: on separate cores (each fit single-threaded) when there are several,
/// and their results in `which` order.
fn run_folds(p: &Folds<'_>, which: &[usize], tol: f64, how: (bool, bool)) -> Vec<Result<LrFold, TrainError>> {
    let cores = crate::sparse::parallel::threads(None).min(which.len());
    // One fold alone may use every core for its fit; several share them, one each.
    let fit_threads = if cores <= 1 { None } else { Some(1) };
    crate::sparse::parallel::par_map(which.len(), cores, |i| fold_scores(p, which[i], tol, fit_threads, how))
}

/// Tolerance of the fits inside cross-validation. They only rank grid points by held-out loss,
/// which settles before the gradient reaches the final fit's `1e-6`. On Reuters R8 embeddings
/// (5,485 rows, 8 classes; `lr_bench … 1e-5`) the chosen strength was the same as with `1e-6`,
/// the pooled held-out losses agreed to 3 digits, in 0.68 of the time. Looser is wrong, not
/// just rough: at `1e-4` a warm start from the next stronger penalty already meets the
/// tolerance, so the weakest grid points stop where they began and tie with it.
pub const CV_TOL: f64 = 1e-5;

/// Fits fold `f`'s training rows along the grid, from the strongest penalty to the weakest,
/// each fit starting from the previous one's solution (a regularisation path: the optimum is
/// the same to the tolerance, reached in fewer iterations than from zero), and scores the
/// fold's held-out rows.
fn fold_scores(
    p: &Folds<'_>,
    f: usize,
    tol: f64,
    threads: Option<usize>,
    (keep_model, stop_when_worse): (bool, bool),
) -> Result<LrFold, TrainError> {
    let Folds { x, y, labels, grid, fold_of } = *p;
    let mut path: Vec<usize> = (0..grid.len()).collect();
    path.sort_by(|&a, &b| grid[b].total_cmp(&grid[a]));
    let train: Vec<usize> = (0..y.len()).filter(|&i| fold_of[i] != f).collect();
    let test: Vec<usize> = (0..y.len()).filter(|&i| fold_of[i] == f).collect();
    let ytr: Vec<usize> = train.iter().map(|&i| y[i]).collect();
    let xtr = x.select_rows(&train);
    let (mut loss, mut correct) = (vec![f64::INFINITY; grid.len()], vec![Vec::new(); grid.len()]);
    let mut start = None;
    let mut model = None;
    let mut complete = true;
    // The held-out losses of the last two points fitted.
    let mut last = (f64::INFINITY, f64::INFINITY);
    for &g in &path {
        if stop_when_worse && last.1 > last.0 {
            complete = false;
            break;
        }
        let cfg = LrConfig { l2: grid[g], tol, threads, ..LrConfig::default() };
        let (m, _, solution) = fit_from(&xtr, &ytr, labels.to_vec(), &cfg, start.take())?;
        start = Some(solution);
        loss[g] = 0.0;
        for &i in &test {
            let p = m.predict_proba(x.row(i));
            loss[g] -= f64::from(p[y[i]]).max(f64::from(f32::EPSILON)).ln();
            correct[g].push(crate::argmax(&p) == y[i]);
        }
        model = keep_model.then_some(m);
        last = (last.1, loss[g]);
    }
    Ok(LrFold { fold: f, loss, correct, model, complete })
}
