//! Sentence encoder: tokenizer + BERT + mean pooling + L2 normalisation, as sentence-transformers
//! computes them.
//!
//! Texts are tokenized on a helper thread, a window at a time, while the previous window runs
//! through the model (a bounded channel keeps at most two windows of tokens alive). Within a
//! window, texts are sorted by length and cut into batches; several batches run at once, one per
//! thread, or a lone batch is split across threads operation by operation.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as CandleBertConfig};
use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use crate::bert::Precision;
use crate::bert::{Bert, BertConfig, Scratch, Seq};
use crate::error::EmbedError;
use crate::kernels::Isa;
use crate::source::InstalledModel;

/// Which compute kernels the encoder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The best this CPU supports (AVX-512 + VNNI, AVX-512, AVX2), detected at run time.
    /// `KEEL_EMBED_KERNELS=portable` in the environment turns this into [`Kernels::Portable`].
    #[default]
    Auto,
    /// Plain Rust kernels only, as on a CPU without AVX2 (slow; for tests and odd machines).
    Portable,
    /// candle's BERT (f32 only): the straightforward baseline benchmarks compare against.
    Candle,
}

/// How an [`Encoder`] batches, truncates and computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Tokens per text, specials included; longer inputs are truncated. `None`: the model's
    /// `max_seq_length` from `sentence_bert_config.json` (256 for all-MiniLM-L6-v2).
    pub max_seq_len: Option<usize>,
    /// Compute threads; `None`: `RAYON_NUM_THREADS` or all cores.
    pub threads: Option<usize>,
    /// f32 (exact) or int8 (faster, cosine ≥ 0.99 to f32). Part of [`Encoder::id`].
    pub precision: Precision,
    /// Kernel selection; results agree across choices within the precision's tolerance.
    pub kernels: Kernels,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self { batch_size: 32, max_seq_len: None, threads: None, precision: Precision::F32, kernels: Kernels::Auto }
    }
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

enum Engine {
    Native(Bert),
    Candle(BertModel),
}

/// Token ids of one text, as the model sees them.
struct Tokens {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
}

/// Turns texts into unit-length vectors. `Send + Sync`: share it behind an `Arc`.
pub struct Encoder {
    id: String,
    engine: Engine,
    kernels_name: &'static str,
    precision: Precision,
    tokenizer: Tokenizer,
    dim: usize,
    batch_size: usize,
    max_seq_len: usize,
    pad_id: u32,
    threads: usize,
    pool: rayon::ThreadPool,
    scratch: Mutex<Vec<Scratch>>,
    truncated: AtomicU64,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("id", &self.id)
            .field("dim", &self.dim)
            .field("batch_size", &self.batch_size)
            .field("max_seq_len", &self.max_seq_len)
            .field("threads", &self.threads)
            .field("kernels", &self.kernels_name)
            .finish_non_exhaustive()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EmbedError> {
    let bytes = std::fs::read(path).map_err(|e| EmbedError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::Config { path: path.to_path_buf(), message: e.to_string() })
}

/// The model's weights file, or `weights` (a safetensors buffer and its tag) when given.
fn load_tensors(dir: &Path, weights: Option<(&[u8], &str)>) -> Result<HashMap<String, Tensor>, EmbedError> {
    Ok(match weights {
        Some((bytes, _)) => candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?,
        None => candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?,
    })
}

fn tok_err(e: tokenizers::Error) -> EmbedError {
    EmbedError::Tokenizer(e.to_string())
}

impl Encoder {
    /// Loads tokenizer and weights from an installed (verified) model.
    pub fn load(model: &InstalledModel, cfg: EncoderConfig) -> Result<Encoder, EmbedError> {
        Encoder::load_inner(model, cfg, None)
    }

    /// Like [`Encoder::load`], but with the weights taken from `safetensors` (an in-memory
    /// safetensors file, e.g. fine-tuned or LoRA-merged weights from
    /// [`crate::finetune::BertWeights::to_safetensors`]) instead of the model's own file; the
    /// tokenizer and configuration still come from `model`. `tag` names the weights in the id:
    /// `{model}@{sha}+{tag}` (then `+int8` in int8 mode); it must be non-empty ASCII letters,
    /// digits, `.`, `_` or `-`.
    pub fn load_with_weights(
        model: &InstalledModel,
        cfg: EncoderConfig,
        safetensors: &[u8],
        tag: &str,
    ) -> Result<Encoder, EmbedError> {
        if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(EmbedError::InvalidConfig(format!("bad weights tag {tag:?}")));
        }
        Encoder::load_inner(model, cfg, Some((safetensors, tag)))
    }

