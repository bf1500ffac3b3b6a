//! Model selection (`[head] kind = "auto"`): every candidate family is cross-validated on the
//! training split, on the same stratified folds, and the cheapest candidate whose mean fold
//! accuracy is within one standard error of the best is shipped. Test rows are never read here:
//! the functions take the training split only (the validation split is used to time
//! predictions, never to score them).

use keel_core::Matrix;
pub use keel_eval::{CandidateScore, ModelSelection};
use keel_train::{Head, SparseConfig, SparseCorpus, SparseFamily};
use serde::{Deserialize, Serialize};

use super::data::Part;

/// Folds for choosing a head's setting (and, under auto, its family) on the training split.
pub const CV_FOLDS: usize = 5;

/// A model family auto selection can ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// TF-IDF word 1–2-grams into one-vs-rest linear SVMs, over raw text: needs no encoder.
    Sparse,
    /// Multinomial logistic regression on the frozen encoder's embeddings.
    Logistic,
    /// The TF-IDF features and the embedding in one linear SVM: reads both.
    Combined,
}

impl Family {
    /// What the family is called in plain words.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Sparse => "the n-gram model",
            Family::Logistic => "the encoder head",
            Family::Combined => "the combined model (n-grams and embeddings)",
        }
    }

    /// Whether serving it needs the encoder.
    pub fn needs_encoder(self) -> bool {
        matches!(self, Family::Logistic | Family::Combined)
    }

    /// Cost order: the n-gram model reads no encoder (microseconds per prediction), the encoder
    /// head reads it (milliseconds), the combined model reads it and its n-grams.
    pub fn cost_rank(self) -> u32 {
        match self {
            Family::Sparse => 0,
            Family::Logistic => 1,
            Family::Combined => 2,
        }
    }

    /// The name keel.toml uses.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sparse => "sparse",
            Family::Logistic => "logistic",
            Family::Combined => "combined",
        }
    }

    fn score(self, fold_accuracy: Vec<f64>, setting: String) -> CandidateScore {
        let (mean, se) = mean_se(&fold_accuracy);
        CandidateScore {
            family: self.name().into(),
            description: self.describe().into(),
            fold_accuracy,
            mean,
            se,
            cost_rank: self.cost_rank(),
            cost_us: None,
            setting,
            needs_encoder: self.needs_encoder(),
            raced_out: false,
        }
    }
}

/// The one-standard-error rule: the best mean fold accuracy sets a bar (its mean minus its
/// standard error); the cheapest candidate (by cost rank) at or above the bar wins, the higher
/// mean on equal rank.
pub fn choose(candidates: &[CandidateScore]) -> Option<usize> {
    let best = best(candidates)?;
    let bar = candidates[best].mean - candidates[best].se;
    (0..candidates.len()).filter(|&i| !candidates[i].raced_out && candidates[i].mean >= bar).min_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        ca.cost_rank.cmp(&cb.cost_rank).then(cb.mean.total_cmp(&ca.mean))
    })
}

/// The best mean among the candidates cross-validated on every fold.
fn best(candidates: &[CandidateScore]) -> Option<usize> {
    (0..candidates.len())
        .filter(|&i| !candidates[i].raced_out)
        .max_by(|&a, &b| candidates[a].mean.total_cmp(&candidates[b].mean))
}

/// The sentence stored with the version and in its report: scores and the choice, nothing
/// measured by a clock.
pub fn reason(candidates: &[CandidateScore], chosen: usize) -> String {
    let scores: Vec<String> = candidates
        .iter()
        .map(|c| {
            if c.raced_out {
                format!("{} scored {:.3} on the first fold and was dropped there (far behind)", c.description, c.mean)
            } else {
                format!("{} scored {:.3} ± {:.3}", c.description, c.mean, c.se)
            }
        })
        .collect();
    let c = &candidates[chosen];
    let mut out =
        format!("in {}-fold cross-validation on the training split, {}: ", c.fold_accuracy.len(), scores.join(", "));
    let best = best(candidates).unwrap_or(chosen);
    if best == chosen {
        out.push_str(&format!("shipped {}, the best", c.description));
    } else {
        let why = if c.needs_encoder { "and cheaper per prediction" } else { "and it needs no encoder" };
        out.push_str(&format!(
            "shipped {}, within one standard error of the best ({}) {why}",
            c.description, candidates[best].description
        ));
    }
    if !c.needs_encoder {
        out.push_str(if best == chosen { "; it needs no encoder" } else { "" });
    }
    out
}

