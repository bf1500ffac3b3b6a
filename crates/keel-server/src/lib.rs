//! Keel's HTTP surface: the only crate that knows HTTP.
//!
//! Routes: `POST /v1/classify`, `POST /v1/embeddings` (OpenAI-compatible), `POST /v1/feedback`,
//! `GET /v1/models`, `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text format),
//! `GET /openapi.json`, and the admin routes `POST /v1/admin/{promote,rollback,reload}` (bearer
//! token; disabled without one). Other features add routes with [`router_with`].
//!
//! The encoder is reached through the [`Embed`] trait, held in an [`EncoderSlot`] (loaded at
//! start, on first need, or never). A version whose head reads raw text (the n-gram or sparse
//! TF-IDF model) is answered from the request's text without the encoder. For a head that reads
//! embeddings, compute never runs on the async runtime: every text to embed goes through one
//! bounded queue to one batching worker that runs the encoder on a blocking thread
//! ([`Batching`]); a full queue answers 429 with `Retry-After`. When the encoder fails, misses the
//! deadline or has its circuit breaker open, classify answers from the model version's n-gram
//! fallback head with `"degraded": true`. The server follows the registry and swaps models atomically
//! ([`Rollout`]), with canary and shadow challengers. Every prediction is written to the store's
//! prediction log by a background task ([`LogOptions`]), never on the request path; a full
//! buffer spills to a local file. Every error leaves through [`ApiError`], the one place that
//! maps failures to status codes.

mod admin;
mod admission;
mod answer;
mod batch;
mod classify;
mod embed;
mod error;
mod hosts;
mod log;
mod metrics;
mod openapi;
mod query;
mod request_id;
mod rollout;
mod routes;
mod search;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use keel_store::{ModelVersion, Store};
use keel_train::{Head, InputKind};

pub use admission::Admission;
pub use answer::{AnswerService, LoadChain, answer_extension, answer_routes};
pub use batch::Batching;
pub use embed::{BoxError, Embed, EncoderSlot, LoadEncoder};
pub use error::ApiError;
pub use log::LogOptions;
pub use query::{QueryError, passage, query_vector};
pub use rollout::{Challenger, ChallengerMode, Rollout, load_model};
pub use routes::{Extension, router, router_with};
pub use search::{SearchService, search_extension, search_routes};

/// A registered model version, loaded and ready to answer.
#[derive(Debug)]
pub struct LoadedModel {
    pub version: ModelVersion,
    /// The version's model: it reads embeddings (a calibrated logistic or MLP head) or raw text
    /// (the n-gram or sparse TF-IDF model, perhaps calibrated).
    pub head: Head,
    /// Reads raw text (the version's n-gram baseline); answers while the encoder is failing.
    pub fallback: Option<Head>,
    /// The version's own encoder when it was trained on a fine-tuned one; `None`: the server's.
    pub encoder: Option<Arc<dyn Embed>>,
}

impl LoadedModel {
    /// Whether answering needs the encoder: a head reading embeddings (alone or beside text).
    pub fn needs_encoder(&self) -> bool {
        matches!(self.head.input_kind(), InputKind::Embedding { .. } | InputKind::TextAndEmbedding { .. })
    }

    /// Whether `self` and `other` read the same embeddings (so one's vectors serve the other).
    pub(crate) fn same_encoder(&self, other: &LoadedModel) -> bool {
        self.version.encoder_id == other.version.encoder_id
    }

    /// What `keel_model_info` names as the encoder this version reads (`none` for text heads).
    fn encoder_label(&self) -> String {
        if self.needs_encoder() { self.version.encoder_id.clone() } else { "none".into() }
    }
}

/// Limits on one request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most texts in one request (413 beyond).
    pub max_inputs: usize,
    /// Longest single classify or embedding text, in bytes (413 beyond).
    pub max_text_bytes: usize,
    /// Longest `/v1/search` query, in bytes (413 beyond).
    pub max_query_bytes: usize,
    /// Longest `/v1/answer` question, in bytes (413 beyond).
    pub max_question_bytes: usize,
    /// Longest `/v1/feedback` label, in bytes (413 beyond).
    pub max_label_bytes: usize,
    /// Longest a request may take, queueing included; past it the server answers 503
    /// `deadline_exceeded`. Keep it above [`Batching::deadline`] so classify can still answer
    /// from the fallback head when the encoder is slow.
    pub request_deadline: Duration,
}

