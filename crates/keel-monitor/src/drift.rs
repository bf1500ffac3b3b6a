//! Comparing a window with the reference: per-statistic tests, embedding drift (domain
//! classifier and MMD), prediction drift, live quality, and the verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use keel_core::{Matrix, SplitMix64};
use keel_eval::{BootstrapConfig, Interval};
use keel_train::LrConfig;
use serde::{Deserialize, Serialize};

use crate::profile::{EvalFigures, Observation, Profile};
use crate::sample::sample_indices;
use crate::stats;

/// Thresholds and sizes. The defaults are Evidently's where Evidently has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// At or below this many reference rows a column is tested by KS (numeric) or chi-square /
    /// z (categorical) at `p_value`; above, by normed Wasserstein or Jensen–Shannon at
    /// `distance` (Evidently: 1,000).
    pub small_reference: usize,
    /// Significance for the p-value tests (Evidently: 0.05). Also the false-alarm budget of the
    /// verdict: the domain classifier's permutation test runs at half of it (see
    /// [`EmbeddingDrift::p_value`]).
    pub p_value: f64,
    /// Threshold for normed Wasserstein and Jensen–Shannon distances (Evidently: 0.1). A
    /// distance counts only when the same column's KS (numeric) or chi-square / z (categorical)
    /// test also rejects at `p_value`: in a window of a few hundred rows, sampling noise alone
    /// reaches 0.1 often (normed Wasserstein 0.1–0.2 between two samples of the same text
    /// lengths), and Evidently's fixed threshold was meant for large samples. In large windows
    /// the test always rejects a real difference of that size, so the rule is Evidently's.
    pub distance: f64,
    /// Share of drifted statistics at which the data set counts as drifted (Evidently's
    /// `drift_share`: 0.5).
    pub drift_share: f64,
    /// Domain classifier ROC-AUC above which embeddings count as drifted (Evidently: 0.55),
    /// provided the permutation test agrees (see `domain_permutations`).
    pub domain_auc: f64,
    /// Label permutations for the domain classifier's null distribution: the same
    /// cross-validated classifier on reference and current rows shuffled together. Run only
    /// when the AUC is above `domain_auc`. With 99, the smallest p-value is 0.01.
    pub domain_permutations: usize,
    /// Folds of the domain classifier's cross-validation.
    pub folds: usize,
    /// Most current rows the domain classifier sees (a seeded sample of the window).
    pub domain_rows: usize,
    /// Rows per side for MMD, and its permutations.
    pub mmd_rows: usize,
    pub mmd_permutations: usize,
    /// Bins for PSI (Evidently: 10 by default for `psi`).
    pub psi_bins: usize,
    /// Bootstrap for live quality.
    pub bootstrap: BootstrapConfig,
    pub seed: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            small_reference: 1000,
            p_value: 0.05,
            distance: 0.1,
            drift_share: 0.5,
            domain_auc: 0.55,
            domain_permutations: 99,
            folds: 5,
            domain_rows: 2000,
            mmd_rows: 500,
            mmd_permutations: 200,
            psi_bins: 10,
            bootstrap: BootstrapConfig::default(),
            seed: 0x6b65_656c,
        }
    }
}

/// One statistic's test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub column: String,
    /// `ks`, `wasserstein`, `chi_square`, `z` or `jensen_shannon`.
    pub method: String,
    pub statistic: f64,
    /// The test's p-value; for distances, that of the KS or chi-square / z test guarding them
    /// against sampling noise.
    pub p_value: Option<f64>,
    /// Drift when `p_value < threshold` (tests) or `statistic >= threshold` and
    /// `p_value < MonitorConfig::p_value` (distances).
    pub threshold: f64,
    pub drifted: bool,
    /// Population stability index, for reference (not used in the verdict).
    pub psi: Option<f64>,
    pub reference_rows: usize,
    pub reference_mean: Option<f64>,
    pub current_mean: Option<f64>,
    /// Histograms for plotting: bin edges and the share of each sample per bin (numeric), or
    /// category names and shares (categorical).
    pub bins: Vec<String>,
    pub reference_share: Vec<f64>,
    pub current_share: Vec<f64>,
}

