//! Token windows over a document, with overlap, in the encoder's own tokens.
//!
//! The tokenizer is the encoder's `tokenizer.json`, loaded here without its padding and
//! truncation, so a window of `tokens` tokens plus `[CLS]`/`[SEP]` fits the encoder's window
//! (256 for all-MiniLM-L6-v2) and nothing a chunk holds is cut off when it is embedded.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::IndexError;

/// One window: its text and where it lies in the document text, as char offsets
/// (`text == doc.text.chars().skip(start_char).take(end_char - start_char)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSpan {
    pub start_char: usize,
    pub end_char: usize,
    pub text: String,
}

/// Cuts texts into windows of `tokens` tokens, consecutive windows sharing `overlap` tokens.
pub struct Chunker {
    tokenizer: Tokenizer,
    pub tokens: usize,
    pub overlap: usize,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker").field("tokens", &self.tokens).field("overlap", &self.overlap).finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Tokenizer(e.to_string())
}

impl Chunker {
    /// Loads `tokenizer.json` from an encoder model folder.
    pub fn from_model_dir(dir: &Path, tokens: usize, overlap: usize) -> Result<Self, IndexError> {
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(tok_err)?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(tok_err)?;
        Self::new(tokenizer, tokens, overlap)
    }

    pub fn new(tokenizer: Tokenizer, tokens: usize, overlap: usize) -> Result<Self, IndexError> {
        if tokens == 0 || overlap >= tokens {
            return Err(IndexError::Invalid(format!(
                "chunks of {tokens} tokens with {overlap} overlapping: need tokens ≥ 1 and overlap < tokens"
            )));
        }
        Ok(Self { tokenizer, tokens, overlap })
    }

    /// The windows of `text`, in order. Empty text gives none; a short text gives one window
    /// holding all of it (from its first to its last token, so surrounding whitespace goes).
    pub fn chunk(&self, text: &str) -> Result<Vec<ChunkSpan>, IndexError> {
        let enc = self.tokenizer.encode_char_offsets(text, false).map_err(tok_err)?;
        // Special tokens have (0, 0) offsets; keep real tokens only.
        let offsets: Vec<(usize, usize)> = enc
            .get_offsets()
            .iter()
            .zip(enc.get_special_tokens_mask())
            .filter(|(o, special)| **special == 0 && o.1 > o.0)
            .map(|(o, _)| *o)
            .collect();
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        // Char index → byte index, once.
        let byte_at: Vec<usize> = text.char_indices().map(|(b, _)| b).chain(std::iter::once(text.len())).collect();
        let step = self.tokens - self.overlap;
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + self.tokens).min(offsets.len());
            let (sc, ec) = (offsets[start].0, offsets[end - 1].1);
            out.push(ChunkSpan { start_char: sc, end_char: ec, text: text[byte_at[sc]..byte_at[ec]].to_owned() });
            if end == offsets.len() {
                break;
            }
            start += step;
        }
        Ok(out)
    }

    /// Tokens in `text` without specials (for reports and prompt budgets).
    pub fn count_tokens(&self, text: &str) -> Result<usize, IndexError> {
        Ok(self.tokenizer.encode_fast(text, false).map_err(tok_err)?.len())
    }
}
