//! The answer a user is shown: extracted from the documents, or generated and checked.
//!
//! [`AnswerMode`]: `extractive` never generates; `generate` always generates; `auto` (the
//! default) generates only when the configured generator is [`Capability`]-capable, else
//! extracts. Every generated answer is checked against the chunks it cites
//! ([`crate::ground`]); one that is not grounded is withheld and the extractive answer is
//! shown instead, with a notice in plain words. A generator that fails, or a prompt that does
//! not fit, also falls back to the extractive answer (with its own notice). The decision, its
//! reason and the `grounded` score are in the [`Reply`] and on the call's row in the store.

use std::sync::Arc;
use std::time::Instant;

use keel_store::Store;
use serde::{Deserialize, Serialize};

use crate::LlmError;
use crate::cite::Citation;
use crate::extract::{Embedder, ExtractOptions, Extraction, extract};
use crate::generator::{Chain, Params};
use crate::ground::{Grounding, check};
use crate::prompt::Passage;
use crate::service::{Answer, OnText, PromptSource, answer};

/// Which answer to give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// Sentences of the retrieved chunks; no generator is loaded.
    Extractive,
    /// Generate, check, and fall back to extraction when the answer is not grounded.
    Generate,
    /// `generate` when the generator is capable, else `extractive`.
    #[default]
    Auto,
}

impl AnswerMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "extractive" => Some(Self::Extractive),
            "generate" => Some(Self::Generate),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extractive => "extractive",
            Self::Generate => "generate",
            Self::Auto => "auto",
        }
    }
}

/// Whether the configured generator is trusted to write answers in `auto` mode, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub capable: bool,
    pub why: String,
}

/// What was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The extractive answer, by the mode (no generation).
    Extractive,
    /// The generated answer, every sentence supported by its cited chunks.
    Generated,
    /// The generated answer was not grounded; the extractive answer is shown with a notice.
    Withheld,
    /// No generator could answer (or the prompt did not fit); the extractive answer is shown.
    GeneratorFailed,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extractive => "extractive",
            Self::Generated => "generated",
            Self::Withheld => "withheld",
            Self::GeneratorFailed => "generator_failed",
        }
    }
}

/// Whether `mode` generates given `capability`, and the reason in words.
pub fn plan(mode: AnswerMode, capability: &Capability) -> (bool, String) {
    match mode {
        AnswerMode::Extractive => (false, "mode extractive: sentences of the retrieved chunks".into()),
        AnswerMode::Generate => (true, "mode generate: generated, then checked against its citations".into()),
        AnswerMode::Auto if capability.capable => {
            (true, format!("mode auto: {}, so it generates (checked against its citations)", capability.why))
        }
        AnswerMode::Auto => (false, format!("mode auto: {}, so the answer is extracted", capability.why)),
    }
}

/// The answer shown, the decision behind it and what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub question: String,
    /// The text shown as the answer.
    pub answer: String,
    pub citations: Vec<Citation>,
    pub mode: AnswerMode,
    pub decision: Decision,
    /// Why, in words.
    pub reason: String,
    /// Shown above the answer when the generated one was withheld or generation failed.
    pub notice: Option<String>,
    /// Share of the decided-on answer's sentences supported by its citations: the generated
    /// answer's when there was one, else the extractive answer's.
    pub grounded: f64,
    /// The check behind `grounded`.
    pub grounding: Grounding,
    /// The shown answer's own score (equal to `grounded` unless a generation was withheld).
    pub shown_grounded: f64,
    /// The extractive answer (shown, or computed as the fallback).
    pub extraction: Option<Extraction>,
    /// The generation (shown or withheld), with its prompt and completion record.
    pub generation: Option<Answer>,
    /// The retrieved chunks, numbered `[n]` best first.
    pub sources: Vec<PromptSource>,
    pub latency_ms: f64,
}

/// What to answer and how.
#[derive(Clone)]
pub struct Ask {
    pub question: String,
    /// Retrieved chunks, best first.
    pub passages: Vec<Passage>,
    pub mode: AnswerMode,
    pub capability: Capability,
    pub params: Params,
    pub extract: ExtractOptions,
    /// The encoder for sentence similarity (None: word overlap only).
    pub embed: Option<Embedder>,
}

/// Extracts and checks the extraction against its own citations (on a blocking thread).
async fn extracted(ask: &Ask) -> Result<(Extraction, Grounding), LlmError> {
    let ask = ask.clone();
    tokio::task::spawn_blocking(move || -> Result<(Extraction, Grounding), String> {
        let e = extract(&ask.question, &ask.passages, ask.embed.as_ref(), ask.extract)?;
        let cited: Vec<&Passage> = e.citations.iter().map(|c| &ask.passages[c.n - 1]).collect();
        // The extracted sentences are the chunks' own: checked on words, without the encoder.
        let g = check(&ask.question, &e.answer, &cited, None)?;
        Ok((e, g))
    })
    .await
    .map_err(|e| LlmError::Task(e.to_string()))?
    .map_err(LlmError::Task)
}

