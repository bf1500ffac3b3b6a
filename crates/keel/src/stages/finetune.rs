//! Fine-tuning the encoder on the task before the embed step reads it (`[encoder.fine_tune]`,
//! `keel train --fine-tune`): contrastive pairs from the training split (SetFit's recipe), full
//! fine-tuning of the body (`setfit`) or LoRA adapters on a frozen base (`lora`), early stopping
//! on the validation split's pairs, a checkpoint file so a killed run resumes and ends with the
//! same bytes as an uninterrupted one. The result is an artifact (the adapter, or the tuned
//! weights) that names a new encoder: `{base}+lora-{hash}`; its embeddings are cached under that
//! id, apart from the base model's.

use std::path::Path;

use anyhow::{Context as _, bail};
use keel_core::SplitMix64;
use keel_embed::finetune::{
    self, AdapterKind, BertWeights, FineTuneConfig, FineTuner, LoraConfig, Loss, Method, Pair, Proj,
};
use keel_embed::{Encoder, InstalledModel};
use keel_eval::{FineTuneRecord, FineTuneRun, PairsRecipe};
use serde::{Deserialize, Serialize};

use crate::output;

/// How the encoder adapts (`[encoder.fine_tune] method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneMethod {
    /// The base encoder, frozen.
    #[default]
    None,
    /// Every weight of the body, as SetFit trains it (lr 2e-5); the artifact is the whole model.
    Setfit,
    /// Low-rank adapters with the base frozen (lr 5e-4); the artifact is the small adapter.
    Lora,
}

/// The loss on the pairs (`[encoder.fine_tune] loss`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairLoss {
    /// SetFit's default: the pair's cosine regressed on 1 (same label) or 0.
    #[default]
    Cosine,
    /// Multiple-negatives ranking on same-label pairs, the rest of the batch as negatives.
    Ranking,
}

/// `[encoder.fine_tune]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneSection {
    pub method: FineTuneMethod,
    pub loss: PairLoss,
    /// Pairs drawn from the training split; 0: SetFit's 40 per training row, at most
    /// [`DEFAULT_MAX_PAIRS`].
    pub max_pairs: usize,
    pub epochs: usize,
    /// Pairs per optimiser step.
    pub batch_pairs: usize,
    /// Peak learning rate; 0: the method's default (2e-5 setfit, 5e-4 lora).
    pub learning_rate: f64,
    /// LoRA: rank, alpha and the projections adapted in every layer (query, key, value,
    /// attn_out, ff_in, ff_out).
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<String>,
    /// Steps between validation losses; 0: a tenth of the planned steps (at least 10).
    pub eval_every: usize,
    /// Evaluations without a lower validation loss before stopping.
    pub patience: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

/// Default cap on pairs: about four minutes of steps on two cores for a small encoder.
pub const DEFAULT_MAX_PAIRS: usize = 2048;

impl Default for FineTuneSection {
    fn default() -> Self {
        let lora = LoraConfig::default();
        Self {
            method: FineTuneMethod::None,
            loss: PairLoss::Cosine,
            max_pairs: 0,
            epochs: 1,
            batch_pairs: 16,
            learning_rate: 0.0,
            rank: lora.rank,
            alpha: lora.alpha,
            targets: lora.targets.iter().map(|p| p.name().to_owned()).collect(),
            eval_every: 0,
            patience: 3,
            checkpoint_every: 20,
        }
    }
}

impl FineTuneSection {
    /// Whether this section asks for fine-tuning at all.
    pub fn active(&self) -> bool {
        self.method != FineTuneMethod::None
    }