/// Embedding drift: a classifier told to separate reference from current rows, and MMD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingDrift {
    /// Cross-validated ROC-AUC of logistic regression on the standardised projections and
    /// residual norm, reference (0) against current (1). 0.5: indistinguishable.
    pub domain_auc: f64,
    pub threshold: f64,
    /// Share of label permutations whose AUC reached the observed one ((k + 1) / (B + 1)):
    /// how often a window of this size from the training distribution would look this
    /// different. `None` when the AUC is not above the threshold (no test needed).
    pub p_value: Option<f64>,
    /// Drift when the AUC is above `threshold` and `p_value` below half the configured
    /// significance. The verdict fires on this or on the data-set rule; giving each half of the
    /// budget (Bonferroni) keeps its false-alarm rate on unchanged traffic near the
    /// configured 5%, where two alarms at 5% each would approach 10%.
    pub drifted: bool,
    pub reference_rows: usize,
    pub current_rows: usize,
    /// Principal components the projections use.
    pub components: usize,
    /// Squared maximum mean discrepancy (unbiased, RBF kernel, median-heuristic bandwidth).
    pub mmd2: f64,
    pub mmd_p_value: f64,
    pub mmd_drifted: bool,
    pub mmd_bandwidth: f64,
    /// Mean residual norm (the part of an embedding the reference's principal components do
    /// not explain), reference and current.
    pub reference_residual: f64,
    pub current_residual: f64,
}

/// Predicted-class shares, reference and current.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictionDrift {
    pub labels: Vec<String>,
    pub reference_share: Vec<f64>,
    pub current_share: Vec<f64>,
    pub drifted: bool,
    /// The class whose share grew most, when the distribution drifted.
    pub shifted_toward: Option<String>,
}

/// Quality on the rows of the window that received feedback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveQuality {
    pub n: usize,
    pub accuracy: Interval,
    pub macro_f1: Interval,
    pub at_evaluation: Option<EvalFigures>,
    /// True when the evaluation figure lies above the live interval.
    pub degraded: bool,
}

/// The answer in plain words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub drift: bool,
    pub quality_degraded: bool,
    /// One sentence, e.g. `drift: inputs differ from training (domain classifier AUC 0.81; …)`.
    pub summary: String,
}

/// One window in a drift-over-time series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimePoint {
    pub label: String,
    pub n: usize,
    pub domain_auc: f64,
    pub mmd2: f64,
    pub drifted_share: f64,
    pub drift: bool,
}

/// Everything `compare` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub title: String,
    pub reference_rows: u64,
    pub current_rows: usize,
    pub columns: Vec<ColumnDrift>,
    pub drifted_share: f64,
    pub dataset_drift: bool,
    pub embedding: EmbeddingDrift,
    pub predictions: PredictionDrift,
    pub quality: Option<LiveQuality>,
    pub verdict: Verdict,
    pub over_time: Vec<TimePoint>,
    pub config: MonitorConfig,
}

fn numeric_test(name: &str, r: &[f64], c: &[f64], cfg: &MonitorConfig) -> ColumnDrift {
    let mut distinct: Vec<u64> = r.iter().chain(c).map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 5 {
        // Evidently treats a numeric column with at most 5 values as categorical.
        let key = |v: &f64| format!("{v}");
        let rk: Vec<String> = r.iter().map(key).collect();
        let ck: Vec<String> = c.iter().map(key).collect();
        let mut d = categorical_test(name, &stats::counts(&rk), &stats::counts(&ck), r.len(), cfg);
        d.reference_mean = Some(stats::mean(r));
        d.current_mean = Some(stats::mean(c));
        return d;
    }
    let (method, statistic, p_value, threshold, drifted) = if r.len() <= cfg.small_reference {
        let (d, p) = stats::ks_2samp(r, c);
        ("ks", d, Some(p), cfg.p_value, p < cfg.p_value)
    } else {
        let w = stats::wasserstein_normed(r, c);
        let (_, p) = stats::ks_2samp(r, c);
        ("wasserstein", w, Some(p), cfg.distance, w >= cfg.distance && p < cfg.p_value)
    };
    // Plot bins: 20 equal-width bins over the 1st–99th percentile of both samples.
    let both: Vec<f64> = r.iter().chain(c).copied().collect();
    let (lo, hi) = (stats::quantile(&both, 0.01), stats::quantile(&both, 0.99));
    let nb = 20;
    let width = ((hi - lo) / nb as f64).max(f64::MIN_POSITIVE);
    let hist = |v: &[f64]| -> Vec<f64> {
        let mut h = vec![0f64; nb];
        for &x in v {
            h[(((x - lo) / width).floor().max(0.0) as usize).min(nb - 1)] += 1.0;
        }
        h.iter().map(|k| k / v.len().max(1) as f64).collect()
    };
    ColumnDrift {
        column: name.to_owned(),
        method: method.into(),
        statistic,
        p_value,
        threshold,
        drifted,
        psi: Some(stats::psi(r, c, cfg.psi_bins)),
        reference_rows: r.len(),
        reference_mean: Some(stats::mean(r)),
        current_mean: Some(stats::mean(c)),
        bins: (0..=nb).map(|b| format!("{:.4}", lo + b as f64 * width)).collect(),
        reference_share: hist(r),
        current_share: hist(c),
    }
}