/// The measured costs in words: each candidate's CPU time per prediction and how the shipped
/// one compares (`costs[i]` is candidate `i`'s).
pub fn cost_note(candidates: &[CandidateScore], costs: &[f64], chosen: usize) -> String {
    let each: Vec<String> = candidates.iter().zip(costs).map(|(c, us)| format!("{} {us} µs", c.description)).collect();
    let c = costs[chosen];
    let rel: Vec<String> = candidates
        .iter()
        .zip(costs)
        .enumerate()
        .filter(|(i, _)| *i != chosen)
        .map(|(_, (o, &us))| {
            let ratio = us / c.max(f64::MIN_POSITIVE);
            if (1.0 / 1.5..1.5).contains(&ratio) {
                format!("about the cost of {}", o.description)
            } else if ratio >= 1.0 {
                format!("about {} cheaper than {}", times(ratio), o.description)
            } else {
                format!("about {} dearer than {}", times(1.0 / ratio), o.description)
            }
        })
        .collect();
    format!(
        "CPU time per prediction measured at training: {}; the shipped model is {}",
        each.join(", "),
        rel.join(", ")
    )
}

/// A ratio to one significant digit ("about 300×"): measured costs vary by tens of percent.
fn times(r: f64) -> String {
    if r < 1.5 {
        return "1×".into();
    }
    let scale = 10f64.powi(r.log10().floor() as i32);
    format!("{}×", (r / scale).round() * scale)
}

/// Mean and standard error of fold accuracies.
pub fn mean_se(folds: &[f64]) -> (f64, f64) {
    let n = folds.len() as f64;
    let mean = folds.iter().sum::<f64>() / n.max(1.0);
    if folds.len() < 2 {
        return (mean, 0.0);
    }
    let var = folds.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// How far behind the leader on the first fold a family may fall and still be cross-validated
/// on the others: this many standard errors of the paired difference in held-out accuracy (row
/// by row, on the same rows). Far more than the one-standard-error rule could bridge, so a
/// family dropped here would not have been shipped.
pub const RACE_Z: f64 = 3.0;

/// One family's held-out results on the folds it ran, in fold order.
struct Runs {
    family: Family,
    /// Per fold: `correct[g][r]` for grid point `g` and held-out row `r`.
    correct: Vec<Vec<Vec<bool>>>,
    /// Per fold, the held-out log-loss sum at each grid point (logistic regression only).
    loss: Vec<Vec<f64>>,
    /// A model of the family fitted on the first fold's training rows: for timing.
    timing: Head,
    raced_out: bool,
    /// False when fold 0's path stopped early (logistic regression in the race).
    complete: bool,
}

impl Runs {
    /// The grid point this family's rule picks over its folds: the best mean fold accuracy (the
    /// smaller `C` on ties) for the TF-IDF models, the lowest pooled held-out log loss (the
    /// larger L2 on ties) for logistic regression, as their own cross-validations choose.
    fn best_point(&self, grid: &[f64]) -> usize {
        let folds = self.correct.len();
        let mut best = 0;
        if self.family == Family::Logistic {
            let loss = |g: usize| self.loss.iter().map(|l| l[g]).sum::<f64>();
            for g in 1..grid.len() {
                if loss(g) < loss(best) || (loss(g) == loss(best) && grid[g] > grid[best]) {
                    best = g;
                }
            }
        } else {
            let mean = |g: usize| (0..folds).map(|f| accuracy(&self.correct[f][g])).sum::<f64>();
            for g in 1..grid.len() {
                if mean(g) > mean(best) {
                    best = g;
                }
            }
        }
        best
    }
}

fn accuracy(correct: &[bool]) -> f64 {
    correct.iter().filter(|&&b| b).count() as f64 / correct.len().max(1) as f64
}

/// Paired standard error of `a − b` in accuracy on the same rows.
fn paired_se(a: &[bool], b: &[bool]) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(&x, &y)| f64::from(u8::from(x)) - f64::from(u8::from(y))).collect();
    let n = d.len() as f64;
    if d.len() < 2 {
        return 0.0;
    }
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (var / n).sqrt()
}

