//! What a version records about the fine-tuning of the encoder it reads: plain data, written by
//! the pipeline's fine-tuning stage, read by the report, the CLI and the server.

use serde::{Deserialize, Serialize};

/// How the pairs a fine-tuning trained on were drawn from the training split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairsRecipe {
    /// `contrastive` (same label = 1, different = 0, balanced) or `positive` (same-label pairs,
    /// for the ranking loss, the rest of the batch as negatives).
    pub kind: String,
    /// Pairs trained on (at most `max_pairs`).
    pub pairs: usize,
    /// Distinct pairs among them: when the split has fewer than `max_pairs`, the contrastive
    /// pairs are repeated, each round in a fresh seeded order (SetFit's oversampling).
    #[serde(default)]
    pub distinct: usize,
    pub max_pairs: usize,
    pub seed: u64,
    /// Training rows they were drawn from.
    pub train_rows: usize,
}

/// What fine-tuning the encoder did for a version (`[encoder.fine_tune]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FineTuneRecord {
    /// `lora r=8 alpha=16 targets=...` or `full+embeddings` (SetFit's whole body).
    pub method: String,
    /// `lora` (an adapter merged at load) or `weights` (every weight, fine-tuned).
    pub adapter_kind: String,
    /// The adaptation's artifact (sha256).
    pub adapter: String,
    /// The encoder it adapts (its id).
    pub base_encoder: String,
    /// The adapted encoder's id: the base id plus the adapter's hash.
    pub encoder_id: String,
    #[serde(flatten)]
    pub run: FineTuneRun,
}

/// What one fine-tuning run did: its loss, pairs and steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FineTuneRun {
    pub loss: String,
    pub pairs: PairsRecipe,
    /// Optimiser steps taken, and planned (epochs x batches).
    pub steps: u64,
    pub planned_steps: u64,
    /// The step whose validation loss was lowest: the adaptation kept.
    pub best_step: u64,
    /// Validation loss after each evaluation, as (step, loss).
    pub validation_loss: Vec<(u64, f32)>,
    /// Stopped before `planned_steps` because the validation loss stopped improving.
    pub stopped_early: bool,
}