    fn load_inner(
        model: &InstalledModel,
        cfg: EncoderConfig,
        weights: Option<(&[u8], &str)>,
    ) -> Result<Encoder, EmbedError> {
        if cfg.batch_size == 0 {
            return Err(EmbedError::InvalidConfig("batch_size must be at least 1".into()));
        }
        if cfg.threads == Some(0) {
            return Err(EmbedError::InvalidConfig("threads must be at least 1".into()));
        }
        let dir = &model.dir;
        let bert_cfg: BertConfig = read_json(&dir.join("config.json"))?;
        let max_seq_len = match cfg.max_seq_len {
            Some(n) => n,
            None => read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?.max_seq_length,
        };
        if !(2..=bert_cfg.max_position_embeddings).contains(&max_seq_len) {
            return Err(EmbedError::InvalidConfig(format!(
                "max_seq_len {max_seq_len} must be in 2..={}",
                bert_cfg.max_position_embeddings
            )));
        }

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(tok_err)?;
        // The file pads and truncates to a fixed 128; we pack batches without padding and
        // truncate like sentence-transformers.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(tok_err)?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);

        let mut kernels = cfg.kernels;
        if kernels == Kernels::Auto && std::env::var("KEEL_EMBED_KERNELS").is_ok_and(|v| v == "portable") {
            kernels = Kernels::Portable;
        }
        let (engine, kernels_name) = match kernels {
            Kernels::Candle => {
                if cfg.precision != Precision::F32 {
                    return Err(EmbedError::InvalidConfig("the candle kernels compute in f32 only".into()));
                }
                let candle_cfg: CandleBertConfig = read_json(&dir.join("config.json"))?;
                let tensors = load_tensors(dir, weights)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
                (Engine::Candle(BertModel::load(vb, &candle_cfg)?), "candle")
            }
            Kernels::Auto | Kernels::Portable => {
                let isa = if kernels == Kernels::Portable { Isa::Portable } else { Isa::detect() };
                let bert = Bert::from_tensors(load_tensors(dir, weights)?, &bert_cfg, cfg.precision, isa)?;
                (Engine::Native(bert), isa.name())
            }
        };

        let threads = cfg
            .threads
            .or_else(|| std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("keel-embed-{i}"))
            .build()
            .map_err(|e| EmbedError::InvalidConfig(format!("thread pool: {e}")))?;

        let suffix = match cfg.precision {
            Precision::F32 => "",
            Precision::Int8 => "+int8",
        };
        let tag = weights.map(|(_, tag)| format!("+{tag}")).unwrap_or_default();
        Ok(Encoder {
            id: format!("{}@{}{tag}{suffix}", model.name, model.sha256.short()),
            engine,
            kernels_name,
            precision: cfg.precision,
            tokenizer,
            dim: bert_cfg.hidden_size,
            batch_size: cfg.batch_size,
            max_seq_len,
            pad_id,
            threads,
            pool,
            scratch: Mutex::new(Vec::new()),
            truncated: AtomicU64::new(0),
        })
    }