/// What auto selection produced: the shipped head fitted on the whole training split, every
/// candidate's score and measured cost, and the chosen one's index.
pub struct Auto {
    pub head: Head,
    /// The n-gram model (TF-IDF word 1–2-grams, no encoder) fitted on the whole training split
    /// at its cross-validated `C`: the version's baseline and the server's fallback when the
    /// encoder fails. The shipped head itself when that is the n-gram model.
    pub fallback: Head,
    pub details: serde_json::Value,
    pub cross_validated_l2: Option<f64>,
    pub scores: Vec<CandidateScore>,
    pub costs: Vec<f64>,
    pub chosen: usize,
}

/// Auto selection as a race on the same stratified folds: every family runs the first fold; a
/// family more than [`RACE_Z`] paired standard errors behind that fold's leader is dropped;
/// the rest run the other folds; the one-standard-error rule picks among them; only the chosen
/// family is fitted on the whole training split. The texts are tokenised once for both TF-IDF
/// families. Costs are timed on `validation` texts (their labels are not read), with fold
/// models for the families not shipped; they are the heads' own, without the encoder's (which
/// the caller adds with [`add_encoder_cost`], once the encoder has loaded).
pub fn auto(train: &Part, validation: &Part, labels: &[String], seed: u64) -> anyhow::Result<Auto> {
    let cfg = SparseConfig { seed, ..SparseConfig::default() };
    let (c_grid, l2_grid) = (keel_train::DEFAULT_C_GRID.to_vec(), keel_train::DEFAULT_L2_GRID.to_vec());
    let fold_of = keel_train::stratified_folds(&train.y, CV_FOLDS, seed);
    let cpu = process_cpu_us();
    let corpus = SparseCorpus::new(&train.texts, &cfg)?;
    tracing::debug!(cpu_s = (process_cpu_us() - cpu) / 1e6, "texts tokenised");
    let mut runs = first_fold(&corpus, train, labels, (&c_grid, &l2_grid), &fold_of)?;
    tracing::debug!(cpu_s = (process_cpu_us() - cpu) / 1e6, "fold 0 of every family");
    race(&mut runs, &c_grid, &l2_grid);
    other_folds(&mut runs, &corpus, train, labels, (&c_grid, &l2_grid), &fold_of)?;
    tracing::debug!(cpu_s = (process_cpu_us() - cpu) / 1e6, "other folds");
    let scores: Vec<CandidateScore> = runs
        .iter()
        .map(|r| {
            let grid = if r.family == Family::Logistic { &l2_grid } else { &c_grid };
            let g = r.best_point(grid);
            let folds = r.correct.iter().map(|f| accuracy(&f[g])).collect();
            let setting = match r.family {
                Family::Logistic => format!("L2 = {}", grid[g]),
                Family::Sparse => format!("C = {}", grid[g]),
                Family::Combined => format!("C = {}, embedding scale {}", grid[g], cfg.dense_scale),
            };
            CandidateScore { raced_out: r.raced_out, ..r.family.score(folds, setting) }
        })
        .collect();
    let chosen = choose(&scores).ok_or_else(|| anyhow::anyhow!("no candidate to choose from"))?;
    let (head, details, l2) = final_fit(&runs[chosen], &corpus, train, labels, (&c_grid, &l2_grid), &fold_of)?;
    tracing::debug!(cpu_s = (process_cpu_us() - cpu) / 1e6, "final fit");
    let fallback = if runs[chosen].family == Family::Sparse {
        head.clone()
    } else {
        // Its `C` from the folds it ran (fold 0 alone when it was raced out).
        let sparse =
            runs.iter().find(|r| r.family == Family::Sparse).ok_or_else(|| anyhow::anyhow!("no n-gram run"))?;
        let c = c_grid[sparse.best_point(&c_grid)];
        Head::Sparse(corpus.fit(SparseFamily::Text, None, &train.y, labels.to_vec(), c)?.0)
    };
    tracing::debug!(cpu_s = (process_cpu_us() - cpu) / 1e6, "n-gram fallback fitted");
    let mut costs = Vec::with_capacity(runs.len());
    for (i, r) in runs.iter().enumerate() {
        let timed = if i == chosen { &head } else { &r.timing };
        costs.push(time_per_prediction(timed, validation)?);
    }
    Ok(Auto { head, fallback, details, cross_validated_l2: l2, scores, costs, chosen })
}

