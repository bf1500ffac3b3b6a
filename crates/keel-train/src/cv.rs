//! Choosing the L2 strength of logistic regression by stratified k-fold cross-validation on
//! the training split.

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
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
    let mut rng = SplitMix64::new(seed);
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
    // Within each fold the grid is walked from the strongest penalty to the weakest, each fit
    // starting from the previous one's solution (a regularisation path): the optimum is the
    // same to the tolerance, reached in fewer iterations than from zero.
    let mut path: Vec<usize> = (0..grid.len()).collect();
    path.sort_by(|&a, &b| grid[b].total_cmp(&grid[a]));
    let (mut loss, mut hits) = (vec![0.0; grid.len()], vec![0usize; grid.len()]);
    for f in 0..folds {
        let train: Vec<usize> = (0..y.len()).filter(|&i| fold_of[i] != f).collect();
        let test: Vec<usize> = (0..y.len()).filter(|&i| fold_of[i] == f).collect();
        let ytr: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let xtr = x.select_rows(&train);
        let mut start = None;
        for &g in &path {
            let cfg = LrConfig { l2: grid[g], ..LrConfig::default() };
            let (m, _, solution) = fit_from(&xtr, &ytr, labels.clone(), &cfg, start.take())?;
            start = Some(solution);
            for &i in &test {
                let p = m.predict_proba(x.row(i));
                loss[g] -= f64::from(p[y[i]]).max(f64::from(f32::EPSILON)).ln();
                hits[g] += usize::from(crate::argmax(&p) == y[i]);
            }
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
    let (model, fit_report) = fit(x, y, labels, &LrConfig { l2: chosen_l2, ..LrConfig::default() })?;
    Ok((model, CvReport { folds, grid: points, chosen_l2, fit: fit_report }))
}