/// The generation's check against the chunks it cites (on a blocking thread).
async fn checked(ask: &Ask, generated: &Answer) -> Result<Grounding, LlmError> {
    let (question, text, embed) = (ask.question.clone(), generated.answer.clone(), ask.embed.clone());
    let cited: Vec<Passage> = generated
        .citations
        .iter()
        .filter_map(|c| ask.passages.iter().find(|p| p.chunk_id == c.chunk_id).cloned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&Passage> = cited.iter().collect();
        check(&question, &text, &refs, embed.as_ref())
    })
    .await
    .map_err(|e| LlmError::Task(e.to_string()))?
    .map_err(LlmError::Task)
}

/// The notice on an extractive answer whose sentences hold none of the question's words.
pub const WEAK_NOTICE: &str =
    "none of the question's words occur in the passages found, so they may not answer it; these are the closest";

/// The notice shown when a generated answer is withheld.
pub fn withheld_notice(generator: &str) -> String {
    let who = if generator.starts_with("local") { "the local model's answer" } else { "the generated answer" };
    format!("{who} was not supported by the documents; here are the passages that answer it")
}

/// Answers `ask`: extraction, or generation through `chain` (which must be given when the
/// mode generates; see [`plan`]) checked for groundedness. Records the decision and score on
/// the generation's row in the store.
pub async fn reply(store: &Store, chain: Option<Arc<Chain>>, ask: Ask, on_text: OnText) -> Result<Reply, LlmError> {
    let started = Instant::now();
    let (generate, reason) = plan(ask.mode, &ask.capability);
    let base = |answer: String, citations, decision, reason: String, grounding: Grounding| Reply {
        question: ask.question.clone(),
        answer,
        citations,
        mode: ask.mode,
        decision,
        reason,
        notice: None,
        grounded: grounding.score,
        shown_grounded: grounding.score,
        grounding,
        extraction: None,
        generation: None,
        sources: PromptSource::numbered(&ask.passages),
        latency_ms: 0.0,
    };
    let chain = match (generate, chain) {
        (false, _) => None,
        (true, Some(chain)) => Some(chain),
        (true, None) => return Err(LlmError::Config(format!("{reason}, but no generator was loaded"))),
    };
    let Some(chain) = chain else {
        let (e, g) = extracted(&ask).await?;
        let mut r = base(e.answer.clone(), e.citations.clone(), Decision::Extractive, reason, g);
        r.notice = e.weak.then(|| WEAK_NOTICE.to_owned());
        r.extraction = Some(e);
        r.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        return Ok(r);
    };
    let generated = match answer(store, chain, &ask.question, ask.passages.clone(), ask.params.clone(), on_text).await {
        Ok(a) => a,
        Err(e @ (LlmError::AllFailed { .. } | LlmError::ContextTooSmall { .. })) => {
            let (x, g) = extracted(&ask).await?;
            let why = format!("{reason}; no generator answered: {e}");
            let mut r = base(x.answer.clone(), x.citations.clone(), Decision::GeneratorFailed, why, g);
            r.notice = Some(format!("no generator could answer ({e}); here are the passages that answer it"));
            r.extraction = Some(x);
            r.latency_ms = started.elapsed().as_secs_f64() * 1e3;
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let g = checked(&ask, &generated).await?;
    let mut r = if g.grounded {
        let why = format!("{reason}: every sentence is supported by its citations");
        base(generated.answer.clone(), generated.citations.clone(), Decision::Generated, why, g)
    } else {
        let (x, xg) = extracted(&ask).await?;
        let bad = g.sentences.iter().filter(|s| !s.supported).count();
        let why = format!(
            "{reason}: {bad} of {} sentences are not supported by the cited chunks (similarity below {} or \
             under {:.0}% of their words in them), so it is withheld",
            g.sentences.len(),
            g.min_similarity,
            g.min_support * 100.0
        );
        let mut r = base(x.answer.clone(), x.citations.clone(), Decision::Withheld, why, g);
        r.notice = Some(withheld_notice(&generated.completion.generator));
        r.shown_grounded = xg.score;
        r.extraction = Some(x);
        r
    };
    store.record_llm_grounding(&generated.completion.call_id, r.grounded, r.decision.as_str()).await?;
    r.generation = Some(generated);
    r.latency_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(r)
}
