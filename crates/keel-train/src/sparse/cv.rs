//! Cross-validation of the text-only and combined models fold by fold, on texts read once: the
//! caller (model selection) decides which folds and families to run, and in which stages.

use keel_core::Matrix;

use super::features::{Analyzer, Corpus, Csr, DenseBlock};
use super::parallel::{par_map, threads};
use super::solver::{Dcd, Rows};
use super::{
    SparseConfig, SparseFitReport, SparseModel, check, check_c, positive_class, predicted, problem_seed, problems,
};
use crate::{TrainError, rng};

/// The two models over TF-IDF n-grams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseFamily {
    /// TF-IDF n-grams only.
    Text,
    /// TF-IDF n-grams and the text's embedding (scaled by `dense_scale`) in one linear SVM.
    Combined,
}

/// Training texts tokenised once into term counts (every term, before any document-frequency
/// cut): every fold of both families and the final fit draw their vocabulary and rows from it.
pub struct SparseCorpus {
    pub(super) corpus: Corpus,
    cfg: SparseConfig,
}

/// One family's held-out result on one fold.
pub struct SparseFold {
    pub fold: usize,
    pub family: SparseFamily,
    /// `correct[g][r]`: whether the model at grid point `g` classified the fold's `r`-th
    /// held-out row (rows in ascending order) right.
    pub correct: Vec<Vec<bool>>,
    /// The model at the last grid point, fitted on the fold's training rows, when asked for
    /// (to time predictions without a fit on all rows).
    pub model: Option<SparseModel>,
}

/// One problem's held-out decision values at each grid point, and its final `w` when kept.
type Solved = (Vec<Vec<f32>>, Option<Vec<f32>>);

/// One fold's matrices: its vocabulary's TF-IDF rows for training and held-out rows, and the
/// embedding blocks when a combined task reads them.
struct FoldData {
    vocab: super::features::Vocabulary,
    train: Vec<usize>,
    x_train: Csr,
    x_test: Csr,
    dense: Option<(DenseBlock, DenseBlock)>,
}

impl SparseCorpus {
    /// Tokenises `texts` with `cfg`'s analyzer (on up to `cfg.threads` cores).
    pub fn new<S: AsRef<str> + Sync>(texts: &[S], cfg: &SparseConfig) -> Result<Self, TrainError> {
        Analyzer::from(cfg).check().map_err(TrainError::InvalidConfig)?;
        Ok(Self { corpus: Corpus::new(texts, Analyzer::from(cfg), cfg.threads), cfg: cfg.clone() })
    }

    /// Texts read.
    pub fn len(&self) -> usize {
        self.corpus.docs.len()
    }

    /// Whether no text was read.
    pub fn is_empty(&self) -> bool {
        self.corpus.docs.is_empty()
    }

    fn check_dense(&self, dense: Option<&Matrix>) -> Result<(), TrainError> {
        match dense {
            Some(m) if m.rows() != self.len() || m.cols() == 0 => Err(TrainError::InvalidConfig(format!(
                "the combined model needs one embedding per text: {} texts, {}×{} embeddings",
                self.len(),
                m.rows(),
                m.cols()
            ))),
            Some(_) if !(self.cfg.dense_scale.is_finite() && self.cfg.dense_scale > 0.0) => {
                Err(TrainError::InvalidConfig(format!("dense_scale must be > 0, got {}", self.cfg.dense_scale)))
            }
            _ => Ok(()),
        }
    }

    /// Cross-validates each `(fold, family)` of `tasks` along `grid` (ascending, each fit
    /// warm-started from the previous one at `cfg.cv_tol`): fold `f` trains on the rows with
    /// `fold_of[i] != f` (its own vocabulary and idf) and scores the others. `dense` is the
    /// embedding matrix (needed by combined tasks). All (task, class) problems share the cores;
    /// results come back in `tasks` order and do not depend on the number of cores.
    pub fn cross_validate_folds(
        &self,
        dense: Option<&Matrix>,
        y: &[usize],
        labels: &[String],
        grid: &[f64],
        fold_of: &[usize],
        (tasks, keep_models): (&[(usize, SparseFamily)], bool),
    ) -> Result<Vec<SparseFold>, TrainError> {
        let cfg = &self.cfg;
        check(self.len(), y, labels, cfg)?;
        if fold_of.len() != y.len() {
            return Err(TrainError::LengthMismatch { rows: fold_of.len(), labels: y.len() });
        }
        grid.iter().try_for_each(|&c| check_c(c))?;
        if tasks.iter().any(|t| t.1 == SparseFamily::Combined) {
            self.check_dense(dense)?;
            if dense.is_none() {
                return Err(TrainError::InvalidConfig("the combined model needs embeddings".into()));
            }
        }
        let mut folds: Vec<usize> = tasks.iter().map(|t| t.0).collect();
        folds.sort_unstable();
        folds.dedup();
        let threads = threads(cfg.threads);
        let data = self.fold_data(dense, fold_of, &folds, tasks);
        let data_of = |f: usize| &data[folds.binary_search(&f).expect("a listed fold")];
        let k = labels.len();
        let problems = problems(k);
        // Combined problems are the slow ones: listed first, so the last tasks are short.
        let mut order: Vec<usize> = (0..tasks.len() * problems).collect();
        order.sort_by_key(|&t| (tasks[t / problems].1 != SparseFamily::Combined, t));
        let solved: Vec<Solved> = par_map(order.len(), threads, |o| {
            let t = order[o];
            let ((f, family), c) = (tasks[t / problems], t % problems);
            let d = data_of(f);
            let dense = if family == SparseFamily::Combined { d.dense.as_ref() } else { None };
            let rows = Rows { sparse: &d.x_train, dense: dense.map(|b| &b.0) };
            let test = Rows { sparse: &d.x_test, dense: dense.map(|b| &b.1) };
            let target = positive_class(k, c);
            let yy: Vec<bool> = d.train.iter().map(|&i| y[i] == target).collect();
            let mut solver = Dcd::new(rows, d.vocab.idf.len(), &yy);
            let mut rng = rng::seeded(problem_seed(cfg.seed, f as u64 + 1, c as u64));
            let scores = grid
                .iter()
                .map(|&cc| {
                    solver.solve(cc, cfg.cv_tol, cfg.max_iter, &mut rng);
                    (0..test.rows()).map(|r| solver.decision(test, r) as f32).collect()
                })
                .collect();
            (scores, keep_models.then_some(solver.w))
        });
        let mut by_task: Vec<Option<Solved>> = (0..order.len()).map(|_| None).collect();
        for (o, s) in order.iter().zip(solved) {
            by_task[*o] = Some(s);
        }
        let by_task = by_task.into_iter().map(|s| s.expect("every problem ran"));
        self.collect(dense, (y, labels), (fold_of, tasks), &data_of, by_task)
    }

