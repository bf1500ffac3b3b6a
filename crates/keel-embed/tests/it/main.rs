//! keel-embed integration tests. They use the real all-MiniLM-L6-v2 weights, pulled once per
//! process with `PullOptions::from_env()` (cache, else the network).

mod encoder;
mod finetune;
mod input;
mod source;

use std::path::PathBuf;
use std::sync::OnceLock;

use keel_embed::{Encoder, EncoderConfig, InstalledModel, PullOptions, pull};

pub const MODEL: &str = "all-MiniLM-L6-v2";

/// The shared folder beside the workspace (`$KEEL_SHARED` overrides).
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("KEEL_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")),
    }
}

pub fn model() -> &'static InstalledModel {
    static MODEL_DIR: OnceLock<InstalledModel> = OnceLock::new();
    MODEL_DIR.get_or_init(|| pull(MODEL, &PullOptions::from_env()).expect("pull model"))
}

/// One encoder with default settings, shared by the tests that do not count truncations.
pub fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| Encoder::load(model(), EncoderConfig::default()).expect("load"))
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
