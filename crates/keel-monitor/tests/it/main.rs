//! keel-monitor integration tests: statistics against scipy, and drift on real data with the
//! real all-MiniLM-L6-v2 encoder (pulled once per process with `PullOptions::from_env()`).
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]
// scipy's values are pasted at the precision it printed them.
#![allow(clippy::excessive_precision)]

mod drift;
mod html;
mod stats;

use keel_core::Matrix;
use keel_test_support::encoder;
pub use keel_test_support::{shared_file, shared_text};

/// Embeddings and token counts of `texts`.
pub fn embed(texts: &[String]) -> (Matrix, Vec<usize>) {
    let enc = encoder();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let v = enc.embed(&refs).expect("embed");
    let tokens = refs.iter().map(|t| enc.count_tokens(t).expect("tokenize")).collect();
    (Matrix::from_rows(&v, enc.dim()).expect("rows"), tokens)
}