type Grids<'a> = (&'a [f64], &'a [f64]);

/// Every family on fold 0: the two TF-IDF families together, then logistic regression.
fn first_fold(
    corpus: &SparseCorpus,
    train: &Part,
    labels: &[String],
    (c_grid, l2_grid): Grids<'_>,
    fold_of: &[usize],
) -> anyhow::Result<Vec<Runs>> {
    let tasks = [(0, SparseFamily::Text), (0, SparseFamily::Combined)];
    // Logistic regression's fold 0 walks its path only while the held-out loss falls: enough to
    // race it; if it stays in the race, fold 0 is redone in full with the others. It runs on
    // its own thread beside the TF-IDF families' problems, and takes the cores they leave when
    // they finish (its results do not depend on the number of threads).
    let (sparse, lr) = std::thread::scope(|s| {
        let lr = s.spawn(|| {
            let which = (&[0][..], true, true);
            let r = keel_train::cross_validate_folds(&train.x, &train.y, labels, l2_grid, fold_of, which);
            tracing::debug!(cpu_s = process_cpu_us() / 1e6, "fold 0: logistic regression done (process CPU)");
            r
        });
        let sparse = corpus.cross_validate_folds(Some(&train.x), &train.y, labels, c_grid, fold_of, (&tasks, true));
        tracing::debug!(cpu_s = process_cpu_us() / 1e6, "fold 0: TF-IDF families done (process CPU)");
        (sparse, lr.join())
    });
    let sparse = sparse?;
    let lr = lr.map_err(|_| anyhow::anyhow!("the logistic regression race thread panicked"))??;
    let mut runs = Vec::new();
    let mut sparse = sparse.into_iter();
    let mut lr = lr.into_iter();
    for family in [Family::Sparse, Family::Logistic, Family::Combined] {
        let mut complete = true;
        let (correct, loss, timing) = if family == Family::Logistic {
            let f = lr.next().ok_or_else(|| anyhow::anyhow!("fold 0 of logistic regression"))?;
            let m = f.model.ok_or_else(|| anyhow::anyhow!("a fold model"))?;
            complete = f.complete;
            (f.correct, vec![f.loss], Head::Logistic(m))
        } else {
            // The TF-IDF folds come back in task order: text, then combined.
            let f = sparse.next().ok_or_else(|| anyhow::anyhow!("fold 0 of {}", family.name()))?;
            let m = f.model.ok_or_else(|| anyhow::anyhow!("a fold model"))?;
            (f.correct, Vec::new(), Head::Sparse(m))
        };
        runs.push(Runs { family, correct: vec![correct], loss, timing, raced_out: false, complete });
    }
    Ok(runs)
}

/// Drops the families far behind fold 0's leader ([`RACE_Z`]).
fn race(runs: &mut [Runs], c_grid: &[f64], l2_grid: &[f64]) {
    let picks: Vec<&Vec<bool>> = runs
        .iter()
        .map(|r| &r.correct[0][r.best_point(if r.family == Family::Logistic { l2_grid } else { c_grid })])
        .collect();
    let acc: Vec<f64> = picks.iter().map(|c| accuracy(c)).collect();
    let lead = (0..runs.len())
        .max_by(|&a, &b| acc[a].total_cmp(&acc[b]).then(runs[b].family.cost_rank().cmp(&runs[a].family.cost_rank())))
        .unwrap_or(0);
    let out: Vec<bool> = (0..runs.len())
        .map(|i| {
            let gap = acc[lead] - acc[i];
            let se = paired_se(picks[lead], picks[i]);
            let out = i != lead && gap > 0.0 && gap > RACE_Z * se;
            tracing::debug!(family = runs[i].family.name(), accuracy = acc[i], gap, se, out, "race");
            out
        })
        .collect();
    for (r, o) in runs.iter_mut().zip(out) {
        r.raced_out = o;
    }
}