    /// The tokenizer, configured as [`Encoder::embed`] uses it (no padding, truncation at
    /// `max_seq_len`).
    pub(crate) fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Stable identity of what this encoder computes, e.g. `all-MiniLM-L6-v2@53aa51172d14`
    /// (model name and the first 12 hex of the weights' sha256), with `+int8` appended in int8
    /// mode. Use it as a cache key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Length of every embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Maximum tokens per text (specials included).
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The kernels in use: `avx512-vnni`, `avx512`, `avx2`, `portable` or `candle`.
    pub fn kernels(&self) -> &'static str {
        self.kernels_name
    }

    /// Compute threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How many inputs have been truncated to `max_seq_len` since load.
    pub fn truncated_count(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Tokens the model sees for `text`: specials included, truncated at `max_seq_len`.
    pub fn count_tokens(&self, text: &str) -> Result<usize, EmbedError> {
        let enc = self.tokenizer.encode_fast(text, true).map_err(tok_err)?;
        Ok(enc.len())
    }

    /// One unit-length vector per text, in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_with_progress(texts, &mut |_| {})
    }

    /// Like [`Encoder::embed`]; calls `progress(done)` after each batch with the number of texts
    /// embedded so far.
    pub fn embed_with_progress(
        &self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Enough batches per window to keep every thread busy; small enough to bound memory.
        // (8 batches per thread: the threads wait for each other once per window.)
        let window = self.batch_size * self.threads.max(1) * 8;
        let mut out = vec![Vec::new(); texts.len()];
        let mut done = 0;
        std::thread::scope(|scope| -> Result<(), EmbedError> {
            let (tx, rx) = sync_channel::<Result<Vec<Tokens>, EmbedError>>(1);
            scope.spawn(move || {
                for chunk in texts.chunks(window) {
                    let toks = self.tokenize(chunk);
                    let failed = toks.is_err();
                    if tx.send(toks).is_err() || failed {
                        return;
                    }
                }
            });
            for (w, toks) in rx.into_iter().enumerate() {
                let toks = toks?;
                let base = w * window;
                // Longest first, so each batch holds similar lengths.
                let mut order: Vec<usize> = (0..toks.len()).collect();
                order.sort_by_key(|&i| Reverse(toks[i].ids.len()));
                let batches: Vec<&[usize]> = order.chunks(self.batch_size).collect();
                let results: Vec<Vec<Vec<f32>>> = if batches.len() > 1 && self.threads > 1 {
                    self.pool
                        .install(|| batches.par_iter().map(|b| self.forward(&toks, b, 1)).collect::<Result<_, _>>())?
                } else {
                    batches
                        .iter()
                        .map(|b| self.pool.install(|| self.forward(&toks, b, self.threads)))
                        .collect::<Result<_, _>>()?
                };
                for (b, vectors) in batches.iter().zip(results) {
                    for (&i, v) in b.iter().zip(vectors) {
                        out[base + i] = v;
                    }
                    done += b.len();
                    progress(done);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>, EmbedError> {
        let mut truncated = 0;
        let toks = texts
            .iter()
            .map(|t| {
                let enc = self.tokenizer.encode_fast(*t, true).map_err(tok_err)?;
                if !enc.get_overflowing().is_empty() {
                    truncated += 1;
                }
                Ok(Tokens { ids: enc.get_ids().to_vec(), type_ids: enc.get_type_ids().to_vec() })
            })
            .collect::<Result<Vec<_>, EmbedError>>()?;
        self.truncated.fetch_add(truncated, Ordering::Relaxed);
        Ok(toks)
    }

    /// One batch (`batch` indexes `toks`) through the model; `threads` for intra-op splitting.
    fn forward(&self, toks: &[Tokens], batch: &[usize], threads: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.engine {
            Engine::Native(bert) => {
                let seqs: Vec<Seq<'_>> =
                    batch.iter().map(|&i| Seq { ids: &toks[i].ids, type_ids: &toks[i].type_ids }).collect();
                let mut scratch = self.scratch.lock().map(|mut s| s.pop()).unwrap_or(None).unwrap_or_default();
                let mut out = vec![Vec::new(); batch.len()];
                bert.forward(&seqs, threads, &mut scratch, &mut out);
                if let Ok(mut pool) = self.scratch.lock() {
                    pool.push(scratch);
                }
                Ok(out)
            }
            Engine::Candle(model) => self.forward_candle(model, toks, batch),
        }
    }

    /// One padded batch through candle's BERT, then masked mean pooling and L2 normalisation.
    fn forward_candle(&self, model: &BertModel, toks: &[Tokens], batch: &[usize]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let device = Device::Cpu;
        let rows = batch.len();
        let cols = batch.iter().map(|&i| toks[i].ids.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; rows * cols];
        let mut type_ids = vec![0u32; rows * cols];
        let mut mask = vec![0f32; rows * cols];
        for (r, &i) in batch.iter().enumerate() {
            let t = &toks[i];
            let n = t.ids.len();
            let row = r * cols;
            ids[row..row + n].copy_from_slice(&t.ids);
            type_ids[row..row + n].copy_from_slice(&t.type_ids);
            mask[row..row + n].fill(1.0);
        }
        let ids = Tensor::from_vec(ids, (rows, cols), &device)?;
        let type_ids = Tensor::from_vec(type_ids, (rows, cols), &device)?;
        let mask = Tensor::from_vec(mask, (rows, cols), &device)?;

        let hidden = model.forward(&ids, &type_ids, Some(&mask))?; // (rows, cols, dim)
        let mask = mask.unsqueeze(2)?; // (rows, cols, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, dim)
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}