impl Limits {
    /// Refuses an empty request (422), one with more than `max_inputs` texts and one with a
    /// text longer than `max_text_bytes` (413, naming the limit). `field` is the request's name
    /// for the texts (`inputs`, `input`).
    pub(crate) fn check_texts(&self, field: &str, texts: &[String]) -> Result<(), ApiError> {
        let n = texts.len();
        if n == 0 {
            return Err(ApiError::unprocessable(format!("{field} is empty: send at least one text")));
        }
        if n > self.max_inputs {
            return Err(ApiError::over_limit(
                "max_inputs",
                self.max_inputs,
                format!("{n} texts in one request; the limit max_inputs is {}", self.max_inputs),
            ));
        }
        for (i, t) in texts.iter().enumerate() {
            check_len(&format!("{field}[{i}]"), t, "max_text_bytes", self.max_text_bytes)?;
        }
        Ok(())
    }
}

/// 413 when `value` (the request's `field`) is longer than the limit `name`, `max` bytes.
pub(crate) fn check_len(field: &str, value: &str, name: &'static str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::over_limit(
            name,
            max,
            format!("{field} is {} bytes; the limit {name} is {max}", value.len()),
        ));
    }
    Ok(())
}

/// The header naming the model version that answered (classify) or the encoder (embeddings).
pub(crate) const MODEL_HEADER: &str = "x-keel-model";

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_inputs: 256,
            max_text_bytes: 64 * 1024,
            max_query_bytes: 4 * 1024,
            max_question_bytes: 4 * 1024,
            max_label_bytes: 256,
            request_deadline: Duration::from_secs(30),
        }
    }
}

/// Everything [`AppState::with_options`] takes besides the encoder and the model.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub limits: Limits,
    pub batching: Batching,
    /// Where the prediction log, feedback and the registry are; `None`: predictions are not
    /// logged, `/v1/feedback` answers 503 and the server follows no registry.
    pub store: Option<Store>,
    pub log: LogOptions,
    pub rollout: Rollout,
    /// Bearer token for the admin routes; `None` disables them (404).
    pub admin_token: Option<String>,
    /// Host names (`name`, `name:port`, `[v6]`) requests may be addressed to besides the loopback
    /// names, which are always allowed; `*` allows any. Other `Host` headers get 403 (a guard
    /// against DNS rebinding). `keel serve` adds its bind address and every `--allow-host`.
    pub allowed_hosts: Vec<String>,
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    model: RwLock<Option<Arc<LoadedModel>>>,
    challenger: RwLock<Option<Arc<LoadedModel>>>,
    limits: Limits,
    metrics: Arc<metrics::Metrics>,
    batcher: batch::Batcher,
    log: Option<log::PredictionLog>,
    store: Option<Store>,
    rollout: Rollout,
    admin_token: Option<String>,
    allowed_hosts: hosts::AllowedHosts,
    canary_counter: AtomicU64,
    reload: Arc<tokio::sync::Notify>,
    sync_lock: tokio::sync::Mutex<()>,
    last_sync_error: Mutex<Option<String>>,
}

/// Which model answers one classify request.
pub(crate) struct Pick {
    pub model: Arc<LoadedModel>,
    pub role: &'static str,
    /// Scores the request in the shadow, never answers.
    pub shadow: Option<Arc<LoadedModel>>,
}

impl AppState {
    /// State for a server without a prediction log; `model` may be `None` to serve embeddings
    /// only. `encoder` is an `Arc` of an [`Embed`] implementation or an [`EncoderSlot`]. Starts
    /// the encoder worker, so call it inside a Tokio runtime.
    pub fn new(encoder: impl Into<EncoderSlot>, model: Option<LoadedModel>, limits: Limits) -> Arc<Self> {
        Self::with_options(encoder, model, Options { limits, ..Options::default() })
    }

