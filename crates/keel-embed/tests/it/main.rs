//! keel-embed integration tests. They use the real all-MiniLM-L6-v2 weights, pulled once per
//! process with `PullOptions::from_env()` (cache, else the network).
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod encoder;
mod finetune;
mod input;
mod source;

// The model, its one default encoder (for the tests that do not count truncations) and the
// shared data folder, from the helpers every crate's tests share.
pub use keel_test_support::{MINILM as MODEL, encoder, minilm as model, shared_text};

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
