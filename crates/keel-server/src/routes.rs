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
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::metrics::{Route, RouteStatus};
use crate::{ApiError, AppState};

type Shared = State<Arc<AppState>>;

/// The application, ready to serve or to be called in tests with `oneshot`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found("no such route; see GET /v1/models, POST /v1/classify, POST /v1/embeddings")
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
    match state.model() {
        Some(m) => Ok(Json(json!({"status": "ready", "model": m.version.tag(), "encoder": state.encoder.id()}))),
        None => Err(ApiError::not_ready("no model is loaded; /v1/embeddings works, /v1/classify does not")),
    }
}

async fn metrics(State(state): Shared) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn models(State(state): Shared) -> Json<serde_json::Value> {
    let mut data = vec![
        json!({"id": state.encoder.id(), "object": "model", "owned_by": "keel", "kind": "encoder", "dim": state.encoder.dim()}),
    ];
    if let Some(m) = state.model() {
        data.push(json!({
            "id": m.version.tag(), "object": "model", "owned_by": "keel", "kind": "classifier",
            "labels": m.head.labels(), "metrics": m.version.metrics, "aliases": m.version.aliases,
        }));
    }
    Json(json!({"object": "list", "data": data}))
}

/// Runs the encoder on the blocking pool, never on the async runtime. Returns the vectors and
/// the number of tokens the texts made (before truncation).
async fn encode(state: &Arc<AppState>, route: &str, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    state.metrics.texts.get_or_create(&Route { route: route.to_owned() }).inc_by(texts.len() as u64);
    state.metrics.batch_size.observe(texts.len() as f64);
    let encoder = state.encoder.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens = refs.iter().map(|t| encoder.count_tokens(t)).sum::<Result<usize, _>>()?;
        Ok::<_, keel_embed::EmbedError>((encoder.embed(&refs)?, tokens))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
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
    let Json(req) = body?;
    check_count(&state, req.inputs.len())?;
    let model = state
        .model()
        .ok_or_else(|| ApiError::not_ready("no model is loaded; train one with `keel quickstart` or `keel train`"))?;
    let (vectors, _) = encode(&state, "/v1/classify", req.inputs).await?;
    let labels = model.head.labels();
    let predictions: Vec<Prediction> = vectors
        .iter()
        .map(|v| {
            let p = model.head.predict_proba(v);
            let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
            Prediction {
                id: uuid::Uuid::now_v7().to_string(),
                label: labels[best].clone(),
                scores: labels.iter().cloned().zip(p.iter().copied()).collect(),
            }
        })
        .collect();
    Ok(Json(json!({"model": model.version.tag(), "degraded": false, "predictions": predictions})))
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
    if let Some(d) = req.dimensions.filter(|&d| d != state.encoder.dim()) {
        return Err(ApiError::unprocessable(format!(
            "dimensions {d} is not available; this encoder gives {}",
            state.encoder.dim()
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
    let (vectors, prompt_tokens) = encode(&state, "/v1/embeddings", texts).await?;
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
        "model": req.model.unwrap_or_else(|| state.encoder.id().to_owned()),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}
