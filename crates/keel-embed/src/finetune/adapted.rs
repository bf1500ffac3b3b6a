//! A fine-tuned encoder for inference: the base model with a LoRA adapter merged into its
//! weights once at load, or fully fine-tuned weights; either way the fast fp32 and int8 kernels
//! serve it at the speed of the base model.

use super::lora::Lora;
use super::weights::BertWeights;
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::EmbedError;
use crate::source::InstalledModel;

/// What an adaptation artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A LoRA adapter ([`Lora::to_bytes`]), merged into the base weights at load.
    Lora,
    /// Every weight of the model, fine-tuned ([`BertWeights::to_safetensors`]).
    Weights,
}

impl AdapterKind {
    /// The word in the encoder's id: `{base}+lora-{hash}` or `{base}+setfit-{hash}`.
    pub fn tag_word(self) -> &'static str {
        match self {
            AdapterKind::Lora => "lora",
            AdapterKind::Weights => "setfit",
        }
    }
}

/// The id of `model`'s base weights, as recorded in a LoRA artifact (`name@sha12`, no precision).
pub fn base_id(model: &InstalledModel) -> String {
    format!("{}@{}", model.name, model.sha256.short())
}

/// Loads `model` with the adaptation `bytes` applied. `hash12` (12 hex digits of the artifact's
/// content hash) names it in the id, so embeddings of the base and of every adaptation are
/// cached apart: `{model}@{sha}+lora-{hash12}` (then `+int8` in int8 mode).
pub fn load_adapted(
    model: &InstalledModel,
    cfg: EncoderConfig,
    kind: AdapterKind,
    bytes: &[u8],
    hash12: &str,
) -> Result<Encoder, EmbedError> {
    let tag = format!("{}-{hash12}", kind.tag_word());
    match kind {
        AdapterKind::Lora => {
            let mut w = BertWeights::load(model)?;
            let (lora, base) = Lora::from_bytes(bytes, &w.dims)?;
            let want = base_id(model);
            if base != want {
                return Err(EmbedError::InvalidConfig(format!(
                    "the LoRA adapter was trained on {base}, not on {want}"
                )));
            }
            lora.merge_into(&mut w)?;
            Encoder::load_with_weights(model, cfg, &w.to_safetensors(), &tag)
        }
        AdapterKind::Weights => Encoder::load_with_weights(model, cfg, bytes, &tag),
    }
}
