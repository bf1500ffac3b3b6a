//! What most commands need: the store, the encoder, and facts about this process.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use keel_embed::{Encoder, EncoderConfig, InstalledModel, Precision, PullOptions};
use keel_store::Store;

use crate::cli::{EncoderArgs, EncoderPrecision};

pub async fn open_store(home: &Path) -> anyhow::Result<Store> {
    Store::open(home).await.with_context(|| format!("cannot open the store at {}", home.display()))
}

/// Resolves the encoder model (fetching it on first use) and loads it.
pub fn load_encoder(args: &EncoderArgs) -> anyhow::Result<(InstalledModel, Arc<Encoder>)> {
    let mut opts = PullOptions::from_env();
    opts.model_dir = args.model_dir.clone();
    let installed = keel_embed::pull(&args.encoder_name, &opts)
        .with_context(|| format!("cannot get encoder model {}", args.encoder_name))?;
    let precision = match args.precision {
        EncoderPrecision::Fp32 => Precision::F32,
        EncoderPrecision::Int8 => Precision::Int8,
    };
    let cfg = EncoderConfig { batch_size: args.batch_size.max(1), precision, ..EncoderConfig::default() };
    let encoder = Encoder::load(&installed, cfg)
        .with_context(|| format!("cannot load encoder from {}", installed.dir.display()))?;
    Ok((installed, Arc::new(encoder)))
}

pub fn code_version() -> String {
    format!("keel {}", env!("CARGO_PKG_VERSION"))
}

pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
