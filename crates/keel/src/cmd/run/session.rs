//! What stays loaded between runs of one process (the watcher's cycles): the store and the
//! encoder, loaded on first use.

use std::path::Path;
use std::sync::Arc;

use keel_embed::{Encoder, InstalledModel};
use keel_eval::FineTuneRecord;
use keel_store::Store;

use crate::config::EncoderSection;
use crate::context;

pub struct Session {
    pub store: Store,
    encoder: Option<Arc<Encoder>>,
    installed: Option<InstalledModel>,
    /// Fine-tuned encoders loaded (this run's, and production's for the gate), newest last.
    adapted: Vec<Arc<Encoder>>,
}

impl Session {
    pub fn new(store: Store) -> Self {
        Self { store, encoder: None, installed: None, adapted: Vec::new() }
    }

    /// Reuses an encoder the caller already loaded (the quickstart serves with the same one).
    pub fn with_encoder(store: Store, installed: InstalledModel, encoder: Arc<Encoder>) -> Self {
        Self { store, encoder: Some(encoder), installed: Some(installed), adapted: Vec::new() }
    }

    /// Keeps a fine-tuned encoder just made, so the steps after it need not load it again.
    pub fn keep_adapted(&mut self, encoder: Arc<Encoder>) {
        self.adapted.retain(|e| e.id() != encoder.id());
        // Two at most: a run compares its own with production's; older ones are dropped.
        if self.adapted.len() >= 2 {
            self.adapted.remove(0);
        }
        self.adapted.push(encoder);
    }

    /// The fine-tuned encoder `record` names: the one kept, or the base with the adaptation
    /// artifact from the store applied.
    pub async fn adapted(
        &mut self,
        cfg: &EncoderSection,
        dir: &Path,
        record: &FineTuneRecord,
    ) -> anyhow::Result<Arc<Encoder>> {
        if let Some(e) = self.adapted.iter().find(|e| e.id() == record.encoder_id) {
            return Ok(e.clone());
        }
        let installed = self.installed(cfg, dir)?;
        let encoder = context::load_recorded(&self.store, cfg, &installed, record).await?;
        self.keep_adapted(encoder.clone());
        Ok(encoder)
    }

    /// The encoder `version` reads embeddings from: the base, or its fine-tuned encoder (kept
    /// between calls, so a watcher's drift checks do not merge the adapter again each cycle).
    pub async fn version_encoder(
        &mut self,
        cfg: &EncoderSection,
        dir: &Path,
        version: &keel_store::ModelVersion,
    ) -> anyhow::Result<Arc<Encoder>> {
        match keel_eval::VersionMetrics::parse(&version.metrics).ok().and_then(|m| m.fine_tune) {
            Some(ft) => self.adapted(cfg, dir, &ft).await,
            None => self.load_encoder(cfg, dir),
        }
    }

    /// The encoder model's files, fetched on first use. `dir` is where relative paths start.
    pub fn installed(&mut self, cfg: &EncoderSection, dir: &Path) -> anyhow::Result<InstalledModel> {
        if let Some(i) = &self.installed {
            return Ok(i.clone());
        }
        let installed = context::pull_encoder(cfg, dir)?;
        self.installed = Some(installed.clone());
        Ok(installed)
    }

    /// Starts loading the encoder on its own thread, unless it is loaded: the caller does other
    /// work meanwhile and hands the result to [`Session::finish_loading`].
    pub fn load_encoder_in_background(
        &mut self,
        cfg: &EncoderSection,
        dir: &Path,
    ) -> anyhow::Result<Option<std::thread::JoinHandle<anyhow::Result<Arc<Encoder>>>>> {
        if self.encoder.is_some() {
            return Ok(None);
        }
        let installed = self.installed(cfg, dir)?;
        let cfg = cfg.clone();
        Ok(Some(std::thread::spawn(move || context::load_installed(&cfg, &installed))))
    }

    /// Keeps the encoder a [`Session::load_encoder_in_background`] thread loaded.
    pub fn finish_loading(
        &mut self,
        pending: Option<std::thread::JoinHandle<anyhow::Result<Arc<Encoder>>>>,
    ) -> anyhow::Result<()> {
        if let Some(handle) = pending {
            let encoder = handle.join().map_err(|_| anyhow::anyhow!("the encoder's loading thread panicked"))??;
            self.encoder.get_or_insert(encoder);
        }
        Ok(())
    }

    /// The loaded encoder, loaded on first use.
    pub fn load_encoder(&mut self, cfg: &EncoderSection, dir: &Path) -> anyhow::Result<Arc<Encoder>> {
        if let Some(e) = &self.encoder {
            return Ok(e.clone());
        }
        let installed = self.installed(cfg, dir)?;
        let encoder = context::load_installed(cfg, &installed)?;
        self.encoder = Some(encoder.clone());
        Ok(encoder)
    }
}
