//! Heads, baselines, calibration, evaluation and the gate: the parts `keel train` and
//! `keel eval` share. Pure computation on embeddings already in memory, plus the MLP's
//! checkpoint file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keel_core::Matrix;
use keel_eval::{BaselineResult, Gate, GateDecision, Report, ReportInput, TemperatureFit};
use keel_train::{Checkpoint, Head, InputKind, Majority, MlpConfig, NgramConfig, NgramModel};
use serde_json::json;

use crate::cli::{HeadArgs, HeadKind};

/// Folds for choosing the logistic regression's L2 strength on the training split.
pub const CV_FOLDS: usize = 5;

/// Row indices of each split.
#[derive(Debug)]
pub struct SplitRows {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

/// The rows of one split: embeddings, label indices, texts.
#[derive(Debug)]
pub struct Part {
    pub x: Matrix,
    pub y: Vec<usize>,
    pub texts: Vec<String>,
}

impl Part {
    pub fn new(x: &Matrix, y: &[usize], texts: &[&str], rows: &[usize]) -> Self {
        Self {
            x: x.select_rows(rows),
            y: rows.iter().map(|&i| y[i]).collect(),
            texts: rows.iter().map(|&i| texts[i].to_owned()).collect(),
        }
    }
}

/// What training produced, before it is stored.
#[derive(Debug)]
pub struct Trained {
    /// The chosen head with its temperature: the model version's artifact.
    pub head: Head,
    /// The n-gram baseline, kept as the server's fallback when the encoder fails.
    pub fallback: Head,
    /// Head-specific details: the cross-validation grid, or the MLP's epochs.
    pub details: serde_json::Value,
    pub calibration: TemperatureFit,
    pub baselines: Vec<BaselineResult>,
}

/// How the logistic regression's L2 strength is set.
#[derive(Clone, Debug, PartialEq)]
pub enum L2Choice {
    /// By [`CV_FOLDS`]-fold cross-validation on the training split.
    CrossValidate,
    /// Kept from an earlier cross-validation (`keel run`, when the training rows changed
    /// little); `note` says where from and is stored with the head's details.
    Keep { l2: f64, note: serde_json::Value },
}

/// Trains the chosen head on `train` (the MLP stops early on `validation`), fits its
/// temperature on `validation`, and trains the majority and n-gram baselines on `train`.
/// Deterministic for a given seed and `l2`. `checkpoint` is where the MLP saves each epoch.
#[allow(clippy::too_many_arguments)]
pub fn train_heads(
    train: &Part,
    validation: &Part,
    test: &Part,
    labels: &[String],
    args: &HeadArgs,
    seed: u64,
    checkpoint: &Path,
    l2: &L2Choice,
) -> anyhow::Result<Trained> {
    let started = std::time::Instant::now();
    let (base, details) = match (args.kind, l2) {
        (HeadKind::Logistic, L2Choice::CrossValidate) => {
            let (m, cv) = keel_train::fit_cv(&train.x, &train.y, labels.to_vec(), &[], CV_FOLDS, seed)?;
            (Head::Logistic(m), json!({"cross_validation": cv}))
        }
        (HeadKind::Logistic, L2Choice::Keep { l2, note }) => {
            let cfg = keel_train::LrConfig { l2: *l2, ..keel_train::LrConfig::default() };
            let (m, fit) = keel_train::fit(&train.x, &train.y, labels.to_vec(), &cfg)?;
            (Head::Logistic(m), json!({"l2_kept": {"l2": l2, "from": note, "fit": fit}}))
        }
        (HeadKind::Mlp, _) => {
            let cfg = MlpConfig {
                hidden: args.mlp_hidden,
                max_epochs: args.mlp_max_epochs,
                patience: args.mlp_patience,
                seed,
                ..MlpConfig::default()
            };
            let mut ckpt = FileCheckpoint::new(checkpoint.to_owned());
            let (m, report) = keel_train::fit_mlp(
                &train.x,
                &train.y,
                &validation.x,
                &validation.y,
                labels.to_vec(),
                &cfg,
                &mut ckpt,
            )?;
            ckpt.remove();
            (Head::Mlp(m), json!({"mlp": {"config": cfg, "report": report}}))
        }
    };
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), head = base.kind(), "head trained");
    let logits = base.logits_batch(&validation.x)?;
    let calibration = keel_eval::fit_temperature(&logits, &validation.y);
    let head = base.with_temperature(calibration.temperature as f32);

    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "temperature fitted");
    let majority = Head::Majority(Majority::fit(&train.y, labels.to_vec())?);
    let ngram_cfg = NgramConfig { seed, ..NgramConfig::default() };
    let (ngram, _) = NgramModel::fit(&train.texts, &train.y, labels.to_vec(), &ngram_cfg)?;
    let fallback = Head::Ngram(ngram);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "n-gram baseline trained");
    let baselines = vec![
        BaselineResult::new("majority class", &test.y, &majority.predict_proba_batch(&test.x)?, labels),
        BaselineResult::new("word and character n-grams", &test.y, &fallback.predict_proba_texts(&test.texts)?, labels),
    ];
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "baselines evaluated");
    Ok(Trained { head, fallback, details, calibration, baselines })
}

