//! Generation through the response cache, with every call recorded in the store; grounded
//! answers over retrieved passages.

use std::sync::Arc;
use std::time::Instant;

use keel_core::Hasher;
use keel_store::{LlmCachePolicy, LlmCall, Store};
use serde::{Deserialize, Serialize};

use crate::LlmError;
use crate::cite::{Citation, cite};
use crate::generator::{Chain, Finish, GenRequest, Generation, Params};
use crate::prompt::{FittedPrompt, Passage, fit};

/// Receives text as it is generated (from a blocking thread).
pub type OnText = Box<dyn FnMut(&str) + Send>;

/// A generation as the caller sees it: generated now or answered from the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub generator: String,
    pub model: String,
    /// Tokens this call consumed and produced (0 and 0 for a cache hit).
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost: f64,
    pub cache_hit: bool,
    pub attempts: u64,
    pub finish: Finish,
    /// Generators that failed before one answered.
    pub failed: Vec<(String, String)>,
    pub latency_ms: f64,
    /// The row in `llm_calls`.
    pub call_id: String,
    pub cache_key: String,
}

/// sha256 of (model, prompt, parameters): the response-cache key.
pub fn cache_key(model_id: &str, req: &GenRequest) -> String {
    let mut h = Hasher::new();
    h.field(b"keel-llm-cache/1")
        .field(model_id.as_bytes())
        .field(serde_json::to_string(&req.messages).unwrap_or_default().as_bytes())
        .field(serde_json::to_string(&req.params).unwrap_or_default().as_bytes());
    h.finish().as_str().to_owned()
}

/// The response cache's bounds: `KEEL_LLM_CACHE_TTL_SECS` (default a week) and
/// `KEEL_LLM_CACHE_MAX_ENTRIES` (default 10,000).
fn cache_policy() -> Result<LlmCachePolicy, LlmError> {
    let mut policy = LlmCachePolicy::default();
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(v) = var("KEEL_LLM_CACHE_TTL_SECS") {
        let secs: u64 = v.trim().parse().map_err(|_| {
            LlmError::Config(format!("KEEL_LLM_CACHE_TTL_SECS={v} is not a whole number of seconds (e.g. 86400)"))
        })?;
        policy.max_age = std::time::Duration::from_secs(secs);
    }
    if let Some(v) = var("KEEL_LLM_CACHE_MAX_ENTRIES") {
        policy.max_entries = v.trim().parse().map_err(|_| {
            LlmError::Config(format!("KEEL_LLM_CACHE_MAX_ENTRIES={v} is not a whole number (e.g. 10000)"))
        })?;
    }
    Ok(policy)
}

fn prompt_hash(req: &GenRequest) -> String {
    let mut h = Hasher::new();
    h.field(serde_json::to_string(&req.messages).unwrap_or_default().as_bytes());
    h.finish().as_str().to_owned()
}

/// Answers `req` from the cache, or generates on a blocking thread and caches the result.
/// Every call, hit, generation or failure, becomes a row in `llm_calls`.
pub async fn complete(
    store: &Store,
    chain: Arc<Chain>,
    req: GenRequest,
    mut on_text: OnText,
) -> Result<Completion, LlmError> {
    let started = Instant::now();
    let model = chain.model_id();
    // Served from the cache only what the chain's first choice answered before: an answer a
    // fallback gave while the first was down is cached under the fallback's own model id,
    // and is not served in place of the first's once it is back.
    let key = cache_key(&chain.first_model_id(), &req);
    let policy = cache_policy()?;
    let mut call = LlmCall {
        id: uuid::Uuid::now_v7().to_string(),
        at: now(),
        generator: chain.name(),
        model: model.clone(),
        prompt_sha256: prompt_hash(&req),
        cache_key: key.clone(),
        tokens_in: 0,
        tokens_out: 0,
        cost: 0.0,
        latency_ms: 0.0,
        cache_hit: false,
        attempts: 0,
        error: None,
        grounded: None,
        decision: None,
    };
    if let Some(hit) = store.llm_cached(&key, &policy).await? {
        let g: Generation = serde_json::from_value(hit.response)
            .map_err(|e| LlmError::Task(format!("cached response {key} is unreadable: {e}")))?;
        on_text(&g.text);
        call.generator = g.generator.clone();
        call.cache_hit = true;
        call.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        store.record_llm_call(&call).await?;
        return Ok(Completion {
            text: g.text,
            generator: g.generator,
            model,
            tokens_in: 0,
            tokens_out: 0,
            cost: 0.0,
            cache_hit: true,
            attempts: 0,
            finish: g.finish,
            failed: Vec::new(),
            latency_ms: call.latency_ms,
            call_id: call.id,
            cache_key: key,
        });
    }
    let job = {
        let (chain, req) = (Arc::clone(&chain), req.clone());
        tokio::task::spawn_blocking(move || chain.generate(&req, &mut *on_text))
    };
    let result = job.await.map_err(|e| LlmError::Task(e.to_string()))?;
    call.latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let g = match result {
        Ok(g) => g,
        Err(e) => {
            if let LlmError::AllFailed { failed, attempts } = &e {
                call.attempts = *attempts;
                call.generator = failed.last().map(|f| f.0.clone()).unwrap_or_default();
            }
            call.error = Some(e.to_string());
            store.record_llm_call(&call).await?;
            return Err(e);
        }
    };
    let stored = serde_json::to_value(&g).map_err(|e| LlmError::Task(e.to_string()))?;
    let key = cache_key(&g.model, &req);
    call.cache_key.clone_from(&key);
    store.llm_cache_put(&key, (&g.model, &stored), (g.tokens_in, g.tokens_out), &policy).await?;
    call.generator = g.generator.clone();
    call.tokens_in = g.tokens_in;
    call.tokens_out = g.tokens_out;
    call.cost = g.cost;
    call.attempts = g.attempts;
    store.record_llm_call(&call).await?;
    Ok(Completion {
        text: g.text,
        generator: g.generator,
        model,
        tokens_in: g.tokens_in,
        tokens_out: g.tokens_out,
        cost: g.cost,
        cache_hit: false,
        attempts: g.attempts,
        finish: g.finish,
        failed: g.failed,
        latency_ms: call.latency_ms,
        call_id: call.id,
        cache_key: key,
    })
}

