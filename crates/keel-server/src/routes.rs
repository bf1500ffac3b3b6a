use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use keel_store::{PredictionRecord, StoreError};
use keel_train::Head;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::batch::{EncodeError, Encoded};
use crate::metrics::{Route, RouteStatus};
use crate::{ApiError, AppState};

type Shared = State<Arc<AppState>>;

/// The application, ready to serve or to be called in tests with `oneshot`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/feedback", post(feedback))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found(
                "no such route; see GET /v1/models, POST /v1/classify, POST /v1/embeddings, POST /v1/feedback",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts every request by route and status and times it.
async fn observe(State(state): Shared, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.latency.get_or_create(&Route { route: route.clone() }).observe(start.elapsed().as_secs_f64());
    m.requests.get_or_create(&RouteStatus { route, status: response.status().as_u16() }).inc();
    response
}

async fn readyz(State(state): Shared) -> Result<Json<serde_json::Value>, ApiError> {
    let model = state
        .model()
        .ok_or_else(|| ApiError::not_ready("no model is loaded; /v1/embeddings works, /v1/classify does not"))?;
    let encoder = state.encoder();
    match state.degraded() {
        None => Ok(Json(
            json!({"status": "ready", "degraded": false, "model": model.version.tag(), "encoder": encoder.id()}),
        )),
        Some(cause) if model.fallback.is_some() => Ok(Json(json!({
            "status": "degraded", "degraded": true, "cause": cause, "model": model.version.tag(), "encoder": encoder.id(),
        }))),
        Some(cause) => Err(ApiError::not_ready(format!(
            "the encoder is failing and {} has no fallback head: {cause}",
            model.version.tag()
        ))),
    }
}

async fn metrics(State(state): Shared) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn models(State(state): Shared) -> Json<serde_json::Value> {
    let encoder = state.encoder();
    let mut data = vec![
        json!({"id": encoder.id(), "object": "model", "owned_by": "keel", "kind": "encoder", "dim": encoder.dim()}),
    ];
    if let Some(m) = state.model() {
        data.push(json!({
            "id": m.version.tag(), "object": "model", "owned_by": "keel", "kind": "classifier",
            "labels": m.head.labels(), "metrics": m.version.metrics, "aliases": m.version.aliases,
            "fallback": m.fallback.as_ref().map(Head::kind),
        }));
    }
    Json(json!({"object": "list", "data": data}))
}

/// Embeds `texts` through the encoder queue. Returns the vectors and the number of tokens the
/// texts made (truncated at the encoder's limit).
async fn encode(state: &AppState, route: &str, texts: Vec<String>) -> Result<Encoded, EncodeError> {
    state.metrics.texts.get_or_create(&Route { route: route.to_owned() }).inc_by(texts.len() as u64);
    state.batcher.encode(texts).await
}

/// 429 with `Retry-After` for a full queue; 503 for a failing encoder.
fn encode_error(state: &AppState, e: EncodeError) -> ApiError {
    match e {
        EncodeError::Full(_) => ApiError::overloaded(e.to_string(), state.batcher.config().retry_after_secs),
        e => ApiError::unavailable(e.to_string()),
    }
}

fn check_count(state: &AppState, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::unprocessable("inputs is empty: send at least one text"));
    }
    if n > state.limits.max_inputs {
        return Err(ApiError::too_large(format!(
            "{n} inputs in one request; the limit is {}",
            state.limits.max_inputs
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    inputs: Vec<String>,
}

#[derive(Serialize)]
struct Prediction {
    id: String,
    label: String,
    scores: BTreeMap<String, f32>,
}

async fn classify(
    State(state): Shared,
    body: Result<Json<ClassifyRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let start = Instant::now();
    let Json(req) = body?;
    check_count(&state, req.inputs.len())?;
    let model = state
        .model()
        .ok_or_else(|| ApiError::not_ready("no model is loaded; train one with `keel quickstart` or `keel train`"))?;
    let texts = req.inputs;
    let (probas, degraded) = match encode(&state, "/v1/classify", texts.clone()).await {
        Ok(encoded) => {
            let probas = encoded
                .vectors
                .iter()
                .map(|v| model.head.predict_proba_embedding(v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ApiError::internal)?;
            (probas, false)
        }
        Err(e @ EncodeError::Full(_)) => return Err(encode_error(&state, e)),
        Err(e) if model.fallback.is_none() => {
            return Err(ApiError::unavailable(format!("{e}; {} has no fallback head", model.version.tag())));
        }
        Err(_) => {
            let (m, t) = (model.clone(), texts.clone());
            let probas = tokio::task::spawn_blocking(move || {
                let fallback = m.fallback.as_ref().expect("checked above");
                t.iter().map(|t| fallback.predict_proba_text(t)).collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
            state.metrics.degraded.inc();
            (probas, true)
        }
    };
    let head = if degraded { model.fallback.as_ref().unwrap_or(&model.head) } else { &model.head };
    let labels = head.labels();
    let tag = model.version.tag();
    let predictions: Vec<Prediction> = probas
        .iter()
        .map(|p| {
            let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
            Prediction {
                id: uuid::Uuid::now_v7().to_string(),
                label: labels[best].clone(),
                scores: labels.iter().cloned().zip(p.iter().copied()).collect(),
            }
        })
        .collect();
    if let Some(log) = &state.log {
        let (at, latency_ms) = (now(), start.elapsed().as_secs_f64() * 1000.0);
        for (p, text) in predictions.iter().zip(texts) {
            log.record(PredictionRecord {
                id: p.id.clone(),
                at: at.clone(),
                model: tag.clone(),
                input_sha256: keel_core::sha256_hex(text.as_bytes()),
                input_text: text,
                label: p.label.clone(),
                scores: json!(p.scores),
                latency_ms,
                degraded,
            });
        }
    }
    Ok(Json(json!({"model": tag, "degraded": degraded, "predictions": predictions})))
}

/// The store's timestamp format (UTC, milliseconds), so time windows compare as strings.
fn now() -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
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
    let log = state
        .log
        .as_ref()
        .ok_or_else(|| ApiError::not_ready("this server keeps no prediction log, so it takes no feedback"))?;
    if req.label.trim().is_empty() {
        return Err(ApiError::unprocessable("label is empty"));
    }
    let store = log.store();
    let mut result = store.add_feedback(&req.prediction_id, &req.label).await;
    if matches!(result, Err(StoreError::NotFound(_))) {
        // The prediction may still be waiting in the log buffer: write it, then try again.
        log.flush().await;
        result = store.add_feedback(&req.prediction_id, &req.label).await;
    }
    match result {
        Ok(()) => Ok(Json(json!({"prediction_id": req.prediction_id, "label": req.label}))),
        Err(StoreError::NotFound(m)) => Err(ApiError::not_found(m)),
        Err(e) => Err(ApiError::internal(e)),
    }
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
}

async fn embeddings(
    State(state): Shared,
    body: Result<Json<EmbeddingsRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    check_count(&state, texts.len())?;
    let encoder = state.encoder();
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
        encode(&state, "/v1/embeddings", texts).await.map_err(|e| encode_error(&state, e))?;
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
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model.unwrap_or_else(|| encoder.id().to_owned()),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}
