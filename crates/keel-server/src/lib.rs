//! Keel's HTTP surface: the only crate that knows HTTP.
//!
//! Routes: `POST /v1/classify`, `POST /v1/embeddings` (OpenAI-compatible), `POST /v1/feedback`,
//! `GET /v1/models`, `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text format).
//!
//! Compute never runs on the async runtime: every text to embed goes through one bounded queue to
//! one batching worker that runs the encoder on a blocking thread ([`Batching`]); a full queue
//! answers 429 with `Retry-After`. When the encoder fails or misses the deadline, classify answers
//! from the model version's n-gram fallback head with `"degraded": true`. Every prediction is
//! written to the store's prediction log by a background task ([`LogOptions`]), never on the
//! request path. Every error leaves through [`ApiError`], the one place that maps failures to
//! status codes.

mod batch;
mod error;
mod log;
mod metrics;
mod routes;

use std::sync::{Arc, RwLock};

use keel_embed::Encoder;
use keel_store::{ModelVersion, Store};
use keel_train::Head;

pub use batch::Batching;
pub use error::ApiError;
pub use log::LogOptions;
pub use routes::router;

/// A registered model version, loaded and ready to answer.
#[derive(Debug)]
pub struct LoadedModel {
    pub version: ModelVersion,
    /// Reads embeddings (a calibrated logistic or MLP head).
    pub head: Head,
    /// Reads raw text (the version's n-gram baseline); answers while the encoder is failing.
    pub fallback: Option<Head>,
}

/// Limits on one request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most texts in one request.
    pub max_inputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 2 * 1024 * 1024, max_inputs: 256 }
    }
}

/// Everything [`AppState::with_options`] takes besides the encoder and the model.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub limits: Limits,
    pub batching: Batching,
    /// Where the prediction log and feedback go; `None`: predictions are not logged and
    /// `/v1/feedback` answers 503.
    pub store: Option<Store>,
    pub log: LogOptions,
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    model: RwLock<Option<Arc<LoadedModel>>>,
    limits: Limits,
    metrics: Arc<metrics::Metrics>,
    batcher: batch::Batcher,
    log: Option<log::PredictionLog>,
}

impl AppState {
    /// State for a server without a prediction log; `model` may be `None` to serve embeddings
    /// only. Starts the encoder worker, so call it inside a Tokio runtime.
    pub fn new(encoder: Arc<Encoder>, model: Option<LoadedModel>, limits: Limits) -> Arc<Self> {
        Self::with_options(encoder, model, Options { limits, ..Options::default() })
    }

    /// State for a server; starts the encoder worker and, with a store, the prediction log
    /// writer. Call it inside a Tokio runtime; the tasks stop when the state is dropped.
    pub fn with_options(encoder: Arc<Encoder>, model: Option<LoadedModel>, options: Options) -> Arc<Self> {
        let metrics = Arc::new(metrics::Metrics::new(encoder.id()));
        if let Some(m) = &model {
            metrics.set_model(&m.version.tag());
        }
        let batcher = batch::Batcher::start(encoder, options.batching, metrics.clone());
        let log = options.store.map(|store| log::PredictionLog::start(store, options.log, metrics.clone()));
        Arc::new(Self { model: RwLock::new(model.map(Arc::new)), limits: options.limits, metrics, batcher, log })
    }

    /// Swaps the model that answers `/v1/classify`. Requests in flight finish on the old one.
    pub fn set_model(&self, model: LoadedModel) {
        self.metrics.set_model(&model.version.tag());
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(model));
    }

    pub fn model(&self) -> Option<Arc<LoadedModel>> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The encoder the next batch will run on.
    pub fn encoder(&self) -> Arc<Encoder> {
        self.batcher.health().encoder()
    }

    /// Swaps the encoder; the batch being computed finishes on the old one. For operators'
    /// drills and tests (load a failing encoder, then the good one back); no route calls it.
    /// The degraded flag is left alone: the next encoder call sets or clears it.
    pub fn set_encoder(&self, encoder: Arc<Encoder>) {
        self.batcher.health().set_encoder(encoder);
    }

    /// `Some(cause)` while the encoder is failing (its last call failed or missed the deadline).
    pub fn degraded(&self) -> Option<String> {
        self.batcher.health().degraded()
    }

    /// Waits until every prediction answered so far is written to the prediction log. Call it
    /// after the server has stopped accepting requests, before exiting.
    pub async fn flush_log(&self) {
        if let Some(log) = &self.log {
            log.flush().await;
        }
    }
}

/// Serves until `shutdown` completes and the requests in flight are answered, then flushes the
/// prediction log.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router(state.clone())).with_graceful_shutdown(shutdown).await;
    state.flush_log().await;
    served
}
