//! `POST /v1/answer` `{"question": "...", "k": 5, "max_tokens": 128}` → `{"answer": "...",
//! "citations": [...], ...}`: retrieve chunks from the keel-index folder, fit them into the
//! generator's window, generate through keel-llm's response cache (every call recorded in the
//! store), and cite the chunks the answer draws on (the rule is in `keel_llm::cite`).
//!
//! Embedding, search and generation run on blocking threads; one answer is generated at a time
//! per server (the local model holds one KV cache), others wait on a semaphore with a deadline
//! and get 429 with Retry-After when it passes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::routing::post;
use axum::{Json, Router};
use keel_index::{IndexError, Mode, Query};
use keel_llm::{Chain, LlmError, Params, Passage};
use keel_store::Store;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::search::LiveIndex;
use crate::{ApiError, EncoderSlot, Extension, passage};

/// Most chunks one request may ask for.
pub const MAX_K: usize = 20;
/// Most new tokens one request may ask for.
pub const MAX_NEW_TOKENS: usize = 512;
/// How long a request waits for the generator before 429.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

/// Retrieval (index + encoder), generation (a chain) and the store that caches and records.
pub struct AnswerService {
    live: LiveIndex,
    chain: Arc<Chain>,
    store: Store,
    busy: Semaphore,
}

impl std::fmt::Debug for AnswerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerService").field("dir", &self.live.dir).field("chain", &self.chain).finish()
    }
}

impl AnswerService {
    /// `encoder` embeds dense and hybrid questions; it must be the one the generation searched was
    /// built with, or those questions answer 503 (as [`crate::SearchService::open`]).
    pub fn open(
        dir: &Path,
        encoder: impl Into<EncoderSlot>,
        chain: Arc<Chain>,
        store: Store,
    ) -> Result<Arc<Self>, IndexError> {
        Ok(Arc::new(Self { live: LiveIndex::open(dir, encoder.into())?, chain, store, busy: Semaphore::new(1) }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerRequest {
    question: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    temperature: f64,
    #[serde(default = "default_seed")]
    seed: u64,
}

fn default_k() -> usize {
    5
}
fn default_max_tokens() -> usize {
    128
}
fn default_seed() -> u64 {
    42
}

/// The `/v1/answer` route with its own state.
pub fn answer_routes(service: Arc<AnswerService>) -> Router {
    Router::new().route("/v1/answer", post(answer)).with_state(service)
}

/// `/v1/answer` as an [`Extension`] for [`crate::router_with`]: the route and its OpenAPI entry.
pub fn answer_extension(service: Arc<AnswerService>) -> Extension {
    let item = json!({"post": {
        "summary": "Answer a question from the indexed documents, with citations",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["question"], "additionalProperties": false,
            "properties": {
                "question": {"type": "string"},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_NEW_TOKENS, "default": 128},
                "mode": {"type": "string", "enum": ["hybrid", "dense", "bm25"], "default": "hybrid"},
                "temperature": {"type": "number", "minimum": 0, "default": 0},
                "seed": {"type": "integer", "minimum": 0, "default": 42}
            }}}}},
        "responses": {
            "200": {"description": "answer, citations (n, chunk_id, doc_id, source, start, end, overlap, marked), sources in the prompt, dropped chunk ids, prompt_tokens, context_window, completion (generator, tokens, cost, cache_hit, attempts)"},
            "422": {"description": "invalid request"},
            "429": {"description": "the generator is busy; retry after the given seconds"},
            "503": {"description": "encoder, index or every generator unavailable"}
        }
    }});
    let mut openapi_paths = serde_json::Map::new();
    openapi_paths.insert("/v1/answer".into(), item);
    Extension { routes: answer_routes(service), openapi_paths }
}

async fn answer(
    State(svc): State<Arc<AnswerService>>,
    body: Result<Json<AnswerRequest>, JsonRejection>,
) -> Result<Json<keel_llm::Answer>, ApiError> {
    let Json(req) = body?;
    if req.question.trim().is_empty() {
        return Err(ApiError::unprocessable("question is empty"));
    }
    if !(1..=MAX_K).contains(&req.k) {
        return Err(ApiError::unprocessable(format!("k must be in 1..={MAX_K}")));
    }
    if !(1..=MAX_NEW_TOKENS).contains(&req.max_tokens) {
        return Err(ApiError::unprocessable(format!("max_tokens must be in 1..={MAX_NEW_TOKENS}")));
    }
    if !(req.temperature.is_finite() && req.temperature >= 0.0) {
        return Err(ApiError::unprocessable("temperature must be a non-negative number"));
    }
    let passages = {
        let (svc, question, k, mode) = (svc.clone(), req.question.clone(), req.k, req.mode);
        tokio::task::spawn_blocking(move || -> Result<Vec<Passage>, ApiError> {
            let (_, hits) = svc.live.search(Query::new(&question, None, k, mode))?;
            Ok(hits.iter().map(passage).collect())
        })
        .await
        .map_err(ApiError::internal)??
    };
    let _permit = tokio::time::timeout(QUEUE_WAIT, svc.busy.acquire())
        .await
        .map_err(|_| ApiError::overloaded("the generator is busy with other answers", 5))?
        .map_err(ApiError::internal)?;
    let params =
        Params { max_tokens: req.max_tokens, temperature: req.temperature, seed: req.seed, ..Params::default() };
    let out = keel_llm::answer(&svc.store, svc.chain.clone(), &req.question, passages, params, Box::new(|_| {}))
        .await
        .map_err(|e| match e {
            LlmError::ContextTooSmall { .. } => ApiError::unprocessable(e.to_string()),
            LlmError::AllFailed { .. } => ApiError::unavailable(e.to_string()),
            other => ApiError::internal(other),
        })?;
    Ok(Json(out))
}