fn categorical_test(
    name: &str,
    r: &BTreeMap<String, u64>,
    c: &BTreeMap<String, u64>,
    n_ref: usize,
    cfg: &MonitorConfig,
) -> ColumnDrift {
    let n_values = r.keys().chain(c.keys()).collect::<std::collections::BTreeSet<_>>().len();
    let (s, p) = if n_values > 2 { stats::chi_square(r, c) } else { stats::proportion_z(r, c) };
    let (method, statistic, p_value, threshold, drifted) = if n_ref <= cfg.small_reference {
        (if n_values > 2 { "chi_square" } else { "z" }, s, Some(p), cfg.p_value, p < cfg.p_value)
    } else {
        let js = stats::jensen_shannon(r, c);
        ("jensen_shannon", js, Some(p), cfg.distance, js >= cfg.distance && p < cfg.p_value)
    };
    let keys: Vec<String> =
        r.keys().chain(c.keys()).cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let share = |m: &BTreeMap<String, u64>| -> Vec<f64> {
        let n = m.values().sum::<u64>().max(1) as f64;
        keys.iter().map(|k| m.get(k).copied().unwrap_or(0) as f64 / n).collect()
    };
    ColumnDrift {
        column: name.to_owned(),
        method: method.into(),
        statistic,
        p_value,
        threshold,
        drifted,
        psi: None,
        reference_rows: n_ref,
        reference_mean: None,
        current_mean: None,
        reference_share: share(r),
        current_share: share(c),
        bins: keys,
    }
}

fn standardise(rows: &[&[f32]], profile: &Profile) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * profile.feature_mean.len());
    for r in rows {
        for (j, &v) in r.iter().enumerate() {
            out.push(((f64::from(v) - profile.feature_mean[j]) / profile.feature_std[j].max(1e-9)) as f32);
        }
    }
    out
}

/// Out-of-fold ROC-AUC of logistic regression separating the rows of `x` labelled 0 from
/// those labelled 1.
fn cv_auc(x: &Matrix, y: &[usize], cfg: &MonitorConfig, seed: u64) -> f64 {
    let n = y.len();
    let folds = keel_train::stratified_folds(y, cfg.folds, seed);
    let lr = LrConfig { l2: 1e-3, max_iter: 300, tol: 1e-5, ..LrConfig::default() };
    let mut scores = vec![0f64; n];
    for k in 0..cfg.folds {
        let train: Vec<usize> = (0..n).filter(|&i| folds[i] != k).collect();
        let test: Vec<usize> = (0..n).filter(|&i| folds[i] == k).collect();
        let ty: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let Ok((m, _)) = keel_train::fit(&x.select_rows(&train), &ty, vec!["reference".into(), "current".into()], &lr)
        else {
            return 0.5;
        };
        for &i in &test {
            scores[i] = f64::from(m.predict_proba(x.row(i))[1]);
        }
    }
    let positive: Vec<bool> = y.iter().map(|&v| v == 1).collect();
    keel_eval::binary_roc_auc(&scores, &positive).unwrap_or(0.5)
}

/// Out-of-fold ROC-AUC of logistic regression separating `a` (label 0) from `b` (label 1), and,
/// when it is above the threshold, its permutation p-value: the same procedure on the labels
/// shuffled, `domain_permutations` times. (Cross-validated AUCs of a fitted classifier vary
/// more than the AUC of a fixed score: on 200 unchanged rows against 750 they reach 0.56, so
/// the null distribution is measured, not assumed.)
fn domain_auc(a: &[&[f32]], b: &[&[f32]], profile: &Profile, cfg: &MonitorConfig) -> (f64, Option<f64>) {
    let f = profile.feature_mean.len();
    let rows: Vec<&[f32]> = a.iter().chain(b).copied().collect();
    let x = Matrix::from_vec(rows.len(), f, standardise(&rows, profile));
    let mut y: Vec<usize> = (0..rows.len()).map(|i| usize::from(i >= a.len())).collect();
    let observed = cv_auc(&x, &y, cfg, cfg.seed);
    if observed <= cfg.domain_auc || cfg.domain_permutations == 0 {
        return (observed, None);
    }
    let mut rng = SplitMix64::new(cfg.seed ^ 7);
    let mut at_least = 0usize;
    for b in 0..cfg.domain_permutations {
        rng.shuffle(&mut y);
        if cv_auc(&x, &y, cfg, cfg.seed ^ (b as u64 + 1)) >= observed {
            at_least += 1;
        }
    }
    (observed, Some((at_least + 1) as f64 / (cfg.domain_permutations + 1) as f64))
}