/// A head's class probabilities on a split, reading embeddings or text as the head needs.
pub fn predict(head: &Head, part: &Part) -> anyhow::Result<Matrix> {
    Ok(match head.input_kind() {
        InputKind::Text => head.predict_proba_texts(&part.texts)?,
        InputKind::Embedding { dim } if dim != part.x.cols() => {
            anyhow::bail!("the head reads {dim}-dimensional embeddings but the encoder gives {}", part.x.cols())
        }
        InputKind::Embedding { .. } | InputKind::Any => head.predict_proba_batch(&part.x)?,
    })
}

/// The full report of `proba` on the test split.
pub fn report(title: String, model: String, test: &Part, proba: &Matrix, labels: &[String]) -> Report {
    let mut input = ReportInput::new(&test.y, proba, labels);
    input.title = title;
    input.model = model;
    input.texts = Some(&test.texts);
    keel_eval::build_report(&input)
}

/// Compares a challenger with another version on the same test rows, or says why they cannot
/// be compared. Both must share the label list; the other head reads the same embeddings
/// (the caller checks the encoder) or text.
pub fn gate(
    challenger: &Matrix,
    other: &Head,
    other_tag: &str,
    test: &Part,
    labels: &[String],
) -> Result<GateDecision, String> {
    gate_with(&Gate::default(), challenger, other, other_tag, test, labels)
}

/// [`gate`] with the thresholds and bootstrap of `rule` (keel.toml's `[gate]`).
pub fn gate_with(
    rule: &Gate,
    challenger: &Matrix,
    other: &Head,
    other_tag: &str,
    test: &Part,
    labels: &[String],
) -> Result<GateDecision, String> {
    if other.labels() != labels {
        return Err(format!(
            "not compared with {other_tag}: it predicts other labels ({}), so macro-F1 is not comparable",
            other.labels().join(", ")
        ));
    }
    let theirs = predict(other, test).map_err(|e| format!("not compared with {other_tag}: {e:#}"))?;
    let mut d = rule.decide(&test.y, challenger, &theirs);
    d.reason = format!("{} (against {other_tag}, {} test rows)", d.reason, test.y.len());
    Ok(d)
}

/// Headline figures for the registry row and the terminal.
pub fn metrics(report: &Report, trained: Option<&Trained>) -> serde_json::Value {
    let e = &report.evaluation;
    let mut m = json!({
        "accuracy": e.accuracy,
        "macro_f1": e.macro_f1,
        "log_loss": e.log_loss,
        "brier": report.brier,
        "ece": report.ece,
        "intervals": report.intervals,
    });
    if let Some(t) = trained {
        m["head"] = json!(t.head.kind());
        m["temperature"] = json!(t.calibration.temperature);
        m["calibration"] = json!({"before": t.calibration.before, "after": t.calibration.after});
        m["baselines"] = json!(t.baselines);
        if let serde_json::Value::Object(d) = &t.details {
            for (k, v) in d {
                m[k] = v.clone();
            }
        }
    }
    m
}

/// The MLP's checkpoint: one file, replaced atomically after every epoch (temporary file,
/// fsync, rename), so a kill leaves either the previous epoch's state or the new one.
#[derive(Debug)]
pub struct FileCheckpoint {
    path: PathBuf,
}

impl FileCheckpoint {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Deletes the checkpoint once training has finished.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Checkpoint for FileCheckpoint {
    fn save(&mut self, _epoch: usize, bytes: &[u8]) -> std::io::Result<()> {
        write_atomically(&self.path, bytes)
    }

    fn load(&mut self) -> Option<Vec<u8>> {
        std::fs::read(&self.path).ok()
    }
}

/// Writes the HTML report to `path`, atomically.
pub fn write_html(path: &Path, html: &str) -> anyhow::Result<()> {
    write_atomically(path, html.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces `path` with `bytes` through a temporary file in the same folder, fsynced, then
/// renamed: a reader (or a process killed midway) sees the old file or the new one, never half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
