//! Keel search: a document collection → chunks → a dense (HNSW) and a sparse (BM25) index,
//! searched alone or fused; retrieval metrics for BEIR-format evaluation sets.
//!
//! - [`document`]: read text, Markdown, HTML, JSONL and CSV files into [`Document`]s (text,
//!   metadata, content hash); unreadable rows are reported, not fatal.
//! - [`chunk`]: cut a document into windows of encoder tokens with overlap, keeping the char
//!   offsets of each window in the document text.
//! - [`hnsw`]: Keel's own HNSW graph over unit vectors (cosine), deterministic and filter-aware.
//! - [`bm25`]: tantivy, one index per generation.
//! - [`index`]: the on-disk index (generations swapped atomically), incremental planning
//!   ([`Index::plan`] → embed what it asks → [`Plan::apply`]) and [`Index::search`].
//! - [`metrics`] and [`beir`]: nDCG@k, recall@k, MRR; BEIR corpus, queries and qrels readers.
//!
//! This crate computes no embeddings itself (the caller embeds, usually through the store's
//! cache) and knows nothing about SQL, HTTP or the CLI.

pub mod beir;
pub mod bm25;
pub mod chunk;
pub mod document;
mod error;
pub mod hnsw;
pub mod index;
pub mod metrics;

pub use chunk::{ChunkSpan, Chunker};
pub use document::{Document, Skipped, read_documents};
pub use error::IndexError;
pub use hnsw::{Hnsw, HnswParams};
pub use index::{
    DEFAULT_RRF_K, Filter, Hit, Index, IndexOptions, IndexReport, Mode, Plan, Query, current_generation, dedupe_docs,
    default_dir, rrf,
};
