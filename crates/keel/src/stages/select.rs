//! Model selection (`[head] kind = "auto"`): every candidate family is cross-validated on the
//! training split, on the same stratified folds, and the cheapest candidate whose mean fold
//! accuracy is within one standard error of the best is shipped. Test rows are never read here:
//! the functions take the training split only (the validation split is used to time
//! predictions, never to score them).

use keel_core::Matrix;
pub use keel_eval::{CandidateScore, ModelSelection};
use keel_train::{Head, SparseConfig, SparseModel};
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
        }
    }
}

/// The one-standard-error rule: the best mean fold accuracy sets a bar (its mean minus its
/// standard error); the cheapest candidate (by cost rank) at or above the bar wins, the higher
/// mean on equal rank.
pub fn choose(candidates: &[CandidateScore]) -> Option<usize> {
    let best = best(candidates)?;
    let bar = candidates[best].mean - candidates[best].se;
    (0..candidates.len()).filter(|&i| candidates[i].mean >= bar).min_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        ca.cost_rank.cmp(&cb.cost_rank).then(cb.mean.total_cmp(&ca.mean))
    })
}

fn best(candidates: &[CandidateScore]) -> Option<usize> {
    (0..candidates.len()).max_by(|&a, &b| candidates[a].mean.total_cmp(&candidates[b].mean))
}

/// The sentence stored with the version and in its report: scores and the choice, nothing
/// measured by a clock.
pub fn reason(candidates: &[CandidateScore], chosen: usize) -> String {
    let scores: Vec<String> =
        candidates.iter().map(|c| format!("{} scored {:.3} ± {:.3}", c.description, c.mean, c.se)).collect();
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

/// A fitted candidate: the model trained on the whole training split and its CV score (its
/// cost is filled in by [`time_per_prediction`]).
pub struct Fitted {
    pub head: Head,
    pub score: CandidateScore,
    pub details: serde_json::Value,
    /// The L2 strength cross-validation chose (logistic regression).
    pub cross_validated_l2: Option<f64>,
}

/// Cross-validates and fits one family on the training split.
pub fn fit_candidate(family: Family, train: &Part, labels: &[String], seed: u64) -> anyhow::Result<Fitted> {
    match family {
        Family::Sparse => {
            let cfg = SparseConfig { seed, ..SparseConfig::default() };
            let (m, cv) = SparseModel::fit_cv(&train.texts, &train.y, labels.to_vec(), &cfg, &[], CV_FOLDS)?;
            let point = cv.grid.iter().find(|p| p.c == cv.chosen_c).cloned().unwrap_or_else(|| cv.grid[0].clone());
            let score = family.score(point.fold_accuracy, format!("C = {}", cv.chosen_c));
            Ok(Fitted {
                head: Head::Sparse(m),
                score,
                details: serde_json::json!({"cross_validation": cv}),
                cross_validated_l2: None,
            })
        }
        Family::Combined => {
            let cfg = SparseConfig { seed, ..SparseConfig::default() };
            let (m, cv) =
                SparseModel::fit_cv_combined(&train.texts, &train.x, &train.y, labels.to_vec(), &cfg, (&[], CV_FOLDS))?;
            let point = cv.grid.iter().find(|p| p.c == cv.chosen_c).cloned().unwrap_or_else(|| cv.grid[0].clone());
            let setting = format!("C = {}, embedding scale {}", cv.chosen_c, cfg.dense_scale);
            let score = family.score(point.fold_accuracy, setting);
            let details = serde_json::json!({"cross_validation": cv});
            Ok(Fitted { head: Head::Sparse(m), score, details, cross_validated_l2: None })
        }
        Family::Logistic => {
            let (m, cv, folds) = keel_train::fit_cv_folds(&train.x, &train.y, labels.to_vec(), &[], CV_FOLDS, seed)?;
            let g = cv.grid.iter().position(|p| p.l2 == cv.chosen_l2).unwrap_or(0);
            let score = family.score(folds.fold_accuracy[g].clone(), format!("L2 = {}", cv.chosen_l2));
            let l2 = Some(cv.chosen_l2);
            Ok(Fitted {
                head: Head::Logistic(m),
                score,
                details: serde_json::json!({"cross_validation": cv}),
                cross_validated_l2: l2,
            })
        }
    }
}

/// CPU microseconds the encoder spends per text, embedding (up to) 64 of these texts once
/// after a warm-up of 4, rounded to two significant digits.
pub fn encoder_cost_us(encoder: &keel_embed::Encoder, texts: &[String]) -> anyhow::Result<f64> {
    let sample: Vec<&str> = texts.iter().take(64).map(String::as_str).collect();
    if sample.is_empty() {
        return Ok(0.0);
    }
    encoder.embed(&sample[..sample.len().min(4)])?;
    let started = process_cpu_us();
    encoder.embed(&sample)?;
    Ok(round2((process_cpu_us() - started) / sample.len() as f64))
}

/// Two significant digits: a measured cost is not more precise than that, and the artifact
/// that stores it should not change with the last digits of a clock.
pub fn round2(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 0.0;
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - 1);
    (x / scale).round() * scale
}

/// CPU time of this process so far, in microseconds (the clock every thread adds to).
pub fn process_cpu_us() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// CPU microseconds per prediction of `head` on these rows (text or embeddings as it reads),
/// repeated until at least 50 ms of CPU time was spent so the clock's granularity does not
/// matter. The encoder's cost, when the head reads embeddings, is the caller's to add.
pub fn time_per_prediction(head: &Head, rows: &Part) -> anyhow::Result<f64> {
    let n = rows.y.len().clamp(1, 256);
    let texts = &rows.texts[..n.min(rows.texts.len())];
    let x: Matrix = rows.x.select_rows(&(0..n.min(rows.x.rows())).collect::<Vec<_>>());
    let started = process_cpu_us();
    let mut predictions = 0usize;
    while process_cpu_us() - started < 50_000.0 || predictions == 0 {
        let m = match head.input_kind() {
            keel_train::InputKind::Text => head.predict_proba_texts(texts)?,
            keel_train::InputKind::TextAndEmbedding { .. } => head.predict_proba_both(texts, &x)?,
            _ => head.predict_proba_batch(&x)?,
        };
        predictions += m.rows();
        if predictions > 10_000_000 {
            break;
        }
    }
    Ok(round2((process_cpu_us() - started) / predictions.max(1) as f64))
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
    fn mean_and_standard_error_of_folds() {
        let (m, se) = mean_se(&[0.8, 0.9, 0.7, 0.8, 0.8]);
        assert!((m - 0.8).abs() < 1e-12);
        // sd = sqrt(0.02 / 4) = 0.0707; se = sd / sqrt(5)
        assert!((se - (0.005f64).sqrt() / 5f64.sqrt()).abs() < 1e-12, "{se}");
    }
}