    /// State for a server; starts the encoder worker, with a store the prediction log writer,
    /// and with a followed spec or a challenger the registry follower. Call it inside a Tokio
    /// runtime; the tasks stop when the state is dropped. The challenger is loaded by the first
    /// [`AppState::reload`] (the follower runs one within `poll_interval`).
    pub fn with_options(encoder: impl Into<EncoderSlot>, model: Option<LoadedModel>, options: Options) -> Arc<Self> {
        let metrics = Arc::new(metrics::Metrics::new());
        let batcher = batch::Batcher::start(encoder.into(), options.batching, metrics.clone());
        let log = options.store.clone().map(|store| log::PredictionLog::start(store, options.log, metrics.clone()));
        let follows = options.store.is_some()
            && (options.rollout.follow.as_deref().is_some_and(|s| !rollout::is_pinned(s))
                || options.rollout.challenger.is_some());
        let state = Arc::new(Self {
            model: RwLock::new(model.map(Arc::new)),
            challenger: RwLock::new(None),
            limits: options.limits,
            metrics,
            batcher,
            log,
            store: options.store,
            rollout: options.rollout,
            admin_token: options.admin_token.filter(|t| !t.is_empty()),
            allowed_hosts: hosts::AllowedHosts::new(&options.allowed_hosts),
            canary_counter: AtomicU64::new(0),
            reload: Arc::new(tokio::sync::Notify::new()),
            sync_lock: tokio::sync::Mutex::new(()),
            last_sync_error: Mutex::new(None),
        });
        state.publish_models();
        if follows {
            tokio::spawn(follow(Arc::downgrade(&state), state.reload.clone(), state.rollout.poll_interval));
        }
        state
    }

    /// Swaps the model that answers `/v1/classify`, atomically: requests in flight finish on the
    /// old one, the next ones get the new one.
    pub fn set_model(&self, model: LoadedModel) {
        let tag = model.version.tag();
        let old = self.model.write().unwrap_or_else(|e| e.into_inner()).replace(Arc::new(model));
        if old.is_some_and(|o| o.version.tag() != tag) {
            self.metrics.model_swaps.inc();
            tracing::info!(model = %tag, "now serving");
        }
        self.publish_models();
    }

    /// The model answering `/v1/classify` (the primary).
    pub fn model(&self) -> Option<Arc<LoadedModel>> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The challenger (canary or shadow), when one is configured and loaded.
    pub fn challenger(&self) -> Option<Arc<LoadedModel>> {
        self.challenger.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_challenger(&self, model: Option<LoadedModel>) {
        *self.challenger.write().unwrap_or_else(|e| e.into_inner()) = model.map(Arc::new);
        self.publish_models();
    }

    fn publish_models(&self) {
        let info = |m: &LoadedModel, role: &str| metrics::ModelInfo {
            model: m.version.tag(),
            encoder: m.encoder_label(),
            role: role.to_owned(),
        };
        let mut models = Vec::new();
        if let Some(m) = self.model() {
            models.push(info(&m, "primary"));
        }
        if let (Some(c), Some(ch)) = (self.challenger(), &self.rollout.challenger) {
            models.push(info(&c, ch.mode.role()));
        }
        self.metrics.set_models(&models);
    }

    /// Picks the model for one classify request: the canary for its share of requests (by a
    /// counter, so the share is exact), otherwise the primary, with the shadow alongside.
    pub(crate) fn pick(&self) -> Option<Pick> {
        let primary = self.model()?;
        let (Some(challenger), Some(cfg)) = (self.challenger(), &self.rollout.challenger) else {
            return Some(Pick { model: primary, role: "primary", shadow: None });
        };
        match cfg.mode {
            ChallengerMode::Canary { share } => {
                let n = self.canary_counter.fetch_add(1, Ordering::Relaxed) as f64;
                let share = share.clamp(0.0, 1.0);
                if ((n + 1.0) * share).floor() > (n * share).floor() {
                    Some(Pick { model: challenger, role: "canary", shadow: None })
                } else {
                    Some(Pick { model: primary, role: "primary", shadow: None })
                }
            }
            ChallengerMode::Shadow => Some(Pick { model: primary, role: "primary", shadow: Some(challenger) }),
        }
    }

    /// Looks at the registry now and swaps in whatever the followed specs point at. Returns
    /// whether anything changed and what could not be loaded.
    pub async fn reload(&self) -> (bool, Vec<String>) {
        let s = self.sync().await;
        (s.changed, s.errors)
    }

    /// Asks the follower to look at the registry now, without waiting for it.
    pub fn request_reload(&self) {
        self.reload.notify_one();
    }

    async fn sync(&self) -> rollout::Synced {
        let _one_at_a_time = self.sync_lock.lock().await;
        let mut out = rollout::Synced::default();
        let Some(store) = &self.store else { return out };
        let encoders = self.encoder_slot();
        if let Some(spec) = self.rollout.follow.as_deref().filter(|s| !rollout::is_pinned(s)) {
            match rollout::resolve_change(store, spec, self.model().as_ref(), encoders).await {
                Ok(Some(m)) => {
                    self.set_model(m);
                    out.changed = true;
                }
                Ok(None) => {}
                Err(e) => out.errors.push(format!("{spec}: {e}")),
            }
        }
        if let Some(cfg) = &self.rollout.challenger {
            let current = self.challenger();
            match rollout::resolve_change(store, &cfg.spec, current.as_ref(), encoders).await {
                Ok(Some(m)) => {
                    tracing::info!(model = %m.version.tag(), role = cfg.mode.role(), "challenger loaded");
                    self.set_challenger(Some(m));
                    out.changed = true;
                }
                Ok(None) => {}
                // The challenger's alias is not set (yet, or any more): no challenger.
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                    if current.is_some() {
                        self.set_challenger(None);
                        out.changed = true;
                    }
                }
                Err(e) => out.errors.push(format!("{}: {e}", cfg.spec)),
            }
        }
        let joined = (!out.errors.is_empty()).then(|| out.errors.join("; "));
        let mut last = self.last_sync_error.lock().unwrap_or_else(|e| e.into_inner());
        if joined.is_some() && *last != joined {
            self.metrics.model_reload_failures.inc();
            tracing::error!(
                error = joined.as_deref().unwrap_or(""),
                "cannot follow the registry; the old model keeps serving"
            );
        }
        *last = joined;
        out
    }