/// A passage as it appeared in the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSource {
    pub n: usize,
    pub chunk_id: String,
    pub doc_id: String,
    pub source: String,
    pub start: usize,
    pub end: usize,
    pub score: f64,
}

impl PromptSource {
    /// `passages` numbered from 1, in order, as the prompt shows them.
    pub fn numbered<'a>(passages: impl IntoIterator<Item = &'a Passage>) -> Vec<Self> {
        passages
            .into_iter()
            .enumerate()
            .map(|(i, p)| Self {
                n: i + 1,
                chunk_id: p.chunk_id.clone(),
                doc_id: p.doc_id.clone(),
                source: p.source.clone(),
                start: p.start,
                end: p.end,
                score: p.score,
            })
            .collect()
    }
}

/// A grounded answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub question: String,
    pub answer: String,
    /// Sources the answer draws on (see [`crate::cite`] for the rule).
    pub citations: Vec<Citation>,
    /// Every passage in the prompt, numbered as the model saw them.
    pub sources: Vec<PromptSource>,
    /// Chunk ids retrieved but left out to fit the window.
    pub dropped: Vec<String>,
    /// Bytes kept of source [1] when it alone was too long.
    pub truncated: Option<usize>,
    pub prompt_tokens: usize,
    pub context_window: usize,
    pub completion: Completion,
}

/// Fits `passages` (best first) into a prompt, generates through the cache and attributes
/// the answer to the passages it draws on.
pub async fn answer(
    store: &Store,
    chain: Arc<Chain>,
    question: &str,
    passages: Vec<Passage>,
    params: Params,
    on_text: OnText,
) -> Result<Answer, LlmError> {
    let fitted: FittedPrompt = {
        let (chain, question, passages, reserve) =
            (Arc::clone(&chain), question.to_owned(), passages.clone(), params.max_tokens);
        tokio::task::spawn_blocking(move || fit(&question, &passages, &chain, reserve))
            .await
            .map_err(|e| LlmError::Task(e.to_string()))??
    };
    let req = GenRequest { messages: fitted.messages.clone(), params };
    let completion = complete(store, chain, req, on_text).await?;
    let mut used: Vec<Passage> = fitted.used.iter().map(|&i| passages[i].clone()).collect();
    if let (Some(kept), Some(first)) = (fitted.truncated, used.first_mut()) {
        first.text.truncate(kept);
        first.end = first.start + kept;
    }
    let refs: Vec<&Passage> = used.iter().collect();
    let citations = cite(question, &completion.text, &refs);
    Ok(Answer {
        question: question.to_owned(),
        answer: completion.text.clone(),
        citations,
        sources: PromptSource::numbered(&used),
        dropped: fitted.dropped.iter().map(|&i| passages[i].chunk_id.clone()).collect(),
        truncated: fitted.truncated,
        prompt_tokens: fitted.prompt_tokens,
        context_window: fitted.context_window,
        completion,
    })
}

fn now() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // Fixed-width RFC 3339 UTC with milliseconds, like the rest of the store.
    let secs = t.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, t.subsec_millis())
}

/// Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
