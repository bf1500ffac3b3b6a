//! [`FineTuner`]: contrastive training steps over pairs, full weights or LoRA adapters.

use std::collections::BTreeMap;

use keel_core::SplitMix64;

use super::lora::{Lora, LoraConfig};
use super::loss::{Loss, loss_grad};
use super::model::{Dropout, Grads, Model, TokenIds};
use super::optim::{AdamW, ParamGrad, linear_schedule};
use super::pairs::Pair;
use super::st;
use super::weights::{BertWeights, Kind};
use crate::error::EmbedError;

/// The `format` entry of a checkpoint's metadata.
pub const CHECKPOINT_FORMAT: &str = "keel-finetune-checkpoint-1";

/// What trains.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Every linear layer and LayerNorm (SetFit's full fine-tuning of the body); the word,
    /// position and token-type tables too when `embeddings`.
    Full { embeddings: bool },
    /// LoRA adapters only; the base weights stay frozen.
    Lora(LoraConfig),
}

impl Method {
    /// A one-line description, recorded in checkpoints: `full`, `full+embeddings`,
    /// `lora r=8 alpha=16 targets=query,value`.
    pub fn describe(&self) -> String {
        match self {
            Method::Full { embeddings: false } => "full".into(),
            Method::Full { embeddings: true } => "full+embeddings".into(),
            Method::Lora(c) => {
                let mut t = c.targets.clone();
                t.sort();
                t.dedup();
                let t: Vec<&str> = t.iter().map(|p| p.name()).collect();
                format!("lora r={} alpha={} targets={}", c.rank, c.alpha, t.join(","))
            }
        }
    }
}

/// How a [`FineTuner`] trains.
#[derive(Debug, Clone, PartialEq)]
pub struct FineTuneConfig {
    pub method: Method,
    pub loss: Loss,
    /// Peak learning rate: SetFit's default body rate 2e-5 for full fine-tuning; 1e-4 to 1e-3
    /// is usual for LoRA.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay, on weights and embeddings (not biases or LayerNorms).
    pub weight_decay: f64,
    /// Updates of linear warm-up from 0; then linear decay to 0 at `total_steps`.
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Clip the global gradient norm to this (as PyTorch's `clip_grad_norm_`); `None`: no clipping.
    pub max_grad_norm: Option<f64>,
    /// Dropout probability in training steps (BERT's `hidden_dropout_prob` and
    /// `attention_probs_dropout_prob`, 0.1 for all-MiniLM-L6-v2); 0 turns it off. The masks
    /// depend on `seed` and the step number only. Evaluation and embedding never drop.
    pub dropout: f64,
    /// Compute threads (a pool of its own).
    pub threads: usize,
    /// Seeds the LoRA initialisation and the dropout masks.
    pub seed: u64,
}

impl FineTuneConfig {
    /// SetFit's defaults for the body: full fine-tuning (embedding tables included, as
    /// sentence-transformers trains every parameter), cosine-similarity loss, lr 2e-5, 10 % warm-up,
    /// weight decay 0.01, gradient norm clipped to 1, dropout 0.1 (the model in training mode).
    pub fn setfit(total_steps: u64) -> FineTuneConfig {
        FineTuneConfig {
            method: Method::Full { embeddings: true },
            loss: Loss::CosineSimilarity,
            learning_rate: 2e-5,
            weight_decay: 0.01,
            warmup_steps: total_steps.div_ceil(10),
            total_steps,
            max_grad_norm: Some(1.0),
            dropout: 0.1,
            threads: 1,
            seed: 0,
        }
    }