/// Folds 1.. for the families still in the race.
fn other_folds(
    runs: &mut [Runs],
    corpus: &SparseCorpus,
    train: &Part,
    labels: &[String],
    (c_grid, l2_grid): Grids<'_>,
    fold_of: &[usize],
) -> anyhow::Result<()> {
    let rest: Vec<usize> = (1..CV_FOLDS).collect();
    let live = |f: Family| runs.iter().any(|r| r.family == f && !r.raced_out);
    let mut tasks = Vec::new();
    for (family, sf) in [(Family::Sparse, SparseFamily::Text), (Family::Combined, SparseFamily::Combined)] {
        if live(family) {
            tasks.extend(rest.iter().map(|&f| (f, sf)));
        }
    }
    let sparse = if tasks.is_empty() {
        Vec::new()
    } else {
        corpus.cross_validate_folds(Some(&train.x), &train.y, labels, c_grid, fold_of, (&tasks, false))?
    };
    // Fold 0 again too when its path stopped early.
    let redo = runs.iter().any(|r| r.family == Family::Logistic && !r.complete);
    let lr_folds: Vec<usize> = if redo { (0..CV_FOLDS).collect() } else { rest.clone() };
    let lr = if live(Family::Logistic) {
        keel_train::cross_validate_folds(&train.x, &train.y, labels, l2_grid, fold_of, (&lr_folds, false, false))?
    } else {
        Vec::new()
    };
    for r in runs.iter_mut() {
        match r.family {
            Family::Logistic => {
                if !lr.is_empty() && redo {
                    r.correct.clear();
                    r.loss.clear();
                    r.complete = true;
                }
                for f in &lr {
                    r.correct.push(f.correct.clone());
                    r.loss.push(f.loss.clone());
                }
            }
            family => {
                let sf = if family == Family::Sparse { SparseFamily::Text } else { SparseFamily::Combined };
                r.correct.extend(sparse.iter().filter(|f| f.family == sf).map(|f| f.correct.clone()));
            }
        }
    }
    Ok(())
}

/// The chosen family fitted on the whole training split at its cross-validated setting, its
/// cross-validation report, and (logistic regression) the L2 strength chosen.
fn final_fit(
    run: &Runs,
    corpus: &SparseCorpus,
    train: &Part,
    labels: &[String],
    (c_grid, l2_grid): Grids<'_>,
    fold_of: &[usize],
) -> anyhow::Result<(Head, serde_json::Value, Option<f64>)> {
    let mut fold_rows = vec![0usize; CV_FOLDS];
    for &f in fold_of {
        fold_rows[f] += 1;
    }
    if run.family == Family::Logistic {
        let g = run.best_point(l2_grid);
        let l2 = l2_grid[g];
        let cfg = keel_train::LrConfig { l2, ..keel_train::LrConfig::default() };
        let (m, fit) = keel_train::fit(&train.x, &train.y, labels.to_vec(), &cfg)?;
        let n = train.y.len() as f64;
        let grid = (0..l2_grid.len())
            .map(|g| keel_train::CvPoint {
                l2: l2_grid[g],
                log_loss: run.loss.iter().map(|l| l[g]).sum::<f64>() / n,
                accuracy: run.correct.iter().map(|c| c[g].iter().filter(|&&b| b).count()).sum::<usize>() as f64 / n,
            })
            .collect();
        let cv = keel_train::CvReport { folds: CV_FOLDS, grid, chosen_l2: l2, fit };
        return Ok((Head::Logistic(m), serde_json::json!({"cross_validation": cv}), Some(l2)));
    }
    let c = c_grid[run.best_point(c_grid)];
    let (family, dense) = if run.family == Family::Sparse {
        (SparseFamily::Text, None)
    } else {
        (SparseFamily::Combined, Some(&train.x))
    };
    let (m, fit) = corpus.fit(family, dense, &train.y, labels.to_vec(), c)?;
    let grid = c_grid
        .iter()
        .enumerate()
        .map(|(g, &c)| {
            let fold_accuracy: Vec<f64> = run.correct.iter().map(|f| accuracy(&f[g])).collect();
            let (mean, se) = mean_se(&fold_accuracy);
            keel_train::SparseCvPoint { c, fold_accuracy, mean, se }
        })
        .collect();
    let cv = keel_train::SparseCvReport { folds: CV_FOLDS, fold_rows, grid, chosen_c: c, fit };
    Ok((Head::Sparse(m), serde_json::json!({"cross_validation": cv}), None))
}