    /// Each fold's vocabulary and rows (in parallel), for the folds `folds` (ascending).
    fn fold_data(
        &self,
        dense: Option<&Matrix>,
        fold_of: &[usize],
        folds: &[usize],
        tasks: &[(usize, SparseFamily)],
    ) -> Vec<FoldData> {
        let cfg = &self.cfg;
        par_map(folds.len(), threads(cfg.threads), |i| {
            let f = folds[i];
            let train: Vec<usize> = (0..fold_of.len()).filter(|&r| fold_of[r] != f).collect();
            let test: Vec<usize> = (0..fold_of.len()).filter(|&r| fold_of[r] == f).collect();
            let vocab = self.corpus.vocabulary(&train, cfg.min_df);
            let wants_dense = tasks.iter().any(|t| t.0 == f && t.1 == SparseFamily::Combined);
            let dense = dense
                .filter(|_| wants_dense)
                .map(|m| (DenseBlock::new(m, &train, cfg.dense_scale), DenseBlock::new(m, &test, cfg.dense_scale)));
            let (x_train, x_test) = (self.corpus.rows(&train, &vocab), self.corpus.rows(&test, &vocab));
            FoldData { vocab, train, x_train, x_test, dense }
        })
    }

    /// Held-out correctness (and fold models) of each task from its problems' results.
    fn collect<'d>(
        &self,
        dense: Option<&Matrix>,
        (y, labels): (&[usize], &[String]),
        (fold_of, tasks): (&[usize], &[(usize, SparseFamily)]),
        data_of: &impl Fn(usize) -> &'d FoldData,
        by_task: impl Iterator<Item = Solved>,
    ) -> Result<Vec<SparseFold>, TrainError> {
        let cfg = &self.cfg;
        let k = labels.len();
        let problems = problems(k);
        let mut by_task = by_task;
        let mut out = Vec::with_capacity(tasks.len());
        for &(f, family) in tasks {
            let d = data_of(f);
            let solved: Vec<Solved> = by_task.by_ref().take(problems).collect();
            let test: Vec<usize> = (0..y.len()).filter(|&r| fold_of[r] == f).collect();
            let points = solved.first().map_or(0, |s| s.0.len());
            let correct = (0..points)
                .map(|g| {
                    (0..test.len())
                        .map(|r| {
                            let z: Vec<f32> = solved.iter().map(|s| s.0[g][r]).collect();
                            predicted(k, &z) == y[test[r]]
                        })
                        .collect()
                })
                .collect();
            let model = if solved.first().is_some_and(|s| s.1.is_some()) {
                let ws: Vec<Vec<f32>> = solved.into_iter().map(|s| s.1.expect("weights kept")).collect();
                let dim = d.vocab.idf.len()
                    + if family == SparseFamily::Combined { d.dense.as_ref().map_or(0, |b| b.0.dim) } else { 0 };
                let vocab = self.corpus.vocabulary(&d.train, cfg.min_df);
                let dense = if family == SparseFamily::Combined { dense.map(|m| (m, cfg.dense_scale)) } else { None };
                Some(super::assemble(&self.corpus, vocab, &ws, dim, labels.to_vec(), dense))
            } else {
                None
            };
            out.push(SparseFold { fold: f, family, correct, model });
        }
        Ok(out)
    }

    /// Trains `family` on all the texts at strength `c` (tolerance `cfg.tol`, from zero).
    pub fn fit(
        &self,
        family: SparseFamily,
        dense: Option<&Matrix>,
        y: &[usize],
        labels: Vec<String>,
        c: f64,
    ) -> Result<(SparseModel, SparseFitReport), TrainError> {
        check(self.len(), y, &labels, &self.cfg)?;
        check_c(c)?;
        let dense = match family {
            SparseFamily::Text => None,
            SparseFamily::Combined => {
                self.check_dense(dense)?;
                Some((
                    dense.ok_or_else(|| TrainError::InvalidConfig("the combined model needs embeddings".into()))?,
                    self.cfg.dense_scale,
                ))
            }
        };
        let all: Vec<usize> = (0..self.len()).collect();
        Ok(super::final_fit(&self.corpus, dense, y, labels, &self.cfg, c, &all))
    }
}
