//! Train: embeddings and labels of the training split → the chosen head (temperature fitted on
//! the validation split), the majority and n-gram baselines, and the MLP's checkpoint file.
//! Pure computation on embeddings already in memory, plus that one file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use keel_core::Matrix;
use keel_eval::{BaselineResult, TemperatureFit};
use keel_train::{Checkpoint, Head, InputKind, Majority, MlpConfig, NgramConfig, NgramModel};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::data::Part;

/// Folds for choosing the logistic regression's L2 strength on the training split.
pub const CV_FOLDS: usize = 5;

/// Which classifier reads the embeddings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// Multinomial logistic regression, L2 strength by cross-validation on the training split.
    #[default]
    Logistic,
    /// One hidden layer, early stopping on the validation split, checkpointed every epoch.
    Mlp,
}

/// The head to train and its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadSpec {
    pub kind: HeadKind,
    pub mlp_hidden: usize,
    pub mlp_max_epochs: usize,
    pub mlp_patience: usize,
}

impl Default for HeadSpec {
    fn default() -> Self {
        Self { kind: HeadKind::Logistic, mlp_hidden: 256, mlp_max_epochs: 100, mlp_patience: 5 }
    }
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

/// Everything [`train_heads`] reads.
#[derive(Debug)]
pub struct TrainInput<'a> {
    pub train: &'a Part,
    pub validation: &'a Part,
    pub test: &'a Part,
    pub labels: &'a [String],
    pub spec: &'a HeadSpec,
    pub seed: u64,
    /// Where the MLP saves each epoch.
    pub checkpoint: &'a Path,
    pub l2: &'a L2Choice,
}

/// What training produced, before it is stored.
#[derive(Debug)]
pub struct TrainedHeads {
    /// The chosen head with its temperature: the model version's artifact.
    pub head: Head,
    /// The n-gram baseline, kept as the server's fallback when the encoder fails.
    pub fallback: Head,
    /// Head-specific details: the cross-validation grid, or the MLP's epochs.
    pub details: serde_json::Value,
    /// The L2 strength cross-validation chose, when it ran.
    pub cross_validated_l2: Option<f64>,
    pub calibration: TemperatureFit,
    pub baselines: Vec<BaselineResult>,
}

/// The train step's details artifact (fields in the order its JSON object sorts them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainDetails {
    pub baselines: Vec<BaselineResult>,
    pub calibration: TemperatureFit,
    pub details: serde_json::Value,
    pub head: String,
}

impl TrainDetails {
    pub fn of(t: &TrainedHeads) -> Self {
        Self {
            baselines: t.baselines.clone(),
            calibration: t.calibration.clone(),
            details: t.details.clone(),
            head: t.head.kind().to_owned(),
        }
    }

    /// The artifact's bytes: compact JSON with object keys sorted (as `serde_json::Value`
    /// writes them), so the bytes do not depend on field order.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_value(self).expect("training details serialise").to_string().into_bytes()
    }
}

/// The base head, before calibration, with its details and the cross-validated L2 if any.
fn fit_base(input: &TrainInput<'_>) -> anyhow::Result<(Head, serde_json::Value, Option<f64>)> {
    let (train, labels, seed) = (input.train, input.labels, input.seed);
    Ok(match (input.spec.kind, input.l2) {
        (HeadKind::Logistic, L2Choice::CrossValidate) => {
            let (m, cv) = keel_train::fit_cv(&train.x, &train.y, labels.to_vec(), &[], CV_FOLDS, seed)?;
            let chosen = cv.chosen_l2;
            (Head::Logistic(m), json!({"cross_validation": cv}), Some(chosen))
        }
        (HeadKind::Logistic, L2Choice::Keep { l2, note }) => {
            let cfg = keel_train::LrConfig { l2: *l2, ..keel_train::LrConfig::default() };
            let (m, fit) = keel_train::fit(&train.x, &train.y, labels.to_vec(), &cfg)?;
            (Head::Logistic(m), json!({"l2_kept": {"l2": l2, "from": note, "fit": fit}}), None)
        }
        (HeadKind::Mlp, _) => {
            let spec = input.spec;
            let cfg = MlpConfig {
                hidden: spec.mlp_hidden,
                max_epochs: spec.mlp_max_epochs,
                patience: spec.mlp_patience,
                seed,
                ..MlpConfig::default()
            };
            let mut ckpt = FileCheckpoint::new(input.checkpoint.to_owned());
            let v = input.validation;
            let (m, report) = keel_train::fit_mlp(&train.x, &train.y, &v.x, &v.y, labels.to_vec(), &cfg, &mut ckpt)?;
            ckpt.remove();
            (Head::Mlp(m), json!({"mlp": {"config": cfg, "report": report}}), None)
        }
    })
}

/// Trains the chosen head on `train` (the MLP stops early on `validation`), fits its
/// temperature on `validation`, and trains the majority and n-gram baselines on `train`.
/// Deterministic for a given seed and `l2`.
pub fn train_heads(input: &TrainInput<'_>) -> anyhow::Result<TrainedHeads> {
    let started = std::time::Instant::now();
    let (base, details, cross_validated_l2) = fit_base(input)?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), head = base.kind(), "head trained");
    let (train, validation, test, labels) = (input.train, input.validation, input.test, input.labels);
    let logits = base.logits_batch(&validation.x)?;
    let calibration = keel_eval::fit_temperature(&logits, &validation.y);
    let head = base.with_temperature(calibration.temperature as f32);

    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "temperature fitted");
    let majority = Head::Majority(Majority::fit(&train.y, labels.to_vec())?);
    let ngram_cfg = NgramConfig { seed: input.seed, ..NgramConfig::default() };
    let (ngram, _) = NgramModel::fit(&train.texts, &train.y, labels.to_vec(), &ngram_cfg)?;
    let fallback = Head::Ngram(ngram);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "n-gram baseline trained");
    let baselines = vec![
        BaselineResult::new("majority class", &test.y, &majority.predict_proba_batch(&test.x)?, labels),
        BaselineResult::new("word and character n-grams", &test.y, &fallback.predict_proba_texts(&test.texts)?, labels),
    ];
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "baselines evaluated");
    Ok(TrainedHeads { head, fallback, details, cross_validated_l2, calibration, baselines })
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
