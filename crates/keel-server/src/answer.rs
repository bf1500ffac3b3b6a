//! `POST /v1/answer` `{"question": "...", "k": 5, "max_tokens": 128, "answer_mode": "auto"}` →
//! `{"answer": "...", "citations": [...], "decision": "...", "grounded": 1.0, ...}`: retrieve
//! chunks from the keel-index folder, then answer as `keel_llm::reply` does: extract the
//! sentences that answer the question, or generate through keel-llm's response cache (every
//! call recorded in the store) and show the generation only when its sentences are supported
//! by the chunks it cites. `"stream": true` answers with server-sent events: `draft` events
//! carry generated text as it comes (unchecked), and the final `answer` event carries the whole
//! reply, decision and `grounded` score included (`error` instead when it fails).
//!
//! Embedding, search and generation run on blocking threads; one answer is generated at a time
//! per server (the local model holds one KV cache), others wait on a semaphore with a deadline
//! and get 429 with Retry-After when it passes. Extractive answers do not wait for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use axum::{Json, Router};
use keel_index::{IndexError, Mode, Query};
use keel_llm::{AnswerMode, Ask, Capability, Chain, ExtractOptions, LlmError, Params, Passage, Reply};
use keel_store::Store;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

mod stream;

use crate::search::{LiveIndex, Stop};
use crate::{ApiError, EncoderSlot, Extension, Limits, check_len, passage};

/// Most chunks one request may ask for.
pub const MAX_K: usize = 20;
/// Most new tokens one request may ask for.
pub const MAX_NEW_TOKENS: usize = 512;
/// How long a request waits for the generator before 429: a third of the request deadline, so
/// the caller gets the 429 (and time is left to generate) rather than the deadline's 503.
fn queue_wait(limits: &Limits) -> Duration {
    limits.request_deadline / 3
}

/// Loads the generator chain (blocking; run on a blocking thread).
pub type LoadChain = Arc<dyn Fn() -> Result<Chain, String> + Send + Sync>;

/// Retrieval (index + encoder), generation (a chain, loaded on the first request that
/// generates) and the store that caches and records; the default answer mode and whether the
/// chain is capable.
pub struct AnswerService {
    live: LiveIndex,
    encoders: EncoderSlot,
    /// Set once: the chain, or `None` when there is no loader or loading failed.
    chain: tokio::sync::OnceCell<Option<Arc<Chain>>>,
    load_chain: Option<LoadChain>,
    store: Store,
    busy: Arc<Semaphore>,
    mode: AnswerMode,
    capability: Capability,
    limits: Limits,
}

impl std::fmt::Debug for AnswerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerService").field("dir", &self.live.dir).field("chain", &self.chain.get()).finish()
    }
}

impl AnswerService {
    /// `encoder` embeds dense and hybrid questions; it must be the one the generation searched was
    /// built with, or those questions answer 503 (as [`crate::SearchService::open`]).
    /// `load_chain` runs on the first request that generates, so a server whose requests are
    /// all answered extractively never loads a model. Without a chain (no loader, or it failed),
    /// every request is answered extractively (a request for `generate` is refused with 503
    /// saying why).
    pub fn open(
        dir: &Path,
        encoder: impl Into<EncoderSlot>,
        load_chain: Option<LoadChain>,
        store: Store,
    ) -> Result<Arc<Self>, IndexError> {
        let encoders: EncoderSlot = encoder.into();
        let capability = Capability { capable: false, why: "no generator is configured as capable".into() };
        Ok(Arc::new(Self {
            live: LiveIndex::open(dir, encoders.clone())?,
            encoders,
            chain: tokio::sync::OnceCell::new(),
            load_chain,
            store,
            busy: Arc::new(Semaphore::new(1)),
            mode: AnswerMode::default(),
            capability,
            limits: Limits::default(),
        }))
    }

