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
use super::select::{self, ModelSelection};

pub use super::select::CV_FOLDS;

/// Which classifier reads the embeddings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// Multinomial logistic regression, L2 strength by cross-validation on the training split.
    Logistic,
    /// One hidden layer, early stopping on the validation split, checkpointed every epoch.
    Mlp,
    /// TF-IDF word 1–2-grams into linear SVMs over raw text (`C` by cross-validation); reads
    /// no embeddings, so it is served without the encoder.
    Sparse,
    /// TF-IDF word 1–2-grams and the embedding in one linear SVM (`C` by cross-validation):
    /// reads both the text and its embedding.
    Combined,
    /// Model selection: the n-gram model, the encoder head and the combined model are
    /// cross-validated on the same folds of the training split; the cheapest within one
    /// standard error of the best ships.
    #[default]
    Auto,
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
        Self { kind: HeadKind::Auto, mlp_hidden: 256, mlp_max_epochs: 100, mlp_patience: 5 }
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
    /// What auto selection compared and chose (`[head] kind = "auto"` only).
    pub selection: Option<ModelSelection>,
    /// Each candidate's measured CPU µs per prediction (auto only; not in any artifact): the
    /// heads' own until the caller adds the encoder's ([`select::add_encoder_cost`]).
    pub costs: Vec<f64>,
}

/// The train step's details artifact (fields in the order its JSON object sorts them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainDetails {
    pub baselines: Vec<BaselineResult>,
    pub calibration: TemperatureFit,
    pub details: serde_json::Value,
    pub head: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<ModelSelection>,
}

impl TrainDetails {
    pub fn of(t: &TrainedHeads) -> Self {
        Self {
            baselines: t.baselines.clone(),
            calibration: t.calibration.clone(),
            details: t.details.clone(),
            head: t.head.kind().to_owned(),
            selection: t.selection.clone(),
        }
    }

    /// The artifact's bytes: compact JSON with object keys sorted (as `serde_json::Value`
    /// writes them), so the bytes do not depend on field order.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_value(self).expect("training details serialise").to_string().into_bytes()
    }
}

/// The base head before calibration, its details, the cross-validated L2 if any, and what auto
/// selection chose.
struct Base {
    head: Head,
    details: serde_json::Value,
    cross_validated_l2: Option<f64>,
    selection: Option<ModelSelection>,
    /// CPU µs per prediction of each candidate, measured (auto only; kept out of artifacts).
    costs: Vec<f64>,
    /// Auto selection's n-gram model, fitted on the training split: the baseline and fallback
    /// in place of the hashed n-gram model (which is trained only when this is `None`).
    fallback: Option<Head>,
}

/// Auto selection: every family cross-validated on the training split, timed on validation
/// texts, and the one-standard-error rule.
fn select_base(input: &TrainInput<'_>) -> anyhow::Result<Base> {
    let started = std::time::Instant::now();
    let auto = select::auto(input.train, input.validation, input.labels, input.seed)?;
    let select::Auto { head, fallback, details, cross_validated_l2, scores, costs, chosen } = auto;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), chosen = scores[chosen].family, "selection done");
    let selection = ModelSelection {
        candidates: scores.clone(),
        chosen: scores[chosen].family.clone(),
        rule: "the cheapest candidate within one standard error of the best mean fold accuracy".into(),
        reason: select::reason(&scores, chosen),
        cost_note: None,
    };
    // A chosen logistic regression carries its L2 origin, so later runs on nearly the same rows
    // keep both the family and the strength (see cmd/run/l2.rs).
    Ok(Base { head, details, cross_validated_l2, selection: Some(selection), costs, fallback: Some(fallback) })
}