    /// LoRA with [`LoraConfig::default`] (rank 8, alpha 16, every projection), lr 5e-4, otherwise
    /// as [`FineTuneConfig::setfit`].
    pub fn lora(total_steps: u64) -> FineTuneConfig {
        FineTuneConfig {
            method: Method::Lora(LoraConfig::default()),
            learning_rate: 5e-4,
            ..FineTuneConfig::setfit(total_steps)
        }
    }
}

/// Trains a BERT encoder on pairs of texts; deterministic: the same weights, config, texts and
/// pair batches give the same bits on the same machine, whatever the thread count (tested with
/// one and two threads).
///
/// Matrix products run on the `gemm` crate, which splits work over output blocks and sums each
/// element's products in a fixed order, so results do not depend on threads or their timing; its
/// block sizes follow the CPU's cache sizes, so other CPUs may round differently.
pub struct FineTuner {
    cfg: FineTuneConfig,
    weights: BertWeights<f32>,
    lora: Option<Lora<f32>>,
    grads: Grads<f32>,
    opt: AdamW,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for FineTuner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FineTuner")
            .field("method", &self.cfg.method.describe())
            .field("steps", &self.opt.steps())
            .finish_non_exhaustive()
    }
}

impl FineTuner {
    /// Starts from `weights` (e.g. [`BertWeights::load`]); LoRA adapters are initialised from
    /// `cfg.seed`.
    pub fn new(weights: BertWeights<f32>, cfg: FineTuneConfig) -> Result<FineTuner, EmbedError> {
        if cfg.threads == 0 || cfg.total_steps == 0 || !cfg.learning_rate.is_finite() || cfg.learning_rate <= 0.0 {
            return Err(EmbedError::InvalidConfig("fine-tuning needs threads, steps and a learning rate".into()));
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(EmbedError::InvalidConfig(format!("dropout {} is not in [0, 1)", cfg.dropout)));
        }
        let (lora, grads) = match &cfg.method {
            Method::Full { embeddings } => {
                (None, Grads { base: Some(BertWeights::zeros(weights.dims)), embeddings: *embeddings, lora: None })
            }
            Method::Lora(lc) => {
                let lora = Lora::new(lc, &weights.dims, cfg.seed)?;
                let g = lora.zeros_like();
                (Some(lora), Grads { base: None, embeddings: false, lora: Some(g) })
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("keel-finetune-{i}"))
            .build()
            .map_err(|e| EmbedError::InvalidConfig(format!("thread pool: {e}")))?;
        let opt = AdamW::new(cfg.weight_decay);
        Ok(FineTuner { cfg, weights, lora, grads, opt, pool })
    }

    pub fn config(&self) -> &FineTuneConfig {
        &self.cfg
    }

    /// Updates taken so far.
    pub fn steps_done(&self) -> u64 {
        self.opt.steps()
    }

    /// The learning rate of the next update.
    pub fn next_learning_rate(&self) -> f64 {
        let c = &self.cfg;
        linear_schedule(c.learning_rate, self.opt.steps(), c.warmup_steps, c.total_steps)
    }

    /// The base weights (updated in full fine-tuning, the frozen base under LoRA).
    pub fn weights(&self) -> &BertWeights<f32> {
        &self.weights
    }

    /// The adapters, under LoRA.
    pub fn lora(&self) -> Option<&Lora<f32>> {
        self.lora.as_ref()
    }

    /// The weights an inference encoder should load: the trained weights, or the base with the
    /// adapters merged in.
    pub fn merged_weights(&self) -> BertWeights<f32> {
        let mut w = self.weights.clone();
        if let Some(lora) = &self.lora {
            lora.merge_into(&mut w).expect("adapters made for these weights");
        }
        w
    }

    fn model(&self) -> Model<'_, f32> {
        Model { w: &self.weights, lora: self.lora.as_ref(), threads: self.cfg.threads, dropout: None }
    }