/// Unbiased MMD² with an RBF kernel (bandwidth: median pairwise distance) and a permutation
/// p-value. Returns `(mmd², p, bandwidth)`.
fn mmd(a: &[&[f32]], b: &[&[f32]], profile: &Profile, cfg: &MonitorConfig) -> (f64, f64, f64) {
    let rows: Vec<&[f32]> = a.iter().chain(b).copied().collect();
    let f = profile.feature_mean.len();
    let x = standardise(&rows, profile);
    let n = rows.len();
    let mut d2 = vec![0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let s: f64 = (0..f).map(|k| f64::from(x[i * f + k] - x[j * f + k]).powi(2)).sum();
            d2[i * n + j] = s;
            d2[j * n + i] = s;
        }
    }
    let mut off: Vec<f64> = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).map(|(i, j)| d2[i * n + j]).collect();
    off.sort_by(f64::total_cmp);
    let median = if off.is_empty() { 1.0 } else { off[off.len() / 2].sqrt().max(1e-9) };
    let gamma = 1.0 / (2.0 * median * median);
    let kmat: Vec<f64> = d2.iter().map(|v| (-gamma * v).exp()).collect();
    let stat = |is_b: &[bool]| -> f64 {
        let (mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0);
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let v = kmat[i * n + j];
                match (is_b[i], is_b[j]) {
                    (false, false) => saa += v,
                    (true, true) => sbb += v,
                    _ => sab += v,
                }
            }
        }
        let m = is_b.iter().filter(|v| !**v).count() as f64;
        let l = n as f64 - m;
        saa / (m * (m - 1.0)) + sbb / (l * (l - 1.0)) - sab / (m * l)
    };
    let mut labels: Vec<bool> = (0..n).map(|i| i >= a.len()).collect();
    let observed = stat(&labels);
    let mut rng = SplitMix64::new(cfg.seed ^ 3);
    let mut at_least = 0usize;
    for _ in 0..cfg.mmd_permutations {
        rng.shuffle(&mut labels);
        if stat(&labels) >= observed {
            at_least += 1;
        }
    }
    let p = (at_least + 1) as f64 / (cfg.mmd_permutations + 1) as f64;
    (observed, p, median)
}

fn pick<'a>(v: &[&'a [f32]], k: usize, seed: u64) -> Vec<&'a [f32]> {
    sample_indices(v.len(), k, seed).into_iter().map(|i| v[i]).collect()
}

fn embedding_drift(profile: &Profile, cur: &Observation, cfg: &MonitorConfig) -> EmbeddingDrift {
    let f = profile.components + 1;
    let reference = profile.sample_features();
    let current_all: Vec<&[f32]> = cur.features.chunks(f).collect();
    let current = pick(&current_all, cfg.domain_rows, cfg.seed ^ 4);
    let (auc, auc_p) = domain_auc(&reference, &current, profile, cfg);
    let ma = pick(&reference, cfg.mmd_rows, cfg.seed ^ 5);
    let mb = pick(&current, cfg.mmd_rows, cfg.seed ^ 6);
    let (mmd2, p, bw) = mmd(&ma, &mb, profile, cfg);
    let resid = |v: &[&[f32]]| stats::mean(&v.iter().map(|r| f64::from(r[f - 1])).collect::<Vec<_>>());
    EmbeddingDrift {
        domain_auc: auc,
        threshold: cfg.domain_auc,
        p_value: auc_p,
        drifted: auc > cfg.domain_auc && auc_p.is_some_and(|p| p < cfg.p_value / 2.0),
        reference_rows: reference.len(),
        current_rows: current.len(),
        components: profile.components,
        mmd2,
        mmd_p_value: p,
        mmd_drifted: p < cfg.p_value,
        mmd_bandwidth: bw,
        reference_residual: resid(&reference),
        current_residual: resid(&current_all),
    }
}