    /// Refuses settings that cannot train, naming the key.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.epochs == 0 || self.batch_pairs == 0 || self.checkpoint_every == 0 {
            bail!("[encoder.fine_tune] epochs, batch_pairs and checkpoint_every must be at least 1");
        }
        if self.learning_rate < 0.0 || !self.learning_rate.is_finite() {
            bail!("[encoder.fine_tune] learning_rate must be 0 (the method's default) or above");
        }
        if self.method == FineTuneMethod::Lora {
            if self.rank == 0 || self.alpha <= 0.0 {
                bail!("[encoder.fine_tune] rank must be at least 1 and alpha above 0");
            }
            self.projections()?;
        }
        Ok(())
    }

    fn projections(&self) -> anyhow::Result<Vec<Proj>> {
        if self.targets.is_empty() {
            bail!("[encoder.fine_tune] targets is empty: name at least one projection");
        }
        self.targets
            .iter()
            .map(|t| {
                Proj::parse(t).with_context(|| {
                    let all: Vec<&str> = Proj::ALL.iter().map(|p| p.name()).collect();
                    format!("[encoder.fine_tune] targets: unknown projection {t:?}; use {}", all.join(", "))
                })
            })
            .collect()
    }

    fn config(&self, total_steps: u64, seed: u64) -> anyhow::Result<FineTuneConfig> {
        let mut cfg = match self.method {
            FineTuneMethod::Setfit => FineTuneConfig::setfit(total_steps),
            FineTuneMethod::Lora => FineTuneConfig {
                method: Method::Lora(LoraConfig { rank: self.rank, alpha: self.alpha, targets: self.projections()? }),
                ..FineTuneConfig::lora(total_steps)
            },
            FineTuneMethod::None => bail!("fine-tuning was not asked for"),
        };
        if self.learning_rate > 0.0 {
            cfg.learning_rate = self.learning_rate;
        }
        cfg.loss = match self.loss {
            PairLoss::Cosine => Loss::CosineSimilarity,
            PairLoss::Ranking => Loss::MultipleNegativesRanking { scale: 20.0 },
        };
        cfg.threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        cfg.seed = seed;
        Ok(cfg)
    }

    fn adapter_kind(&self) -> AdapterKind {
        match self.method {
            FineTuneMethod::Lora => AdapterKind::Lora,
            _ => AdapterKind::Weights,
        }
    }
}

/// The artifact kind an adaptation is stored as.
pub fn artifact_kind(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::Lora => "encoder/lora",
        AdapterKind::Weights => "encoder/weights",
    }
}

/// The adapter kind a [`FineTuneRecord`] names.
pub fn kind_of(record: &FineTuneRecord) -> anyhow::Result<AdapterKind> {
    match record.adapter_kind.as_str() {
        "lora" => Ok(AdapterKind::Lora),
        "weights" => Ok(AdapterKind::Weights),
        other => bail!("unknown adapter kind {other:?}"),
    }
}

/// What fine-tuning reads: the base encoder and model files, the training and validation texts
/// with their classes, and where its checkpoint lives.
pub struct FineTuneInput<'a> {
    pub section: &'a FineTuneSection,
    pub base: &'a Encoder,
    pub installed: &'a InstalledModel,
    pub train: (&'a [&'a str], &'a [usize]),
    pub validation: (&'a [&'a str], &'a [usize]),
    pub seed: u64,
    pub checkpoint: &'a Path,
    pub quiet: bool,
}

/// The adaptation's bytes and what the run did (the record's hashes and ids are filled in by
/// the caller once the bytes are stored).
pub struct Adaptation {
    pub kind: AdapterKind,
    pub bytes: Vec<u8>,
    pub method: String,
    pub run: FineTuneRun,
}

/// The loop's position, saved in every checkpoint with the tuner's state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// What the checkpoint was made for; one made for anything else is ignored.
    plan: String,
    step: u64,
    best: Option<(u64, f32)>,
    since_best: usize,
    history: Vec<(u64, f32)>,
    stopped_early: bool,
}

/// Validation pairs drawn for the early-stopping loss.
const VALIDATION_PAIRS: usize = 128;