    fn batch<'t>(texts: &'t [TokenIds], pairs: &[Pair]) -> Result<(Vec<&'t TokenIds>, Vec<f32>), EmbedError> {
        let get = |i: usize| {
            texts.get(i).ok_or_else(|| EmbedError::InvalidConfig(format!("pair refers to text {i} of {}", texts.len())))
        };
        let mut seqs = Vec::with_capacity(2 * pairs.len());
        for p in pairs {
            seqs.push(get(p.a)?);
        }
        for p in pairs {
            seqs.push(get(p.b)?);
        }
        Ok((seqs, pairs.iter().map(|p| p.label).collect()))
    }

    /// One optimiser update on the batch `pairs` (indices into `texts`); returns the batch's loss
    /// before the update.
    pub fn step(&mut self, texts: &[TokenIds], pairs: &[Pair]) -> Result<f32, EmbedError> {
        let (seqs, labels) = Self::batch(texts, pairs)?;
        let lr = self.next_learning_rate();
        let h = self.weights.dims.hidden;
        let threads = self.cfg.threads;
        let dropout = (self.cfg.dropout > 0.0).then(|| Dropout {
            p: self.cfg.dropout,
            // "dropout" in ASCII, so these masks do not follow the LoRA initialisation's stream.
            seed: SplitMix64::nth(self.cfg.seed ^ 0x0064_726f_706f_7574, self.opt.steps()),
        });
        let loss = self.pool.install(|| {
            self.grads.fill_zero();
            let model = Model { w: &self.weights, lora: self.lora.as_ref(), threads, dropout };
            let tape = model.forward(&seqs);
            let (loss, d_emb) = loss_grad(self.cfg.loss, &tape.emb, h, &labels);
            model.backward(&seqs, &tape, &d_emb, &mut self.grads);
            drop(tape);
            if let Some(max) = self.cfg.max_grad_norm {
                clip(&mut self.grads, max);
            }
            let params = trainable(&mut self.weights, &mut self.lora, &self.grads);
            self.opt.step(lr, params, threads);
            loss
        });
        Ok(loss)
    }

    /// The mean loss over `pairs` in batches of `batch_size` pairs, without updating anything
    /// (for a validation split).
    pub fn eval_loss(&self, texts: &[TokenIds], pairs: &[Pair], batch_size: usize) -> Result<f32, EmbedError> {
        if pairs.is_empty() {
            return Ok(0.0);
        }
        let h = self.weights.dims.hidden;
        let mut total = 0f64;
        for chunk in pairs.chunks(batch_size.max(1)) {
            let (seqs, labels) = Self::batch(texts, chunk)?;
            let tape = self.pool.install(|| self.model().forward(&seqs));
            total += f64::from(loss_grad(self.cfg.loss, &tape.emb, h, &labels).0) * chunk.len() as f64;
        }
        Ok((total / pairs.len() as f64) as f32)
    }

    /// Unit-length embeddings of `texts` by the training-time forward (adapters unmerged).
    pub fn embed(&self, texts: &[TokenIds]) -> Vec<Vec<f32>> {
        let h = self.weights.dims.hidden;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(32) {
            let seqs: Vec<&TokenIds> = chunk.iter().collect();
            let tape = self.pool.install(|| self.model().forward(&seqs));
            out.extend(tape.emb.chunks_exact(h).map(<[f32]>::to_vec));
        }
        out
    }

    /// Everything needed to resume: the trained tensors, AdamW's moments and step count, as a
    /// safetensors file (tensors `param/…`, `adam_m/…`, `adam_v/…`; metadata `format`, `method`,
    /// `steps`). Deterministic bytes.
    pub fn checkpoint(&self) -> Vec<u8> {
        let names_params = trainable_tensors(&self.weights, self.lora.as_ref(), self.grads.embeddings);
        let (m, v) = self.opt.moments();
        let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for (k, (name, shape, data)) in names_params.into_iter().enumerate() {
            if let (Some(m), Some(v)) = (m.get(k), v.get(k)) {
                tensors.push((format!("adam_m/{name}"), shape.clone(), m));
                tensors.push((format!("adam_v/{name}"), shape.clone(), v));
            }
            tensors.push((format!("param/{name}"), shape, data));
        }
        let meta = BTreeMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("method".to_string(), self.cfg.method.describe()),
            ("steps".to_string(), self.opt.steps().to_string()),
        ]);
        st::write(tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), *d)), &meta)
    }

    /// Continues from a [`FineTuner::checkpoint`] of a tuner with the same method and base
    /// weights: afterwards this tuner is in the state the checkpointed one was.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), EmbedError> {
        let bad = |m: String| EmbedError::InvalidConfig(format!("checkpoint: {m}"));
        let (tensors, meta) = st::read(bytes)?;
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("metadata lacks {k}")));
        if get("format")? != CHECKPOINT_FORMAT {
            return Err(bad(format!("format {:?}", get("format")?)));
        }
        let method = self.cfg.method.describe();
        if get("method")? != &method {
            return Err(bad(format!("method {:?}, this tuner's is {method:?}", get("method")?)));
        }
        let steps: u64 = get("steps")?.parse().map_err(|e| bad(format!("steps: {e}")))?;
        let mut by_name: BTreeMap<String, st::NamedTensor> = tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut take = |name: String, shape: &[usize]| {
            let t = by_name.remove(&name).ok_or_else(|| bad(format!("lacks tensor {name}")))?;
            if t.shape != shape {
                return Err(bad(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape)));
            }
            Ok(t.data)
        };
        let emb = self.grads.embeddings;
        let specs: Vec<(String, Vec<usize>)> =
            trainable_tensors(&self.weights, self.lora.as_ref(), emb).into_iter().map(|(n, s, _)| (n, s)).collect();
        let mut values = Vec::with_capacity(specs.len());
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (name, shape) in &specs {
            values.push(take(format!("param/{name}"), shape)?);
            if steps > 0 {
                m.push(take(format!("adam_m/{name}"), shape)?);
                v.push(take(format!("adam_v/{name}"), shape)?);
            }
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(bad(format!("unexpected tensor {extra}")));
        }
        let params = trainable(&mut self.weights, &mut self.lora, &self.grads);
        for ((dst, _, _), src) in params.into_iter().zip(values) {
            dst.copy_from_slice(&src);
        }
        self.opt.set_state(steps, m, v);
        Ok(())
    }
}

