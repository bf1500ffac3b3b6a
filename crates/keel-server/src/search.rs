//! `POST /v1/search` over a keel-index folder: `{"query": "...", "k": 10, "mode":
//! "hybrid|dense|bm25", "filter": {"field": "value"}, "rrf_k": 60}` → `{"mode": ..., "hits":
//! [...]}`, each hit with its chunk id, document id, source, char offsets, text and score.
//!
//! The query is embedded ([`crate::query_vector`]) and the index searched on a blocking thread,
//! never on the runtime, after admission control ([`crate::Admission`]): a bounded number of
//! searches run at once, a bounded number wait (for a third of the request deadline at most),
//! the rest are answered 429 with `Retry-After`. The index is reopened when `keel index` has made a new generation
//! current, so a running server serves the latest index without a restart; a generation built
//! with another encoder than the server's answers dense and hybrid queries with a 503 naming
//! both (BM25 still answers).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::routing::post;
use axum::{Json, Router};
use keel_index::{Filter, Hit, Index, IndexError, Mode, Query};
use serde::{Deserialize, Serialize};

use serde_json::json;

use crate::admission::Gate;
use crate::{Admission, ApiError, EncoderSlot, Extension, Limits, check_len, query_vector};

/// Most hits one request may ask for.
pub const MAX_K: usize = 100;

/// Tells work on a blocking thread that its request is gone: the request future was dropped (the
/// deadline cut it off, or the client left) or the deadline passed. The work checks it between
/// stages (open the index, embed the query, search) and stops at the first check after.
#[derive(Clone, Debug)]
pub(crate) struct Stop {
    gone: Arc<AtomicBool>,
    deadline: Instant,
}

/// Trips its [`Stop`] when dropped; the request's future holds it.
pub(crate) struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Stop {
    /// A stop for work that must end by `deadline` or when the guard is dropped.
    pub(crate) fn new(deadline: Instant) -> (Self, StopOnDrop) {
        let gone = Arc::new(AtomicBool::new(false));
        (Self { gone: gone.clone(), deadline }, StopOnDrop(gone))
    }

    /// `Err` (a 503 no one may read) once the request is gone.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        if self.gone.load(Ordering::Acquire) || Instant::now() >= self.deadline {
            return Err(ApiError::deadline("the request was cut off before its search finished", 1));
        }
        Ok(())
    }
}

/// An index folder kept open, and the encoder its queries are embedded with: the state
/// `/v1/search` and `/v1/answer` share.
#[derive(Debug)]
pub(crate) struct LiveIndex {
    pub(crate) dir: PathBuf,
    index: RwLock<Arc<Index>>,
    encoders: EncoderSlot,
}

impl LiveIndex {
    /// Opens the current generation in `dir`. Each dense or hybrid query checks that the
    /// generation it searches was built with the slot's encoder.
    pub(crate) fn open(dir: &Path, encoders: EncoderSlot) -> Result<Self, IndexError> {
        let index = Index::open(dir)?;
        Ok(Self { dir: dir.to_path_buf(), index: RwLock::new(Arc::new(index)), encoders })
    }

    /// The current generation, searched with `query` (embedded for dense and hybrid modes),
    /// unless `stop` trips between the stages. Blocks: call it on a blocking thread.
    pub(crate) fn search(&self, q: Query<'_>, stop: &Stop) -> Result<(Arc<Index>, Vec<Hit>), ApiError> {
        stop.check()?;
        let index = self.current().map_err(|e| ApiError::unavailable("the index cannot be read").with_cause(e))?;
        stop.check()?;
        let vector = query_vector(&index, q.text, q.mode, &self.encoders)?;
        stop.check()?;
        let hits = index.search(&Query { vector: vector.as_deref(), ..q }).map_err(|e| match e {
            IndexError::Invalid(m) => ApiError::unprocessable(m),
            other => ApiError::internal(other),
        })?;
        Ok((index, hits))
    }

    /// The index to answer with: the open one, or the new generation if one became current.
    pub(crate) fn current(&self) -> Result<Arc<Index>, IndexError> {
        let open = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        if keel_index::current_generation(&self.dir)? == Some(open.generation()) {
            return Ok(open);
        }
        let fresh = Arc::new(Index::open(&self.dir)?);
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }
}

/// An index folder and the encoder its queries are embedded with.
#[derive(Debug)]
pub struct SearchService {
    live: LiveIndex,
    limits: Limits,
    admission: Admission,
    gate: Gate,
    /// Searches stopped part-way because their request was gone.
    stopped: AtomicU64,
}

/// How long a search waits for its turn: a third of the request deadline.
fn queue_wait(limits: &Limits) -> std::time::Duration {
    limits.request_deadline / 3
}