/// Fine-tunes the base encoder (blocking); see the module comment.
pub fn fine_tune(input: &FineTuneInput<'_>) -> anyhow::Result<Adaptation> {
    let s = input.section;
    s.check()?;
    let (train_texts, train_y) = input.train;
    let max_pairs = if s.max_pairs > 0 { s.max_pairs } else { (40 * train_texts.len()).min(DEFAULT_MAX_PAIRS) };
    let draw = |y: &[usize], cap: usize, seed: u64| match s.loss {
        PairLoss::Cosine => finetune::contrastive_pairs(y, cap, seed),
        PairLoss::Ranking => finetune::positive_pairs(y, cap, seed),
    };
    let distinct = draw(train_y, max_pairs, input.seed);
    let n_distinct = distinct.len();
    let pairs = match s.loss {
        PairLoss::Cosine => repeat_to(distinct, max_pairs, input.seed),
        // Repeats would put a text's own positive among its in-batch negatives.
        PairLoss::Ranking => distinct,
    };
    if pairs.is_empty() {
        bail!("fine-tuning needs pairs of training rows, and the training split gives none");
    }
    let val_pairs = draw(input.validation.1, VALIDATION_PAIRS, input.seed ^ 0x7661_6c69_6461_7465);
    let per_epoch = pairs.len().div_ceil(s.batch_pairs) as u64;
    let total = per_epoch * s.epochs as u64;
    let cfg = s.config(total, input.seed)?;
    let method = cfg.method.describe();
    let loss = format!("{:?}", s.loss).to_lowercase();
    let plan = format!("{method}; loss {loss}; {} pairs x {} epochs; seed {}", pairs.len(), s.epochs, input.seed);
    let eval_every = if s.eval_every > 0 { s.eval_every as u64 } else { (total / 10).max(10) };

    let weights = BertWeights::load(input.installed).context("cannot read the encoder's weights to fine-tune")?;
    let mut tuner = FineTuner::new(weights, cfg)?;
    let ids = finetune::tokenize(input.base, train_texts)?;
    let val_ids = finetune::tokenize(input.base, input.validation.0)?;
    let kind = s.adapter_kind();
    let base_id = finetune::base_id(input.installed);
    let artifact = |t: &FineTuner| match (kind, t.lora()) {
        (AdapterKind::Lora, Some(l)) => l.to_bytes(&base_id),
        _ => t.weights().to_safetensors(),
    };

    let (mut at, mut best_bytes) = resume(input.checkpoint, &plan, &mut tuner)?;
    let bar = output::progress(total, "fine-tuning", input.quiet);
    bar.set_position(at.step);
    let mut order = pairs.clone();
    while at.step < total && !at.stopped_early {
        let (epoch, i) = (at.step / per_epoch, (at.step % per_epoch) as usize);
        if i == 0 || order.len() != pairs.len() {
            order = epoch_order(&pairs, epoch, input.seed);
        }
        let b = s.batch_pairs;
        let batch = &order[i * b..((i + 1) * b).min(order.len())];
        let batch_loss = tuner.step(&ids, batch)?;
        at.step += 1;
        bar.set_position(at.step);
        bar.set_message(format!("loss {batch_loss:.4}"));
        if (at.step % eval_every == 0 || at.step == total) && !val_pairs.is_empty() {
            let v = tuner.eval_loss(&val_ids, &val_pairs, 32)?;
            at.history.push((at.step, v));
            if at.best.is_none_or(|(_, b)| v < b) {
                at.best = Some((at.step, v));
                at.since_best = 0;
                best_bytes = Some(artifact(&tuner));
            } else {
                at.since_best += 1;
                at.stopped_early = at.since_best >= s.patience.max(1);
            }
        }
        if at.step % s.checkpoint_every as u64 == 0 && at.step < total && !at.stopped_early {
            save(input.checkpoint, &at, &tuner.checkpoint(), best_bytes.as_deref())?;
        }
    }
    bar.finish_and_clear();
    let bytes = best_bytes.unwrap_or_else(|| artifact(&tuner));
    if input.checkpoint.exists() {
        std::fs::remove_file(input.checkpoint).ok();
    }
    let recipe = PairsRecipe {
        kind: match s.loss {
            PairLoss::Cosine => "contrastive".into(),
            PairLoss::Ranking => "positive".into(),
        },
        pairs: pairs.len(),
        distinct: n_distinct,
        max_pairs,
        seed: input.seed,
        train_rows: train_texts.len(),
    };
    let run = FineTuneRun {
        loss,
        pairs: recipe,
        steps: at.step,
        planned_steps: total,
        best_step: at.best.map_or(at.step, |(s, _)| s),
        validation_loss: at.history,
        stopped_early: at.stopped_early,
    };
    Ok(Adaptation { kind, bytes, method, run })
}