/// Live quality from feedback: `y_true` are the true class indices of the rows with feedback,
/// `proba` the probabilities the model served for them.
pub fn live_quality(y_true: &[usize], proba: &Matrix, profile: &Profile, cfg: &MonitorConfig) -> Option<LiveQuality> {
    if y_true.is_empty() {
        return None;
    }
    let iv = keel_eval::bootstrap_intervals(y_true, proba, &cfg.bootstrap);
    let degraded =
        profile.evaluation.as_ref().is_some_and(|e| e.accuracy > iv.accuracy.hi || e.macro_f1 > iv.macro_f1.hi);
    Some(LiveQuality {
        n: y_true.len(),
        accuracy: iv.accuracy,
        macro_f1: iv.macro_f1,
        at_evaluation: profile.evaluation.clone(),
        degraded,
    })
}

/// Compares a window with the reference profile.
pub fn compare(
    profile: &Profile,
    current: &Observation,
    quality: Option<LiveQuality>,
    cfg: &MonitorConfig,
) -> DriftReport {
    let mut columns = Vec::new();
    for c in &profile.columns {
        if let Some(cur) = current.column(&c.name)
            && !cur.values.is_empty()
            && !c.values.is_empty()
        {
            columns.push(numeric_test(&c.name, &c.values, &cur.values, cfg));
        }
    }
    let name = |i: &u32| profile.labels.get(*i as usize).cloned().unwrap_or_else(|| format!("#{i}"));
    let rp: Vec<String> = profile.predicted.iter().map(name).collect();
    let cp: Vec<String> = current.predicted.iter().map(name).collect();
    let pred = categorical_test("predicted_class", &stats::counts(&rp), &stats::counts(&cp), rp.len(), cfg);
    let share = |v: &[u32]| -> Vec<f64> {
        let n = v.len().max(1) as f64;
        (0..profile.labels.len()).map(|c| v.iter().filter(|&&p| p as usize == c).count() as f64 / n).collect()
    };
    let (rs, cs) = (share(&profile.predicted), share(&current.predicted));
    let shifted_toward = if pred.drifted {
        (0..profile.labels.len())
            .max_by(|&a, &b| (cs[a] - rs[a]).total_cmp(&(cs[b] - rs[b])))
            .map(|c| profile.labels[c].clone())
    } else {
        None
    };
    let predictions = PredictionDrift {
        labels: profile.labels.clone(),
        reference_share: rs,
        current_share: cs,
        drifted: pred.drifted,
        shifted_toward,
    };
    columns.push(pred);
    let drifted = columns.iter().filter(|c| c.drifted).count();
    let drifted_share = drifted as f64 / columns.len().max(1) as f64;
    let dataset_drift = drifted_share >= cfg.drift_share;
    let embedding = embedding_drift(profile, current, cfg);
    let verdict = verdict(&columns, drifted_share, dataset_drift, &embedding, &predictions, quality.as_ref());
    DriftReport {
        title: "Drift report".into(),
        reference_rows: profile.n_rows,
        current_rows: current.n,
        columns,
        drifted_share,
        dataset_drift,
        embedding,
        predictions,
        quality,
        verdict,
        over_time: Vec::new(),
        config: cfg.clone(),
    }
}

/// Drift of each window against the reference, in order: the series behind the
/// drift-over-time plot.
pub fn over_time(profile: &Profile, windows: &[(String, Observation)], cfg: &MonitorConfig) -> Vec<TimePoint> {
    windows
        .iter()
        .filter(|(_, o)| o.n > 1)
        .map(|(label, o)| {
            let r = compare(profile, o, None, cfg);
            TimePoint {
                label: label.clone(),
                n: o.n,
                domain_auc: r.embedding.domain_auc,
                mmd2: r.embedding.mmd2,
                drifted_share: r.drifted_share,
                drift: r.verdict.drift,
            }
        })
        .collect()
}

fn ratio_words(r: f64, c: f64, what: &str) -> Option<String> {
    if r <= 0.0 || c <= 0.0 {
        return None;
    }
    let x = c / r;
    if x >= 1.0 { Some(format!("{what} {x:.1}× longer")) } else { Some(format!("{what} {:.1}× shorter", 1.0 / x)) }
}