/// Adds the encoder's CPU µs per text to the measured cost of every candidate that reads
/// embeddings (`costs[i]` is `candidates[i]`'s), rounded like every measured cost.
pub fn add_encoder_cost(candidates: &[CandidateScore], costs: &mut [f64], encoder_cost_us: f64) {
    for (c, cost) in candidates.iter().zip(costs.iter_mut()) {
        if c.needs_encoder {
            *cost = round2(*cost + encoder_cost_us);
        }
    }
}

/// CPU microseconds the encoder spends per text, embedding these texts four at a time after a
/// warm-up of two, until 64 texts or (after at least 4) 60 ms of CPU time, rounded to two
/// significant digits (long texts cost tens of milliseconds each: a few say as much as many).
pub fn encoder_cost_us(encoder: &keel_embed::Encoder, texts: &[String]) -> anyhow::Result<f64> {
    let sample: Vec<&str> = texts.iter().take(64).map(String::as_str).collect();
    if sample.is_empty() {
        return Ok(0.0);
    }
    encoder.embed(&sample[..sample.len().min(2)])?;
    let started = process_cpu_us();
    let mut done = 0;
    for batch in sample.chunks(4) {
        encoder.embed(batch)?;
        done += batch.len();
        if done >= 4 && process_cpu_us() - started >= 60_000.0 {
            break;
        }
    }
    Ok(round2((process_cpu_us() - started) / done as f64))
}

/// The machine a cost is measured on: the CPU's model name and the vector units the kernels
/// use (a measurement is reused only on the same).
pub fn cpu_identity() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    #[cfg(target_arch = "x86_64")]
    let units = [
        ("avx2", std::is_x86_feature_detected!("avx2")),
        ("avx512f", std::is_x86_feature_detected!("avx512f")),
        ("avx512vnni", std::is_x86_feature_detected!("avx512vnni")),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| *n)
    .collect::<Vec<_>>()
    .join(" ");
    #[cfg(not(target_arch = "x86_64"))]
    let units = String::new();
    format!("{model} [{units}]")
}

/// Two significant digits: a measured cost is not more precise than that, and the artifact
/// that stores it should not change with the last digits of a clock.
pub fn round2(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 0.0;
    }
    // Dividing by a power of ten above 1, never multiplying by one below (0.1 is inexact:
    // 24 × 0.1 is 2.4000000000000004, 24 / 10 is 2.4).
    let e = x.log10().floor() as i32 - 1;
    if e < 0 {
        let up = 10f64.powi(-e);
        (x * up).round() / up
    } else {
        let scale = 10f64.powi(e);
        (x / scale).round() * scale
    }
}