    /// The server's request limits (`max_question_bytes`) instead of the defaults.
    pub fn with_limits(self: Arc<Self>, limits: Limits) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut s) => {
                s.limits = limits;
                Arc::new(s)
            }
            Err(shared) => shared,
        }
    }

    /// The mode for requests that name none, and whether the chain is capable (`auto`).
    pub fn with_mode(self: Arc<Self>, mode: AnswerMode, capability: Capability) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut s) => {
                s.mode = mode;
                s.capability = capability;
                Arc::new(s)
            }
            Err(shared) => shared,
        }
    }

    /// The generator chain, loaded by the first call (on a blocking thread); `None` when there
    /// is no loader or it failed (logged once).
    async fn chain(&self) -> Option<Arc<Chain>> {
        self.chain
            .get_or_init(|| async {
                let load = self.load_chain.clone()?;
                match tokio::task::spawn_blocking(move || load()).await {
                    Ok(Ok(chain)) => Some(Arc::new(chain)),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the generator did not load: /v1/answer answers extractively only");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "loading the generator failed");
                        None
                    }
                }
            })
            .await
            .clone()
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
    /// extractive | generate | auto; default: the server's (`[answer] mode`).
    #[serde(default)]
    answer_mode: Option<AnswerMode>,
    #[serde(default)]
    stream: bool,
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
                "seed": {"type": "integer", "minimum": 0, "default": 42},
                "answer_mode": {"type": "string", "enum": ["extractive", "generate", "auto"], "description": "default: the server's [answer] mode"},
                "stream": {"type": "boolean", "default": false, "description": "server-sent events: draft (unchecked generated text), then answer (the reply) or error"}
            }}}}},
        "responses": {
            "200": {"description": "answer (the text shown), citations (n, chunk_id, doc_id, source, start, end, overlap, marked), mode, decision (extractive, generated, withheld, generator_failed), reason, notice, grounded (share of the decided-on answer's sentences its citations support), grounding (per sentence: similarity, support, missing words), shown_grounded, extraction, generation (the generated answer, shown or withheld, with prompt and completion), sources, latency_ms"},
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
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    validate(&req)?;
    check_len("question", &req.question, "max_question_bytes", svc.limits.max_question_bytes)?;
    // Retrieval stops at its next stage once this handler is dropped or the deadline passes.
    let (stop, _stop_on_drop) = Stop::new(std::time::Instant::now() + svc.limits.request_deadline);
    let passages = {
        let (svc, question, k, mode) = (svc.clone(), req.question.clone(), req.k, req.mode);
        tokio::task::spawn_blocking(move || -> Result<Vec<Passage>, ApiError> {
            let (_, hits) = svc.live.search(Query::new(&question, None, k, mode), &stop)?;
            Ok(hits.iter().map(passage).collect())
        })
        .await
        .map_err(ApiError::internal)??
    };
    let mode = req.answer_mode.unwrap_or(svc.mode);
    let (generate, reason) = keel_llm::plan(mode, &svc.capability);
    if generate && svc.chain().await.is_none() {
        return Err(ApiError::unavailable(format!("{reason}, but this server has no generator loaded")));
    }
    let embed = svc.encoders.get_or_load().ok().map(|_| embedder(&svc.encoders));
    let ask = Ask {
        question: req.question.clone(),
        passages,
        mode,
        capability: svc.capability.clone(),
        params: Params {
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            seed: req.seed,
            ..Params::default()
        },
        extract: ExtractOptions::default(),
        embed,
    };
    if req.stream {
        return Ok(stream::respond(move |sink| async move { run(&svc, ask, generate, sink).await }));
    }
    Ok(Json(run(&svc, ask, generate, Box::new(|_| {})).await?).into_response())
}

fn validate(req: &AnswerRequest) -> Result<(), ApiError> {
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
    Ok(())
}

/// The encoder slot as keel-llm's sentence embedder.
fn embedder(slot: &EncoderSlot) -> keel_llm::Embedder {
    let slot = slot.clone();
    Arc::new(move |texts: &[&str]| slot.get_or_load()?.embed(texts).map_err(|e| e.to_string()))
}

/// Answers `ask`, holding the generator's permit only when it generates. The reply runs in its
/// own task that holds the permit to the end: a request cut off by its deadline cannot stop a
/// generation already inside keel-llm, but it keeps the next one from starting beside it.
pub(crate) async fn run(
    svc: &AnswerService,
    ask: Ask,
    generate: bool,
    on_text: keel_llm::OnText,
) -> Result<Reply, ApiError> {
    let permit = if generate {
        Some(
            tokio::time::timeout(queue_wait(&svc.limits), svc.busy.clone().acquire_owned())
                .await
                .map_err(|_| ApiError::overloaded("the generator is busy with other answers", 5))?
                .map_err(ApiError::internal)?,
        )
    } else {
        None
    };
    let chain = if generate { svc.chain().await } else { None };
    let store = svc.store.clone();
    let replied = tokio::spawn(async move {
        let _permit = permit;
        keel_llm::reply(&store, chain, ask, on_text).await
    });
    replied.await.map_err(ApiError::internal)?.map_err(|e| match e {
        LlmError::ContextTooSmall { .. } => ApiError::unprocessable(e.to_string()),
        LlmError::AllFailed { .. } => ApiError::unavailable("every generator failed; retry shortly").with_cause(e),
        other => ApiError::internal(other),
    })
}
