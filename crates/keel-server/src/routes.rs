use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use keel_store::StoreError;
use keel_train::Head;
use serde::Deserialize;
use serde_json::json;

use crate::batch::Encoded;
use crate::classify::classify;
use crate::metrics::{Route, RouteStatus};
use crate::{ApiError, AppState, Embed, LoadedModel, MODEL_HEADER};

type Shared = State<Arc<AppState>>;

/// Routes another part of Keel adds to the server (`/v1/search`, `/v1/answer`), with their
/// OpenAPI path items so `/openapi.json` lists them too.
#[derive(Default)]
pub struct Extension {
    /// A router with its own state already applied (`Router::new().route(..).with_state(..)`).
    pub routes: Router,
    /// OpenAPI path items by path: `{"/v1/search": {"post": {...}}}`.
    pub openapi_paths: serde_json::Map<String, serde_json::Value>,
}

impl Extension {
    /// Both extensions' routes and OpenAPI entries (their paths must differ).
    pub fn merge(mut self, other: Extension) -> Extension {
        self.openapi_paths.extend(other.openapi_paths);
        Extension { routes: self.routes.merge(other.routes), openapi_paths: self.openapi_paths }
    }
}

/// The application, ready to serve or to be called in tests with `oneshot`.
pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, Extension::default())
}

/// The application with `extra` routes merged in; they get the same body limit, deadline,
/// metrics and JSON 404 as the server's own routes.
pub fn router_with(state: Arc<AppState>, extra: Extension) -> Router {
    let limit = state.limits.max_body_bytes;
    let doc = Arc::new(crate::openapi::document(&extra.openapi_paths));
    let own: Router = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/feedback", post(feedback))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::admin::routes())
        .with_state(state.clone());
    own.route(
        "/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        }),
    )
    .merge(extra.routes)
    .method_not_allowed_fallback(|| async {
        ApiError::method_not_allowed("this route does not take that method; see GET /openapi.json")
    })
    .fallback(|| async {
        ApiError::not_found(
            "no such route; see GET /openapi.json (POST /v1/classify, POST /v1/embeddings, GET /v1/models, ...)",
        )
    })
    .layer(DefaultBodyLimit::max(limit))
    .layer(middleware::from_fn_with_state(state.clone(), crate::hosts::check))
    .layer(middleware::from_fn_with_state(state, observe))
}

/// Decrements the in-flight gauge however the request ends.
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Gives every request its id (`x-request-id`), counts it by route and status, times it, and
/// cuts it off at the deadline.
async fn observe(State(state): Shared, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let start = Instant::now();
    let m = &state.metrics;
    m.in_flight.inc();
    let _in_flight = InFlight(&m.in_flight);
    let deadline = state.limits.request_deadline;
    let id = crate::request_id::of(req.headers());
    let answered = crate::request_id::scope(Some(id.clone()), async {
        match tokio::time::timeout(deadline, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                m.deadline_exceeded.inc();
                ApiError::deadline(
                    format!("the request took longer than the {deadline:?} deadline; retry shortly"),
                    state.batcher.config().retry_after_secs,
                )
                .into_response()
            }
        }
    });
    let mut response = answered.await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(crate::request_id::HEADER, v);
    }
    m.latency.get_or_create(&Route { route: route.clone() }).observe(start.elapsed().as_secs_f64());
    m.requests.get_or_create(&RouteStatus { route, status: response.status().as_u16() }).inc();
    response
}

async fn readyz(State(state): Shared) -> Result<Json<serde_json::Value>, ApiError> {
    let model = state
        .model()
        .ok_or_else(|| ApiError::not_ready("no model is loaded; /v1/embeddings works, /v1/classify does not"))?;
    let encoder = state.encoder().map(|e| e.id().to_owned());
    // A head that reads text answers whatever the encoder does.
    let degraded = if model.needs_encoder() { state.degraded() } else { None };
    match degraded {
        None => {
            Ok(Json(json!({"status": "ready", "degraded": false, "model": model.version.tag(), "encoder": encoder})))
        }
        Some(cause) if model.fallback.is_some() => Ok(Json(json!({
            "status": "degraded", "degraded": true, "cause": cause, "model": model.version.tag(), "encoder": encoder,
        }))),
        Some(cause) => {
            Err(ApiError::not_ready(format!("the encoder is failing and {} has no fallback head", model.version.tag()))
                .with_cause(cause))
        }
    }
}

/// Prometheus text 0.0.4, or OpenMetrics 1.0 for a scraper that asks for it.
async fn metrics(State(state): Shared, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            state.metrics.render_openmetrics(),
        )
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render_prometheus())
    }
}

