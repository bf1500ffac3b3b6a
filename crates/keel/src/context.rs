//! What most commands need: the store, the encoder, and facts about this process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use keel_embed::{Encoder, EncoderConfig, InstalledModel, PullOptions};
use keel_store::Store;

use crate::config::{self, EncoderSection, Precision};

pub async fn open_store(home: &Path) -> anyhow::Result<Store> {
    Store::open(home).await.with_context(|| format!("cannot open the store at {}", home.display()))
}

/// Resolves the encoder model `[encoder]` names (fetching it on first use): from its
/// `model_dir` (relative to `dir`), else `KEEL_MODEL_DIR`, else the user cache and the network.
pub fn pull_encoder(cfg: &EncoderSection, dir: &Path) -> anyhow::Result<InstalledModel> {
    let mut opts = PullOptions::from_env();
    if let Some(d) = &cfg.model_dir {
        let d = PathBuf::from(config::expand_vars(d)?);
        opts.model_dir = Some(if d.is_absolute() { d } else { dir.join(d) });
    } else if let Some(d) = std::env::var_os("KEEL_MODEL_DIR") {
        opts.model_dir = Some(d.into());
    }
    keel_embed::pull(&cfg.name, &opts).with_context(|| format!("cannot get encoder model {}", cfg.name))
}

/// Loads an installed encoder model with `[encoder]`'s precision and batch size.
pub fn load_installed(cfg: &EncoderSection, installed: &InstalledModel) -> anyhow::Result<Arc<Encoder>> {
    let encoder = Encoder::load(installed, encoder_config(cfg))
        .with_context(|| format!("cannot load encoder from {}", installed.dir.display()))?;
    Ok(Arc::new(encoder))
}

fn encoder_config(cfg: &EncoderSection) -> EncoderConfig {
    let precision = match cfg.precision {
        Precision::F32 => keel_embed::Precision::F32,
        Precision::Int8 => keel_embed::Precision::Int8,
    };
    EncoderConfig { batch_size: cfg.batch_size.max(1), precision, ..EncoderConfig::default() }
}

/// The base encoder with a fine-tuned adaptation (`bytes`, stored as `adapter`) applied: a LoRA
/// adapter merged into the weights once, or the tuned weights; in the section's precision.
pub fn load_adapted(
    cfg: &EncoderSection,
    installed: &InstalledModel,
    kind: keel_embed::finetune::AdapterKind,
    bytes: &[u8],
    adapter: &keel_core::ContentHash,
) -> anyhow::Result<Arc<Encoder>> {
    let encoder = keel_embed::finetune::load_adapted(installed, encoder_config(cfg), kind, bytes, adapter.short())
        .with_context(|| format!("cannot load the fine-tuned encoder {} on {}", adapter.short(), installed.name))?;
    Ok(Arc::new(encoder))
}

/// The fine-tuned encoder `record` names: the base model with the adaptation artifact (read
/// from the store) applied; its id is checked against the one recorded.
pub async fn load_recorded(
    store: &Store,
    cfg: &EncoderSection,
    installed: &InstalledModel,
    record: &keel_eval::FineTuneRecord,
) -> anyhow::Result<Arc<Encoder>> {
    let hash = keel_core::ContentHash::parse(&record.adapter).context("malformed adapter hash")?;
    let bytes = store.read_artifact(&hash).await?;
    let kind = crate::stages::finetune::kind_of(record)?;
    let encoder = tokio::task::block_in_place(|| load_adapted(cfg, installed, kind, &bytes, &hash))?;
    anyhow::ensure!(
        encoder.id() == record.encoder_id,
        "the adapter loads as {}, but the version records {}",
        encoder.id(),
        record.encoder_id
    );
    Ok(encoder)
}

/// The encoder `version` reads embeddings from: `base`, unless the version was trained on a
/// fine-tuned encoder; then that one ([`load_recorded`]).
pub async fn version_encoder(
    store: &Store,
    cfg: &EncoderSection,
    installed: &InstalledModel,
    base: Arc<Encoder>,
    version: &keel_store::ModelVersion,
) -> anyhow::Result<Arc<Encoder>> {
    match keel_eval::VersionMetrics::parse(&version.metrics).ok().and_then(|m| m.fine_tune) {
        Some(ft) => load_recorded(store, cfg, installed, &ft).await,
        None => Ok(base),
    }
}

/// [`pull_encoder`] then [`load_installed`].
pub fn load_encoder(cfg: &EncoderSection, dir: &Path) -> anyhow::Result<(InstalledModel, Arc<Encoder>)> {
    let installed = pull_encoder(cfg, dir)?;
    let encoder = load_installed(cfg, &installed)?;
    Ok((installed, encoder))
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