fn verdict(
    columns: &[ColumnDrift],
    drifted_share: f64,
    dataset_drift: bool,
    e: &EmbeddingDrift,
    p: &PredictionDrift,
    q: Option<&LiveQuality>,
) -> Verdict {
    let drift = e.drifted || dataset_drift;
    let mut parts = Vec::new();
    let n_drifted = columns.iter().filter(|c| c.drifted).count();
    let mut inputs = vec![match e.p_value {
        Some(p) if !e.drifted => {
            format!(
                "domain classifier AUC {:.2}, within chance for {} rows: permutation p {p:.2}",
                e.domain_auc, e.current_rows
            )
        }
        _ => format!("domain classifier AUC {:.2}", e.domain_auc),
    }];
    let col = |name: &str| columns.iter().find(|c| c.column == name && c.drifted);
    if let Some(c) = col("text_chars")
        && let Some(s) = ratio_words(c.reference_mean.unwrap_or(0.0), c.current_mean.unwrap_or(0.0), "texts")
    {
        inputs.push(s);
    }
    if let Some(c) = col("oov_rate") {
        inputs.push(format!(
            "{:.0}% of words unseen in training, against {:.0}%",
            100.0 * c.current_mean.unwrap_or(0.0),
            100.0 * c.reference_mean.unwrap_or(0.0)
        ));
    }
    inputs.push(format!("{n_drifted} of {} statistics drifted", columns.len()));
    if !e.mmd_drifted && e.drifted {
        inputs.push(format!("MMD disagrees, p {:.2}", e.mmd_p_value));
    } else if e.mmd_drifted && !e.drifted {
        inputs.push(format!("MMD alone sees a difference, p {:.3}", e.mmd_p_value));
    }
    if drift {
        parts.push(format!("inputs differ from training ({})", inputs.join("; ")));
    } else {
        parts.push(format!("inputs look like training ({})", inputs.join("; ")));
    }
    if let Some(t) = &p.shifted_toward {
        let c = p.labels.iter().position(|l| l == t).unwrap_or(0);
        parts.push(format!(
            "predictions shifted toward `{t}` ({:.0}% → {:.0}%)",
            100.0 * p.reference_share[c],
            100.0 * p.current_share[c]
        ));
    }
    let mut degraded = false;
    if let Some(q) = q {
        degraded = q.degraded;
        let against =
            q.at_evaluation.as_ref().map(|e| format!(" against {:.2} at evaluation", e.accuracy)).unwrap_or_default();
        parts.push(format!(
            "live accuracy {:.2} [{:.2}, {:.2}]{against} on {} rows with feedback",
            q.accuracy.point, q.accuracy.lo, q.accuracy.hi, q.n
        ));
    }
    let head = match (drift, degraded) {
        (true, true) => "drift and lower quality",
        (true, false) => "drift",
        (false, true) => "lower quality",
        (false, false) => "no drift",
    };
    let _ = drifted_share;
    Verdict { drift, quality_degraded: degraded, summary: format!("{head}: {}", parts.join("; ")) }
}

impl DriftReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// A short table for a terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.verdict.summary);
        let _ = writeln!(s);
        let _ = writeln!(s, "{} reference rows, {} current rows", self.reference_rows, self.current_rows);
        let e = &self.embedding;
        let _ = writeln!(
            s,
            "embeddings  domain classifier AUC {:.3} (drift above {:.2}: how well a classifier tells current rows from training rows; 0.5 = not at all)",
            e.domain_auc, e.threshold
        );
        if let Some(p) = e.p_value {
            let _ = writeln!(
                s,
                "            permutation p {p:.3} (how often unchanged traffic of this size scores as high; drift below {:.3})",
                self.config.p_value / 2.0
            );
        }
        let _ = writeln!(
            s,
            "            MMD² {:.4}, permutation p {:.3} (second opinion; drift below 0.05)",
            e.mmd2, e.mmd_p_value
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<16} {:<15} {:>10} {:>9} {:>10} {:>10}  drift",
            "statistic", "test", "value", "p", "ref mean", "cur mean"
        );
        for c in &self.columns {
            let p = c.p_value.map_or("-".to_owned(), |p| format!("{p:.4}"));
            let m = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
            let _ = writeln!(
                s,
                "{:<16} {:<15} {:>10.4} {:>9} {:>10} {:>10}  {}",
                c.column,
                c.method,
                c.statistic,
                p,
                m(c.reference_mean),
                m(c.current_mean),
                if c.drifted { "yes" } else { "no" }
            );
        }
        if !self.over_time.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "over time (domain classifier AUC per window)");
            for t in &self.over_time {
                let _ = writeln!(
                    s,
                    "  {:<24} {:>6} rows  AUC {:.3}{}",
                    t.label,
                    t.n,
                    t.domain_auc,
                    if t.drift { "  drift" } else { "" }
                );
            }
        }
        s
    }
}