/// SetFit's oversampling: when there are fewer distinct pairs than `want`, they are repeated,
/// each round in a fresh seeded order, up to `want`.
fn repeat_to(distinct: Vec<Pair>, want: usize, seed: u64) -> Vec<Pair> {
    if distinct.is_empty() || distinct.len() >= want {
        return distinct;
    }
    let mut out = distinct.clone();
    let mut round = 0;
    while out.len() < want {
        round += 1;
        let mut next = distinct.clone();
        SplitMix64::new(SplitMix64::nth(seed ^ 0x7265_7065_6174, round)).shuffle(&mut next);
        next.truncate(want - out.len());
        out.extend(next);
    }
    out
}

/// The pairs in epoch `epoch`'s order: as drawn in the first, reshuffled (seeded) after.
fn epoch_order(pairs: &[Pair], epoch: u64, seed: u64) -> Vec<Pair> {
    let mut order = pairs.to_vec();
    if epoch > 0 {
        SplitMix64::new(SplitMix64::nth(seed ^ 0x0065_706f_6368, epoch)).shuffle(&mut order);
    }
    order
}

/// The checkpoint file's first bytes.
const MAGIC: &[u8] = b"keel-finetune-run-1\n";

/// Writes the checkpoint atomically: a temporary file beside it, synced, renamed over it.
fn save(path: &Path, at: &Progress, tuner: &[u8], best: Option<&[u8]>) -> anyhow::Result<()> {
    let json = serde_json::to_vec(at)?;
    let mut out = Vec::with_capacity(MAGIC.len() + json.len() + tuner.len() + best.map_or(0, <[u8]>::len) + 24);
    out.extend_from_slice(MAGIC);
    for part in [&json[..], tuner, best.unwrap_or_default()] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    crate::stages::train::write_atomically(path, &out)
        .with_context(|| format!("cannot write the fine-tuning checkpoint {}", path.display()))
}

/// The loop state and best adaptation of a checkpoint made for `plan` (restoring `tuner`), or a
/// fresh start when there is none; a damaged or foreign checkpoint is set aside with a warning.
fn resume(path: &Path, plan: &str, tuner: &mut FineTuner) -> anyhow::Result<(Progress, Option<Vec<u8>>)> {
    let fresh = Progress { plan: plan.to_owned(), ..Progress::default() };
    let Ok(bytes) = std::fs::read(path) else { return Ok((fresh, None)) };
    let parsed = parse(&bytes).and_then(|(at, t, best)| {
        if at.plan != plan {
            bail!("it was made for another plan ({})", at.plan);
        }
        tuner.restore(t)?;
        Ok((at, (!best.is_empty()).then(|| best.to_vec())))
    });
    match parsed {
        Ok((at, best)) => {
            tracing::info!(step = at.step, "fine-tuning resumes from its checkpoint");
            Ok((at, best))
        }
        Err(e) => {
            output::note(format!("warning: ignoring the fine-tuning checkpoint {}: {e:#}", path.display()));
            Ok((fresh, None))
        }
    }
}

fn parse(bytes: &[u8]) -> anyhow::Result<(Progress, &[u8], &[u8])> {
    let mut rest = bytes.strip_prefix(MAGIC).context("not a fine-tuning checkpoint")?;
    let at: Progress = serde_json::from_slice(take(&mut rest)?)?;
    let tuner = take(&mut rest)?;
    let best = take(&mut rest)?;
    Ok((at, tuner, best))
}

/// The next length-prefixed part of a checkpoint.
fn take<'a>(rest: &mut &'a [u8]) -> anyhow::Result<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<8>().context("truncated")?;
    let len = usize::try_from(u64::from_le_bytes(*len))?;
    anyhow::ensure!(tail.len() >= len, "truncated");
    let (part, tail) = tail.split_at(len);
    *rest = tail;
    Ok(part)
}

/// The record a version keeps, once the adaptation is stored as `adapter` and loaded as
/// `encoder_id`.
pub fn record(a: Adaptation, adapter: String, base_encoder: String, encoder_id: String) -> FineTuneRecord {
    FineTuneRecord {
        method: a.method,
        adapter_kind: match a.kind {
            AdapterKind::Lora => "lora".into(),
            AdapterKind::Weights => "weights".into(),
        },
        adapter,
        base_encoder,
        encoder_id,
        run: a.run,
    }
}