fn fit_base(input: &TrainInput<'_>) -> anyhow::Result<Base> {
    let (train, labels, seed) = (input.train, input.labels, input.seed);
    let plain = |(head, details, l2): (Head, serde_json::Value, Option<f64>)| Base {
        head,
        details,
        cross_validated_l2: l2,
        selection: None,
        costs: Vec::new(),
        fallback: None,
    };
    Ok(plain(match (input.spec.kind, input.l2) {
        (HeadKind::Auto, L2Choice::CrossValidate) => return select_base(input),
        (HeadKind::Combined, _) => {
            let cfg = keel_train::SparseConfig { seed, ..keel_train::SparseConfig::default() };
            let (m, cv) = keel_train::SparseModel::fit_cv_combined(
                &train.texts,
                &train.x,
                &train.y,
                labels.to_vec(),
                &cfg,
                (&[], CV_FOLDS),
            )?;
            (Head::Sparse(m), json!({"cross_validation": cv}), None)
        }
        (HeadKind::Sparse, _) => {
            let cfg = keel_train::SparseConfig { seed, ..keel_train::SparseConfig::default() };
            let (m, cv) =
                keel_train::SparseModel::fit_cv(&train.texts, &train.y, labels.to_vec(), &cfg, &[], CV_FOLDS)?;
            (Head::Sparse(m), json!({"cross_validation": cv}), None)
        }
        (HeadKind::Logistic, L2Choice::CrossValidate) => {
            let (m, cv) = keel_train::fit_cv(&train.x, &train.y, labels.to_vec(), &[], CV_FOLDS, seed)?;
            let chosen = cv.chosen_l2;
            (Head::Logistic(m), json!({"cross_validation": cv}), Some(chosen))
        }
        (HeadKind::Logistic | HeadKind::Auto, L2Choice::Keep { l2, note }) => {
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
    }))
}

/// Trains the chosen head on `train` (the MLP stops early on `validation`), fits its
/// temperature on `validation`, and trains the majority and n-gram baselines on `train`.
/// Deterministic for a given seed and `l2`.
pub fn train_heads(input: &TrainInput<'_>) -> anyhow::Result<TrainedHeads> {
    let started = std::time::Instant::now();
    let (train, validation, test, labels) = (input.train, input.validation, input.test, input.labels);
    // Auto selection fits its own n-gram model on the training split, which serves as the
    // baseline and fallback. Otherwise the hashed n-gram baseline (one sequential SGD) trains
    // on its own thread beside the head, whose fits leave a core idle between stages; neither
    // reads what the other writes.
    let selects = matches!((input.spec.kind, input.l2), (HeadKind::Auto, L2Choice::CrossValidate));
    let (base, ngram) = std::thread::scope(|s| {
        let ngram = (!selects).then(|| {
            s.spawn(|| {
                let ngram_cfg = NgramConfig { seed: input.seed, ..NgramConfig::default() };
                let fitted = NgramModel::fit(&train.texts, &train.y, labels.to_vec(), &ngram_cfg);
                let cpu_s = select::thread_cpu_us() / 1e6;
                tracing::debug!(seconds = started.elapsed().as_secs_f64(), cpu_s, "n-gram baseline trained");
                fitted
            })
        });
        let base = fit_base(input);
        (base, ngram.map(std::thread::ScopedJoinHandle::join))
    });
    let Base { head: base, details, cross_validated_l2, selection, costs, fallback } = base?;
    let (fallback, baseline_name) = match (fallback, ngram) {
        (Some(sparse), _) => (sparse, "TF-IDF word 1–2-grams (the n-gram model)"),
        (None, Some(ngram)) => {
            let (ngram, _) = ngram.map_err(|_| anyhow::anyhow!("the n-gram baseline's thread panicked"))??;
            (Head::Ngram(ngram), "word and character n-grams")
        }
        (None, None) => anyhow::bail!("no n-gram baseline was trained"),
    };
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), head = base.kind(), "head trained");
    let logits = logits(&base, validation)?;
    let calibration = keel_eval::fit_temperature(&logits, &validation.y);
    let head = base.with_temperature(calibration.temperature as f32);

    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "temperature fitted");
    let majority = Head::Majority(Majority::fit(&train.y, labels.to_vec())?);
    let baselines = vec![
        BaselineResult::new("majority class", &test.y, &majority.predict_proba_batch(&test.x)?, labels),
        BaselineResult::new(baseline_name, &test.y, &fallback.predict_proba_texts(&test.texts)?, labels),
    ];
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "baselines evaluated");
    Ok(TrainedHeads { head, fallback, details, cross_validated_l2, calibration, baselines, selection, costs })
}

/// A head's logits on a split, reading embeddings or text as the head needs.
fn logits(head: &Head, part: &Part) -> anyhow::Result<Matrix> {
    Ok(match head.input_kind() {
        InputKind::Text => head.logits_texts(&part.texts)?,
        InputKind::TextAndEmbedding { .. } => head.logits_both(&part.texts, &part.x)?,
        _ => head.logits_batch(&part.x)?,
    })
}