impl SearchService {
    /// Opens the current generation in `dir`. `encoder` (an `Arc` of an [`crate::Embed`]
    /// implementation or a server's [`EncoderSlot`]) embeds dense and hybrid queries; it must be
    /// the one the generation searched was built with, or those queries answer 503.
    pub fn open(dir: &Path, encoder: impl Into<EncoderSlot>) -> Result<Arc<Self>, IndexError> {
        let (limits, admission) = (Limits::default(), Admission::default());
        let gate = Gate::new(admission.clone(), queue_wait(&limits));
        let live = LiveIndex::open(dir, encoder.into())?;
        Ok(Arc::new(Self { live, limits, admission, gate, stopped: AtomicU64::new(0) }))
    }

    /// Searches stopped part-way because their request was gone (cut off by the deadline, or
    /// the client left): their remaining stages did not run.
    pub fn stopped(&self) -> u64 {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The server's request limits (`max_query_bytes`, the deadline a search waits a third of)
    /// instead of the defaults.
    pub fn with_limits(self: Arc<Self>, limits: Limits) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(s) => {
                let gate = Gate::new(s.admission.clone(), queue_wait(&limits));
                Arc::new(Self { limits, gate, ..s })
            }
            Err(shared) => shared,
        }
    }

    /// How many searches run at once and wait (default: one per core, 32 waiting).
    pub fn with_admission(self: Arc<Self>, admission: Admission) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(s) => {
                let gate = Gate::new(admission.clone(), queue_wait(&s.limits));
                Arc::new(Self { admission, gate, ..s })
            }
            Err(shared) => shared,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    filter: BTreeMap<String, String>,
    rrf_k: Option<f32>,
}

fn default_k() -> usize {
    10
}

#[derive(Debug, Serialize)]
struct SearchResponse {
    mode: Mode,
    generation: u64,
    hits: Vec<Hit>,
}

/// The `/v1/search` route with its own state (for tests and custom apps).
pub fn search_routes(service: Arc<SearchService>) -> Router {
    Router::new().route("/v1/search", post(search)).with_state(service)
}

/// `/v1/search` as an [`Extension`] for [`crate::router_with`]: the route and its OpenAPI entry.
pub fn search_extension(service: Arc<SearchService>) -> Extension {
    let item = json!({"post": {
        "summary": "Search the document index: dense, BM25 or hybrid (reciprocal-rank fusion, k = 60 by default)",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["query"], "additionalProperties": false,
            "properties": {
                "query": {"type": "string"},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
                "mode": {"type": "string", "enum": ["hybrid", "dense", "bm25"], "default": "hybrid"},
                "filter": {"type": "object", "additionalProperties": {"type": "string"}},
                "rrf_k": {"type": "number", "minimum": 0, "default": keel_index::DEFAULT_RRF_K}
            }}}}},
        "responses": {
            "200": {"description": "hits, best first: chunk_id, doc_id, chunk, source, start_char, end_char, text, score, dense_rank, bm25_rank, metadata"},
            "413": {"description": "the query is longer than the configured limit"},
            "422": {"description": "invalid request"},
            "429": {"description": "too many searches at once; retry after the given seconds"},
            "503": {"description": "encoder or index unavailable"}
        }
    }});
    let mut openapi_paths = serde_json::Map::new();
    openapi_paths.insert("/v1/search".into(), item);
    Extension { routes: search_routes(service), openapi_paths }
}

async fn search(
    State(svc): State<Arc<SearchService>>,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Json(req) = body?;
    if req.query.trim().is_empty() {
        return Err(ApiError::unprocessable("query is empty"));
    }
    check_len("query", &req.query, "max_query_bytes", svc.limits.max_query_bytes)?;
    if !(1..=MAX_K).contains(&req.k) {
        return Err(ApiError::unprocessable(format!("k must be in 1..={MAX_K}")));
    }
    if req.rrf_k.is_some_and(|k| !(k.is_finite() && k >= 0.0)) {
        return Err(ApiError::unprocessable("rrf_k must be a non-negative number"));
    }
    let permit = svc.gate.enter("search").await?;
    // The work stops at its next stage once this handler is dropped or the deadline passes.
    let (stop, _stop_on_drop) = Stop::new(Instant::now() + svc.limits.request_deadline);
    let resp = tokio::task::spawn_blocking(move || -> Result<SearchResponse, ApiError> {
        // Held until the work is done, even if the request has been cut off meanwhile.
        let _permit = permit;
        let mut q = Query::new(&req.query, None, req.k, req.mode).with_filter(Filter(req.filter.into_iter().collect()));
        if let Some(k) = req.rrf_k {
            q.rrf_k = k;
        }
        let (index, hits) = svc.live.search(q, &stop).inspect_err(|e| {
            if e.kind == "deadline_exceeded" {
                svc.stopped.fetch_add(1, Ordering::Relaxed);
                tracing::info!("a search stopped part-way: its request is gone");
            }
        })?;
        Ok(SearchResponse { mode: req.mode, generation: index.generation(), hits })
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(resp))
}
