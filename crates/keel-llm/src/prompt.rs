//! Grounded prompts that fit the model's context window.
//!
//! Retrieved passages arrive best first. They are numbered `[1]`, `[2]`, ... in that order and
//! the rendered chat prompt is counted with the model's own tokenizer (for a fallback chain, the
//! largest count of any member against the smallest window). While prompt + the answer's
//! reserve (`max_tokens`) exceeds the window, the lowest-ranked passage is dropped; if the best
//! passage alone is still too long it is cut (at a character boundary, keeping its start) to the
//! longest prefix that fits.

use serde::{Deserialize, Serialize};

use crate::LlmError;
use crate::generator::{Chain, Message};

/// One retrieved chunk of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub chunk_id: String,
    pub doc_id: String,
    /// Where the document came from (path, URL, row).
    pub source: String,
    /// Offsets of the chunk in its document, as the index gives them (characters).
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// Retrieval score (higher is better).
    pub score: f64,
}

/// The prompt that was sent and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedPrompt {
    pub messages: Vec<Message>,
    /// Indices into the passages given, in prompt order: `used[0]` is `[1]`.
    pub used: Vec<usize>,
    /// Indices of passages left out because they did not fit.
    pub dropped: Vec<usize>,
    /// Bytes of passage `used[0]` kept when it had to be cut, else `None`.
    pub truncated: Option<usize>,
    pub prompt_tokens: usize,
    pub context_window: usize,
    /// Tokens reserved for the answer.
    pub reserve: usize,
}

pub const SYSTEM: &str = "You answer questions using only the numbered sources you are given. \
Answer in one or two sentences and cite the sources you used like [1]. If the sources do not \
contain the answer, say that you do not know.";

/// The messages for `question` over `passages` (already cut as needed).
pub fn messages(question: &str, passages: &[&str]) -> Vec<Message> {
    let mut user = String::new();
    if passages.is_empty() {
        user.push_str("No sources were found.\n\n");
    } else {
        user.push_str("Sources:\n\n");
        for (i, text) in passages.iter().enumerate() {
            user.push_str(&format!("[{}] {}\n\n", i + 1, text.trim()));
        }
    }
    user.push_str(&format!("Question: {}", question.trim()));
    vec![Message::system(SYSTEM), Message::user(user)]
}

/// Builds the prompt; see the module docs for the rule.
pub fn fit(question: &str, passages: &[Passage], chain: &Chain, reserve: usize) -> Result<FittedPrompt, LlmError> {
    let window = chain.context_window();
    let available = window.saturating_sub(reserve);
    let count = |texts: &[&str]| chain.prompt_tokens(&messages(question, texts));
    let mut n = passages.len();
    loop {
        let texts: Vec<&str> = passages[..n].iter().map(|p| p.text.as_str()).collect();
        let tokens = count(&texts)?;
        if tokens <= available {
            return Ok(FittedPrompt {
                messages: messages(question, &texts),
                used: (0..n).collect(),
                dropped: (n..passages.len()).collect(),
                truncated: None,
                prompt_tokens: tokens,
                context_window: window,
                reserve,
            });
        }
        if n > 1 {
            n -= 1;
            continue;
        }
        if n == 0 {
            return Err(LlmError::ContextTooSmall { needed: tokens, available });
        }
        // The best passage alone is too long: keep the longest prefix that fits.
        let text = passages[0].text.as_str();
        let bare = count(&[""])?;
        if bare > available {
            return Err(LlmError::ContextTooSmall { needed: bare, available });
        }
        let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
        let (mut lo, mut hi) = (0usize, boundaries.len() - 1); // lo always fits
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if count(&[&text[..boundaries[mid]]])? <= available {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let kept = boundaries[lo];
        let cut = &text[..kept];
        let tokens = count(&[cut])?;
        return Ok(FittedPrompt {
            messages: messages(question, &[cut]),
            used: if kept > 0 { vec![0] } else { Vec::new() },
            dropped: if kept > 0 { (1..passages.len()).collect() } else { (0..passages.len()).collect() },
            truncated: (kept > 0).then_some(kept),
            prompt_tokens: tokens,
            context_window: window,
            reserve,
        });
    }
}
