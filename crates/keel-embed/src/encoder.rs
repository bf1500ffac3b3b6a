//! Sentence encoder: BERT (candle, CPU) + mean pooling + L2 normalisation, as
//! sentence-transformers computes it.

use std::cmp::Reverse;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::EmbedError;
use crate::source::InstalledModel;

/// How an [`Encoder`] batches and truncates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Tokens per text, specials included; longer inputs are truncated. `None`: the model's
    /// `max_seq_length` from `sentence_bert_config.json` (256 for all-MiniLM-L6-v2).
    pub max_seq_len: Option<usize>,
    /// Compute threads; `None`: candle's default (`RAYON_NUM_THREADS` or all cores).
    pub threads: Option<usize>,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self { batch_size: 32, max_seq_len: None, threads: None }
    }
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

/// Turns texts into unit-length vectors. `Send + Sync`: share it behind an `Arc`.
pub struct Encoder {
    id: String,
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    batch_size: usize,
    max_seq_len: usize,
    pad_id: u32,
    pool: Option<rayon::ThreadPool>,
    truncated: AtomicU64,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("id", &self.id)
            .field("dim", &self.dim)
            .field("batch_size", &self.batch_size)
            .field("max_seq_len", &self.max_seq_len)
            .finish_non_exhaustive()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EmbedError> {
    let bytes = std::fs::read(path).map_err(|e| EmbedError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::Config { path: path.to_path_buf(), message: e.to_string() })
}

impl Encoder {
    /// Loads tokenizer and weights from an installed (verified) model.
    pub fn load(model: &InstalledModel, cfg: EncoderConfig) -> Result<Encoder, EmbedError> {
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

        let tok_err = |e: tokenizers::Error| EmbedError::Tokenizer(e.to_string());
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(tok_err)?;
        // The file pads and truncates to a fixed 128; we pad per batch and truncate like
        // sentence-transformers.
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

        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let bert = BertModel::load(vb, &bert_cfg)?;

        let pool = match cfg.threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("keel-embed-{i}"))
                    .build()
                    .map_err(|e| EmbedError::InvalidConfig(format!("thread pool: {e}")))?,
            ),
            None => None,
        };

        Ok(Encoder {
            id: format!("{}@{}", model.name, model.sha256.short()),
            model: bert,
            tokenizer,
            device,
            dim: bert_cfg.hidden_size,
            batch_size: cfg.batch_size,
            max_seq_len,
            pad_id,
            pool,
            truncated: AtomicU64::new(0),
        })
    }

    /// Stable identity of what this encoder computes, e.g. `all-MiniLM-L6-v2@53aa51172d14`
    /// (model name and the first 12 hex of the weights' sha256). Use it as a cache key.
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

    /// How many inputs have been truncated to `max_seq_len` since load.
    pub fn truncated_count(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Tokens the model sees for `text`: specials included, truncated at `max_seq_len`.
    pub fn count_tokens(&self, text: &str) -> Result<usize, EmbedError> {
        let enc = self.tokenizer.encode_fast(text, true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
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
        let encodings = self.run(|| {
            self.tokenizer.encode_batch_fast(texts.to_vec(), true).map_err(|e| EmbedError::Tokenizer(e.to_string()))
        })?;
        let truncated = encodings.iter().filter(|e| !e.get_overflowing().is_empty()).count();
        self.truncated.fetch_add(truncated as u64, Ordering::Relaxed);

        // Longest first, so each batch holds similar lengths and padding stays small.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| Reverse(encodings[i].len()));

        let mut out = vec![Vec::new(); texts.len()];
        let mut done = 0;
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let vectors = self.run(|| self.forward(&batch))?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
            done += chunk.len();
            progress(done);
        }
        Ok(out)
    }

    /// Runs `f` on this encoder's thread pool, if it has one.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// One padded batch through BERT, then masked mean pooling and L2 normalisation.
    fn forward(&self, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = batch.len();
        let cols = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; rows * cols];
        let mut type_ids = vec![0u32; rows * cols];
        let mut mask = vec![0f32; rows * cols];
        for (r, enc) in batch.iter().enumerate() {
            let n = enc.len();
            let row = r * cols;
            ids[row..row + n].copy_from_slice(enc.get_ids());
            type_ids[row..row + n].copy_from_slice(enc.get_type_ids());
            mask[row..row + n].fill(1.0);
        }
        let ids = Tensor::from_vec(ids, (rows, cols), &self.device)?;
        let type_ids = Tensor::from_vec(type_ids, (rows, cols), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, cols), &self.device)?;

        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // (rows, cols, dim)
        let mask = mask.unsqueeze(2)?; // (rows, cols, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, dim)
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}
