//! keel-monitor integration tests: statistics against scipy, and drift on real data with the
//! real all-MiniLM-L6-v2 encoder (pulled once per process with `PullOptions::from_env()`).

// scipy's values are pasted at the precision it printed them.
#![allow(clippy::excessive_precision)]

mod drift;
mod html;
mod stats;

use std::path::PathBuf;
use std::sync::OnceLock;

use keel_core::Matrix;
use keel_embed::{Encoder, EncoderConfig, PullOptions, pull};

/// The shared folder beside the workspace (`$KEEL_SHARED` overrides).
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("KEEL_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

pub fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let model =
            pull("all-MiniLM-L6-v2", &PullOptions::from_env()).expect("pull all-MiniLM-L6-v2 (set KEEL_MODELS)");
        Encoder::load(&model, EncoderConfig::default()).expect("load encoder")
    })
}

/// Embeddings and token counts of `texts`.
pub fn embed(texts: &[String]) -> (Matrix, Vec<usize>) {
    let enc = encoder();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let v = enc.embed(&refs).expect("embed");
    let tokens = refs.iter().map(|t| enc.count_tokens(t).expect("tokenize")).collect();
    (Matrix::from_rows(&v, enc.dim()).expect("rows"), tokens)
}
