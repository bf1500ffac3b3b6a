//! Fine-tuning the encoder: contrastive training of the sentence embedding, in the manner of
//! SetFit, on all weights or on LoRA adapters.
//!
//! - [`BertWeights`]: the weights as plain arrays, loaded from an installed model, written back
//!   as safetensors for [`crate::Encoder::load_with_weights`].
//! - The trainable forward (`model`): the same computation as the inference forward (packed
//!   sequences, exact-erf GELU with the same erf approximation, LayerNorm, mean pooling over each
//!   sequence's tokens, L2 normalisation), recording what the backward needs, and a hand-written
//!   backward through all of it: LayerNorms, attention with its softmax, GELU, the linear layers
//!   (full weights, or `x · Aᵀ · Bᵀ` adapters with the base frozen), pooling and normalisation;
//!   seeded dropout at BERT's four sites in training steps.
//!   Hand-written rather than candle's autograd: the backward of each layer is a few matrix
//!   products on the `gemm` crate plus loops in a fixed order, so it runs at the speed of the
//!   matrix products, keeps no autograd graph of small tensors, needs no padding, and gives the
//!   same bits on every run; written once over [`Float`], it runs in f64 for the
//!   finite-difference gradient check and in f32 for training.
//! - [`Loss`]: cosine-similarity (MSE to the pair label) or multiple-negatives ranking.
//! - [`contrastive_pairs`], [`positive_pairs`]: seeded, balanced, capped pairs from labels.
//! - [`AdamW`] and [`linear_schedule`]: PyTorch's update and Hugging Face's linear warm-up.
//! - [`Lora`]: adapters, their artifact ([`Lora::to_bytes`]) and [`Lora::merge_into`].
//! - [`FineTuner`]: steps, evaluation loss, embeddings, checkpoints.
//! - [`load_adapted`]: an inference [`Encoder`] with an adapter merged in (or tuned weights).

mod adapted;
mod float;
mod lora;
mod loss;
mod model;
mod optim;
mod pairs;
mod st;
mod trainer;
mod weights;

#[cfg(test)]
mod gradcheck;

pub use adapted::{AdapterKind, base_id, load_adapted};
pub use float::Float;
pub use keel_core::SplitMix64;
pub use lora::{Adapter, LORA_FORMAT, Lora, LoraConfig};
pub use loss::Loss;
pub use model::TokenIds;
pub use optim::{AdamW, ParamGrad, linear_schedule};
pub use pairs::{Pair, contrastive_pairs, positive_pairs};
pub use trainer::{CHECKPOINT_FORMAT, FineTuneConfig, FineTuner, Method};
pub use weights::{BertWeights, Dims, Kind, LayerWeights, Linear, Norm, Proj, TensorMut, TensorRef};

use crate::encoder::Encoder;
use crate::error::EmbedError;

/// Token ids of `texts` as `encoder` sees them (specials included, truncated at its
/// `max_seq_len`).
pub fn tokenize(encoder: &Encoder, texts: &[&str]) -> Result<Vec<TokenIds>, EmbedError> {
    texts
        .iter()
        .map(|t| {
            let enc = encoder.tokenizer().encode_fast(*t, true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
            Ok(TokenIds { ids: enc.get_ids().to_vec(), type_ids: enc.get_type_ids().to_vec() })
        })
        .collect()
}
