//! Keel's HTTP surface: the only crate that knows HTTP.
//!
//! Routes: `POST /v1/classify`, `POST /v1/embeddings` (OpenAI-compatible), `GET /v1/models`,
//! `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text format).
//!
//! Compute never runs on the async runtime: encoder calls go to tokio's blocking pool.
//! Every error leaves through [`ApiError`], the one place that maps failures to status codes.

mod error;
mod metrics;
mod routes;

use std::sync::{Arc, RwLock};

use keel_embed::Encoder;
use keel_store::ModelVersion;
use keel_train::LogisticRegression;

pub use error::ApiError;
pub use routes::router;

/// A registered model version, loaded and ready to answer.
#[derive(Debug)]
pub struct LoadedModel {
    pub version: ModelVersion,
    pub head: LogisticRegression,
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

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    encoder: Arc<Encoder>,
    model: RwLock<Option<Arc<LoadedModel>>>,
    limits: Limits,
    metrics: metrics::Metrics,
}

impl AppState {
    /// State for a server; `model` may be `None` to serve embeddings only.
    pub fn new(encoder: Arc<Encoder>, model: Option<LoadedModel>, limits: Limits) -> Arc<Self> {
        let metrics = metrics::Metrics::new(encoder.id());
        if let Some(m) = &model {
            metrics.set_model(&m.version.tag());
        }
        Arc::new(Self { encoder, model: RwLock::new(model.map(Arc::new)), limits, metrics })
    }

    /// Swaps the model that answers `/v1/classify`. Requests in flight finish on the old one.
    pub fn set_model(&self, model: LoadedModel) {
        self.metrics.set_model(&model.version.tag());
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(model));
    }

    pub fn model(&self) -> Option<Arc<LoadedModel>> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