/// CPU time of this process so far, in microseconds (the clock every thread adds to).
pub fn process_cpu_us() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// CPU time of the calling thread so far, in microseconds: a head predicts on the thread that
/// calls it, and other threads (the n-gram baseline training beside selection) do not count.
pub fn thread_cpu_us() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// CPU microseconds (of this thread) per prediction of `head` on these rows (text or
/// embeddings as it reads), repeated until at least 5 ms of CPU time was spent (the clock
/// counts nanoseconds; that is thousands of short predictions). The encoder's cost, when the
/// head reads embeddings, is the caller's to add.
pub fn time_per_prediction(head: &Head, rows: &Part) -> anyhow::Result<f64> {
    let n = rows.y.len().clamp(1, 256);
    let texts = &rows.texts[..n.min(rows.texts.len())];
    let x: Matrix = rows.x.select_rows(&(0..n.min(rows.x.rows())).collect::<Vec<_>>());
    let started = thread_cpu_us();
    let mut predictions = 0usize;
    while thread_cpu_us() - started < 5_000.0 || predictions == 0 {
        let m = match head.input_kind() {
            keel_train::InputKind::Text => head.predict_proba_texts(texts)?,
            keel_train::InputKind::TextAndEmbedding { .. } => head.predict_proba_both(texts, &x)?,
            _ => head.predict_proba_batch(&x)?,
        };
        predictions += m.rows();
        if m.rows() == 0 || predictions > 10_000_000 {
            break;
        }
    }
    Ok(round2((thread_cpu_us() - started) / predictions.max(1) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(family: Family, mean: f64, se: f64) -> CandidateScore {
        CandidateScore { mean, se, ..family.score(vec![mean; 5], String::new()) }
    }

    #[test]
    fn the_cheapest_within_one_standard_error_of_the_best_wins() {
        // The encoder head is best, the n-gram model within one SE and cheaper: n-grams.
        let c = [cand(Family::Sparse, 0.790, 0.004), cand(Family::Logistic, 0.794, 0.005)];
        assert_eq!(choose(&c), Some(0));
        let text = reason(&c, 0);
        assert!(text.contains("within one standard error of the best (the encoder head)"), "{text}");
        // Beyond one SE: the encoder head.
        let c = [cand(Family::Sparse, 0.770, 0.004), cand(Family::Logistic, 0.794, 0.005)];
        assert_eq!(choose(&c), Some(1));
        let text = reason(&c, 1);
        assert!(text.contains("shipped the encoder head"), "{text}");
        assert!(text.contains("0.770 ± 0.004"), "{text}");
        let note = cost_note(&c, &[40.0, 4000.0], 1);
        assert!(note.contains("100× dearer than the n-gram model"), "{note}");
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn a_family_dropped_from_the_race_is_never_shipped_nor_the_bar() {
        // Its one-fold score does not set the bar, and it cannot be chosen.
        let mut out = cand(Family::Sparse, 0.99, 0.0);
        out.raced_out = true;
        let c = [out, cand(Family::Logistic, 0.80, 0.01), cand(Family::Combined, 0.805, 0.01)];
        assert_eq!(choose(&c), Some(1));
        assert!(reason(&c, 1).contains("on the first fold and was dropped there"), "{}", reason(&c, 1));
        // Fold 0's leader is never dropped; a family far behind it is, a close one is not.
        let yes = vec![true; 100];
        let mut close = yes.clone();
        close[0] = false;
        let far: Vec<bool> = (0..100).map(|i| i % 4 != 0).collect();
        assert!(0.01 < RACE_Z * paired_se(&yes, &close));
        assert!(0.25 > RACE_Z * paired_se(&yes, &far));
    }

    #[test]
    fn measured_costs_keep_two_significant_digits_exactly() {
        assert_eq!(round2(2.4361).to_string(), "2.4");
        assert_eq!(round2(0.0123456).to_string(), "0.012");
        assert_eq!(round2(18_734.0), 19_000.0);
        assert_eq!(round2(67.2), 67.0);
        assert_eq!((round2(f64::NAN), round2(-1.0)), (0.0, 0.0));
        // The encoder's cost goes to the candidates that read embeddings only.
        let c = [cand(Family::Sparse, 0.8, 0.0), cand(Family::Combined, 0.8, 0.0)];
        let mut costs = [2.4, 3.1];
        add_encoder_cost(&c, &mut costs, 6_300.0);
        assert_eq!(costs, [2.4, 6_300.0]);
    }

    #[test]
    fn mean_and_standard_error_of_folds() {
        let (m, se) = mean_se(&[0.8, 0.9, 0.7, 0.8, 0.8]);
        assert!((m - 0.8).abs() < 1e-12);
        // sd = sqrt(0.02 / 4) = 0.0707; se = sd / sqrt(5)
        assert!((se - (0.005f64).sqrt() / 5f64.sqrt()).abs() < 1e-12, "{se}");
    }
}