/// Scales the gradients so their global L2 norm is at most `max` (PyTorch's rule: by
/// `max / (norm + 1e-6)` when that is below 1); the norm summed in f64 in tensor order.
fn clip(grads: &mut Grads<f32>, max: f64) {
    let emb = grads.embeddings;
    let mut tensors: Vec<&mut [f32]> = match (&mut grads.lora, &mut grads.base) {
        (Some(l), _) => l.tensors_mut().into_iter().map(|(_, _, t)| t).collect(),
        (None, Some(b)) => b
            .tensors_mut()
            .into_iter()
            .filter(|(_, kind, _, _)| emb || *kind != Kind::Embedding)
            .map(|(_, _, _, t)| t)
            .collect(),
        (None, None) => return,
    };
    let norm = tensors.iter().map(|t| t.iter().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>()).sum::<f64>();
    let coef = max / (norm.sqrt() + 1e-6);
    if coef < 1.0 {
        let c = coef as f32;
        for t in &mut tensors {
            t.iter_mut().for_each(|g| *g *= c);
        }
    }
}

/// Name, shape and values of every trained tensor, in optimiser order.
fn trainable_tensors<'a>(
    weights: &'a BertWeights<f32>,
    lora: Option<&'a Lora<f32>>,
    embeddings: bool,
) -> Vec<(String, Vec<usize>, &'a [f32])> {
    match lora {
        Some(l) => l.tensors(),
        None => weights
            .tensors()
            .into_iter()
            .filter(|(_, kind, _, _)| embeddings || *kind != Kind::Embedding)
            .map(|(n, _, s, d)| (n, s, d))
            .collect(),
    }
}

/// The trained tensors with their gradients and weight-decay flags, in optimiser order.
fn trainable<'a>(
    weights: &'a mut BertWeights<f32>,
    lora: &'a mut Option<Lora<f32>>,
    grads: &'a Grads<f32>,
) -> Vec<ParamGrad<'a>> {
    match (lora, &grads.lora, &grads.base) {
        (Some(l), Some(g), _) => {
            l.tensors_mut().into_iter().zip(g.tensors()).map(|((_, _, p), (_, _, g))| (p, g, true)).collect()
        }
        (_, _, Some(g)) => weights
            .tensors_mut()
            .into_iter()
            .zip(g.tensors())
            .filter(|((_, kind, _, _), _)| grads.embeddings || *kind != Kind::Embedding)
            .map(|((_, kind, _, p), (_, _, _, g))| (p, g, matches!(kind, Kind::Weight | Kind::Embedding)))
            .collect(),
        _ => Vec::new(),
    }
}
