use std::collections::BTreeMap;

use keel_core::{Hasher, Record, Split};
use serde::{Deserialize, Serialize};

/// Fractions of each label's rows that go to validation and test; the rest is training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub validation: f64,
    pub test: f64,
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { validation: 0.1, test: 0.2, seed: 42 }
    }
}

/// Assigns every record to a split, deterministically and stratified by label.
///
/// Within each label, distinct texts are ordered by a hash of (seed, text) and cut at the
/// configured fractions, so the assignment does not depend on row order, and rows with the same
/// text always land in the same split (an exact duplicate never straddles train and test).
pub fn assign_splits(records: &[Record], cfg: &SplitConfig) -> Vec<Split> {
    let mut by_label: BTreeMap<&str, BTreeMap<keel_core::ContentHash, Vec<usize>>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let mut h = Hasher::new();
        h.field(&cfg.seed.to_le_bytes()).field(r.text.as_bytes());
        by_label.entry(r.label.as_deref().unwrap_or("")).or_default().entry(h.finish()).or_default().push(i);
    }
    let mut out = vec![Split::Train; records.len()];
    for groups in by_label.values() {
        let n = groups.len() as f64;
        let n_test = (n * cfg.test).round() as usize;
        let n_val = (n * cfg.validation).round() as usize;
        for (k, rows) in groups.values().enumerate() {
            let split = if k < n_test {
                Split::Test
            } else if k < n_test + n_val {
                Split::Validation
            } else {
                Split::Train
            };
            for &i in rows {
                out[i] = split;
            }
        }
    }
    out
}