async fn models(State(state): Shared) -> Json<serde_json::Value> {
    // The encoder is listed once it is loaded (a server whose versions read text may have none).
    let mut data: Vec<serde_json::Value> = state
        .encoder()
        .map(|e| json!({"id": e.id(), "object": "model", "owned_by": "keel", "kind": "encoder", "dim": e.dim()}))
        .into_iter()
        .collect();
    let challenger_role = state.rollout.challenger.as_ref().map(|c| c.mode.role());
    let served = [state.model().map(|m| (m, "primary")), state.challenger().zip(challenger_role)];
    for (m, role) in served.into_iter().flatten() {
        data.push(json!({
            "id": m.version.tag(), "object": "model", "owned_by": "keel", "kind": "classifier", "role": role,
            "labels": m.head.labels(), "metrics": m.version.metrics, "aliases": m.version.aliases,
            "fallback": m.fallback.as_ref().map(Head::kind),
            "reads": if m.needs_encoder() { "embeddings" } else { "text" },
        }));
    }
    Json(json!({"object": "list", "data": data}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    #[serde(alias = "id")]
    prediction_id: String,
    label: String,
}

/// Attaches a true label to a logged prediction.
async fn feedback(
    State(state): Shared,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body?;
    if req.label.trim().is_empty() {
        return Err(ApiError::unprocessable("label is empty"));
    }
    crate::check_len("label", &req.label, "max_label_bytes", state.limits.max_label_bytes)?;
    let log = state
        .log
        .as_ref()
        .ok_or_else(|| ApiError::not_ready("this server keeps no prediction log, so it takes no feedback"))?;
    let store = log.store();
    let mut result = store.add_feedback(&req.prediction_id, &req.label).await;
    if matches!(result, Err(StoreError::NotFound(_))) {
        // The prediction may still be waiting in the log buffer: write it, then try again.
        log.flush().await;
        result = store.add_feedback(&req.prediction_id, &req.label).await;
    }
    result?;
    Ok(Json(json!({"prediction_id": req.prediction_id, "label": req.label})))
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    /// OpenAI's `input`: a string, or an array of strings. Token-id arrays are refused.
    input: serde_json::Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// Keel's own: a served version whose encoder embeds (default: the configured base one).
    #[serde(default)]
    version: Option<String>,
}

/// The encoder a loaded version reads, for `version` = `NAME@N` or `NAME@ALIAS`: its own when
/// it was trained on a fine-tuned encoder, else `None` (the server's).
fn version_encoder(state: &AppState, version: &str) -> Result<Option<Arc<dyn Embed>>, ApiError> {
    let loaded = [state.model(), state.challenger()];
    let matches = |m: &LoadedModel| {
        m.version.tag() == version
            || version
                .split_once('@')
                .is_some_and(|(name, alias)| name == m.version.name && m.version.aliases.iter().any(|a| a == alias))
    };
    match loaded.iter().flatten().find(|m| matches(m)) {
        Some(m) => Ok(m.encoder.clone()),
        None => {
            let served: Vec<String> = loaded.iter().flatten().map(|m| m.version.tag()).collect();
            Err(ApiError::not_found(format!(
                "version {version:?} is not loaded by this server (it serves: {}); omit \"version\" for the base encoder",
                if served.is_empty() { "none".to_owned() } else { served.join(", ") }
            )))
        }
    }
}

async fn embeddings(
    State(state): Shared,
    body: Result<Json<EmbeddingsRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let texts: Vec<String> = match req.input {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_string) => items
            .into_iter()
            .filter_map(|v| if let serde_json::Value::String(s) = v { Some(s) } else { None })
            .collect(),
        _ => {
            return Err(ApiError::unprocessable(
                "input must be a string or an array of strings; token ids are not accepted",
            ));
        }
    };
    state.limits.check_texts("input", &texts)?;
    let own = match &req.version {
        Some(v) => version_encoder(&state, v)?,
        None => None,
    };
    let encoder = match own.clone() {
        Some(e) => e,
        None => state.encoder_slot().load().await.map_err(|e| {
            ApiError::unavailable("/v1/embeddings needs an encoder, and it cannot be loaded").with_cause(e)
        })?,
    };
    if let Some(d) = req.dimensions.filter(|&d| d != encoder.dim()) {
        return Err(ApiError::unprocessable(format!(
            "dimensions {d} is not available; this encoder gives {}",
            encoder.dim()
        )));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "encoding_format {other:?} is not supported; use \"float\" or \"base64\""
            )));
        }
    };
    let Encoded { vectors, tokens: prompt_tokens } =
        state.batcher.encode_for_with("/v1/embeddings", texts, own).await.map_err(|e| state.batcher.api_error(e))?;
    let header = HeaderValue::from_str(encoder.id()).ok();
    let data: Vec<serde_json::Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let mut response = Json(json!({
        "object": "list",
        "data": data,
        "model": req.model.unwrap_or_else(|| encoder.id().to_owned()),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response();
    if let Some(v) = header {
        response.headers_mut().insert(MODEL_HEADER, v);
    }
    Ok(response)
}