/// A head's class probabilities on a split, reading embeddings or text as the head needs.
pub fn predict(head: &Head, part: &Part) -> anyhow::Result<Matrix> {
    Ok(match head.input_kind() {
        InputKind::Text => head.predict_proba_texts(&part.texts)?,
        InputKind::Embedding { dim } | InputKind::TextAndEmbedding { dim } if dim != part.x.cols() => {
            anyhow::bail!("the head reads {dim}-dimensional embeddings but the encoder gives {}", part.x.cols())
        }
        InputKind::TextAndEmbedding { .. } => head.predict_proba_both(&part.texts, &part.x)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A part whose label is in the text's last word and, more weakly, in the first embedding
    /// component (noise elsewhere).
    fn part(n: usize, seed: u64, signal: f32) -> Part {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut x = Matrix::zeros(n, 8);
        let (mut y, mut texts) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % 2;
            // A 64-bit LCG (Knuth's MMIX constants): noise that only depends on the seed.
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let h = state;
            for j in 0..8 {
                let noise = ((h >> (j * 8)) & 0xff) as f32 / 255.0 - 0.5;
                x.row_mut(i)[j] = noise + if j == 0 { signal * (c as f32 - 0.5) } else { 0.0 };
            }
            y.push(c);
            texts.push(format!("row {} of the set, filed under tag{c}", h % 997));
        }
        Part { x, y, texts }
    }

    fn trained(test: &Part, kind: HeadKind) -> TrainedHeads {
        let (train, validation) = (part(200, 1, 0.2), part(60, 2, 0.2));
        let labels = vec!["a".to_owned(), "b".to_owned()];
        let dir = tempfile::tempdir().unwrap();
        let input = TrainInput {
            train: &train,
            validation: &validation,
            test,
            labels: &labels,
            spec: &HeadSpec { kind, ..HeadSpec::default() },
            seed: 7,
            checkpoint: &dir.path().join("mlp"),
            l2: &L2Choice::CrossValidate,
        };
        train_heads(&input).unwrap()
    }

    fn selection_with_test(test: &Part) -> ModelSelection {
        trained(test, HeadKind::Auto).selection.unwrap()
    }

    #[test]
    fn auto_selection_keeps_its_own_ngram_model_as_baseline_and_fallback() {
        let test = part(80, 3, 0.2);
        // Under auto, the fallback is the selection's n-gram model fitted on all training
        // rows: it reads text only, and it is the baseline the report and the gate compare with.
        let auto = trained(&test, HeadKind::Auto);
        assert!(matches!(auto.fallback, Head::Sparse(_)), "{}", auto.fallback.kind());
        assert_eq!(auto.fallback.input_kind(), InputKind::Text);
        assert_eq!(auto.baselines[1].name, "TF-IDF word 1–2-grams (the n-gram model)");
        let proba = auto.fallback.predict_proba_texts(&test.texts).unwrap();
        let right = (0..test.y.len()).filter(|&i| (proba.row(i)[1] > 0.5) == (test.y[i] == 1)).count();
        assert!(right as f64 > 0.9 * test.y.len() as f64, "the tag gives the class away: {right}");
        // Any other head keeps the hashed n-gram baseline, trained beside it.
        let logistic = trained(&test, HeadKind::Logistic);
        assert!(matches!(logistic.fallback, Head::Ngram(_)), "{}", logistic.fallback.kind());
        assert_eq!(logistic.baselines[1].name, "word and character n-grams");
    }

    #[test]
    fn model_selection_never_reads_the_test_split() {
        // Real test rows, and test rows that would favour the encoder head if selection read
        // them (the text's tag points to the wrong class; the embedding carries the label).
        let honest = selection_with_test(&part(80, 3, 0.2));
        let mut misleading = part(80, 3, 8.0);
        for (t, &c) in misleading.texts.iter_mut().zip(&misleading.y) {
            *t = format!("filed under tag{}", 1 - c);
        }
        let fooled = selection_with_test(&misleading);
        assert_eq!(honest.chosen, "sparse", "{honest:?}");
        assert_eq!(fooled.chosen, honest.chosen);
        for (a, b) in honest.candidates.iter().zip(&fooled.candidates) {
            assert_eq!((a.mean, a.se, &a.fold_accuracy), (b.mean, b.se, &b.fold_accuracy));
        }
    }
}
