//! Keel ingest: from a raw labelled file to accepted records and quarantined rows.
//!
//! Bad rows are data, not errors: [`ingest`] streams every row either as a [`Record`] or as a
//! [`Quarantined`] row with its reason, so that `rows_read == accepted + quarantined` always holds
//! ([`read_table`] collects them). Errors ([`DataError`]) are reserved for problems with the file
//! or the options as a whole.
//!
//! Readers: CSV/TSV (delimiter and header sniffing, quoting, BOM, any mix of line ends, ragged
//! rows, Orange `.tab` type rows) and JSON lines, read through `.gz`/`.bz2` transparently, in
//! bounded memory. Accepted texts are normalised ([`normalize`]); the raw text is kept beside.
//!
//! This crate knows nothing about SQL, embeddings or HTTP.

mod delimited;
mod format;
mod input;
mod normalize;
mod read;
mod sniff;
mod split;

pub use format::Format;
pub use input::{Compression, Decompression};
pub use normalize::{html_to_text, normalize};
pub use read::{
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_TEXT_CHARS, IngestStats, Ingested, ReadOptions, Row, ingest, ingest_reader,
    read_bytes, read_table,
};
pub use split::{SplitConfig, assign_splits};

use keel_core::{Quarantined, Record};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("{path}: no column named {column:?}; the header has: {available}")]
    MissingColumn { path: String, column: String, available: String },
}

/// The content hash of a set of accepted records: the dataset version.
///
/// It covers ids, texts and labels in order, so the same rows give the same version whatever
/// file they came from, and any change gives a new one.
pub fn dataset_version(records: &[Record]) -> keel_core::ContentHash {
    let mut h = keel_core::Hasher::new();
    h.field(b"keel-dataset-v1");
    for r in records {
        h.field(r.id.as_bytes()).field(r.text.as_bytes());
        h.field(r.label.as_deref().unwrap_or("").as_bytes());
    }
    h.finish()
}

/// Counts of quarantined rows by reason, sorted by count (largest first) then reason.
pub fn quarantine_summary(quarantined: &[Quarantined]) -> Vec<(String, usize)> {
    let mut counts = ReasonCounts::default();
    for q in quarantined {
        counts.add(&q.reason);
    }
    counts.summary()
}

/// Quarantined rows counted by reason as they stream by (see [`quarantine_summary`]).
#[derive(Debug, Default)]
pub struct ReasonCounts(std::collections::BTreeMap<String, usize>);

impl ReasonCounts {
    pub fn add(&mut self, reason: &str) {
        let kind = reason_kind(reason);
        match self.0.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(kind.to_owned(), 1);
            }
        }
    }

    /// By count (largest first), then reason.
    pub fn summary(self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self.0.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

/// The part of a reason before its first colon: "missing label: ..." → "missing label".
fn reason_kind(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}