    /// The encoder the next batch will run on, if it is loaded (this never loads it).
    pub fn encoder(&self) -> Option<Arc<dyn Embed>> {
        self.encoder_slot().get()
    }

    /// The server's encoder slot, to share with the document routes
    /// ([`SearchService::open`], [`AnswerService::open`]) so the encoder loads once.
    pub fn encoder_slot(&self) -> &EncoderSlot {
        self.batcher.health().encoder()
    }

    /// Swaps the encoder; the batch being computed finishes on the old one. For operators'
    /// drills and tests (load a failing encoder, then the good one back); no route calls it.
    /// The degraded flag is left alone: the next encoder call sets or clears it.
    pub fn set_encoder(&self, encoder: Arc<dyn Embed>) {
        self.encoder_slot().set(encoder);
    }

    /// `Some(cause)` while the encoder is failing (its last call failed or missed the deadline).
    pub fn degraded(&self) -> Option<String> {
        self.batcher.health().degraded()
    }

    /// Embeds texts through the server's encoder queue (batching, admission control, deadline,
    /// circuit breaker), for routes other features add with [`router_with`].
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ApiError> {
        self.batcher.encode(texts).await.map(|e| e.vectors).map_err(|e| self.batcher.api_error(e))
    }

    /// The store the server was started with, if any.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Adds a metric to the server's Prometheus registry (served at `/metrics`; the name gets the
    /// `keel_` prefix). For other parts of Keel, such as drift gauges.
    pub fn register_metric(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.metrics.register(name, help, metric);
    }

    /// Waits until every prediction answered so far is written to the prediction log. Call it
    /// after the server has stopped accepting requests, before exiting.
    pub async fn flush_log(&self) {
        if let Some(log) = &self.log {
            log.flush().await;
        }
    }
}

/// The registry follower: holds the state only while it looks, so dropping the state stops it.
async fn follow(state: Weak<AppState>, reload: Arc<tokio::sync::Notify>, every: Duration) {
    // The first look loads the challenger.
    let mut wait = false;
    loop {
        if wait {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = reload.notified() => {}
            }
        }
        wait = true;
        let Some(s) = state.upgrade() else { return };
        s.sync().await;
    }
}

/// Serves [`router`] until `shutdown` completes and the requests in flight are answered, then
/// flushes the prediction log.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(state.clone(), router(state), listener, shutdown).await
}

/// Serves `app` (a [`router_with`] result) like [`serve`].
pub async fn serve_app(
    state: Arc<AppState>,
    app: axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    state.flush_log().await;
    served
}
