//! `POST /v1/classify`: the model the request is routed to (primary or canary) answers it, in the
//! way its family needs. A head that reads raw text (the n-gram or sparse TF-IDF model) scores
//! the request's texts on a blocking thread: no encoder, no queue, no breaker, never degraded. A
//! head that reads embeddings (or, the combined model, the text and its embedding) gets them
//! through the encoder queue, and answers from the version's n-gram fallback head
//! (`"degraded": true`) when the encoder fails.
//!
//! A shadow challenger scores the same request after the answer, off the request path: from the
//! text if it reads text, from the same embeddings if it reads embeddings (embedded through the
//! queue when the answering model read text; skipped when the encoder has just failed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use keel_store::PredictionRecord;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::batch::EncodeError;
use crate::metrics::ModelRole;
use crate::{ApiError, AppState, LoadedModel, MODEL_HEADER, Pick};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClassifyRequest {
    inputs: Vec<String>,
}

#[derive(Serialize)]
struct Prediction {
    id: String,
    label: String,
    scores: BTreeMap<String, f32>,
}

/// One request's scores, and how they were made.
struct Scored {
    probas: Vec<Vec<f32>>,
    /// The encoder failed and the fallback head answered.
    degraded: bool,
    /// The embeddings the answer read (for an embedding shadow).
    vectors: Option<Vec<Vec<f32>>>,
}

pub(crate) async fn classify(
    State(state): State<Arc<AppState>>,
    body: Result<Json<ClassifyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let Json(req) = body?;
    state.limits.check_texts("inputs", &req.inputs)?;
    let Pick { model, role, shadow } = state
        .pick()
        .ok_or_else(|| ApiError::not_ready("no model is loaded; train one with `keel quickstart` or `keel train`"))?;
    let texts = req.inputs;
    let scored = if model.needs_encoder() {
        from_embeddings(&state, &model, &texts).await?
    } else {
        let probas = score_texts(model.clone(), texts.clone(), Which::Head).await?;
        Scored { probas, degraded: false, vectors: None }
    };
    let degraded = scored.degraded;
    let head = if degraded { model.fallback.as_ref().unwrap_or(&model.head) } else { &model.head };
    let tag = model.version.tag();
    let predictions = predictions_of(head.labels(), &scored.probas);
    state
        .metrics
        .predictions
        .get_or_create(&ModelRole { model: tag.clone(), role: role.to_owned() })
        .inc_by(predictions.len() as u64);
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Some(shadow) = shadow {
        let answered: Vec<String> = predictions.iter().map(|p| p.label.clone()).collect();
        // The answer's vectors serve the shadow when both read the same encoder; else the shadow
        // embeds, unless the answer just tried that encoder.
        let same = model.same_encoder(&shadow);
        let input = ShadowInput {
            texts: texts.clone(),
            vectors: scored.vectors.filter(|_| same),
            may_embed: !model.needs_encoder() || !same,
        };
        let state = state.clone();
        tokio::spawn(async move { score_in_shadow(&state, &shadow, input, &answered, latency_ms).await });
    }
    if let Some(log) = &state.log {
        let at = now();
        for (p, text) in predictions.iter().zip(texts) {
            log.record(record(p, &at, &tag, text, latency_ms, degraded));
        }
    }
    let mut response = Json(json!({"model": tag, "degraded": degraded, "predictions": predictions})).into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(MODEL_HEADER, v);
    }
    Ok(response)
}

/// A head that reads embeddings: through the encoder queue, or from the fallback head when the
/// encoder fails (503 without one; 429 when the queue is full).
async fn from_embeddings(state: &AppState, model: &Arc<LoadedModel>, texts: &[String]) -> Result<Scored, ApiError> {
    match state.batcher.encode_for_with("/v1/classify", texts.to_vec(), model.encoder.clone()).await {
        Ok(encoded) => {
            let probas = read_both(&model.head, texts, &encoded.vectors)?;
            Ok(Scored { probas, degraded: false, vectors: Some(encoded.vectors) })
        }
        Err(e @ EncodeError::Full(_)) => Err(state.batcher.api_error(e)),
        Err(e) if model.fallback.is_none() => {
            let e = state.batcher.api_error(e);
            Err(ApiError { message: format!("{}; {} has no fallback head", e.message, model.version.tag()), ..e })
        }
        Err(_) => {
            let probas = score_texts(model.clone(), texts.to_vec(), Which::Fallback).await?;
            state.metrics.degraded.inc();
            Ok(Scored { probas, degraded: true, vectors: None })
        }
    }
}

/// Which of a version's heads reads the text.
#[derive(Clone, Copy)]
enum Which {
    Head,
    Fallback,
}

/// Scores `texts` with a head that reads raw text, on a blocking thread.
async fn score_texts(model: Arc<LoadedModel>, texts: Vec<String>, which: Which) -> Result<Vec<Vec<f32>>, ApiError> {
    tokio::task::spawn_blocking(move || {
        let head = match which {
            Which::Head => &model.head,
            Which::Fallback => model.fallback.as_ref().ok_or_else(|| ApiError::internal("no fallback head"))?,
        };
        texts.iter().map(|t| head.predict_proba_text(t)).collect::<Result<Vec<_>, _>>().map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

fn predictions_of(labels: &[String], probas: &[Vec<f32>]) -> Vec<Prediction> {
    probas
        .iter()
        .map(|p| {
            let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
            Prediction {
                id: uuid::Uuid::now_v7().to_string(),
                label: labels[best].clone(),
                scores: labels.iter().cloned().zip(p.iter().copied()).collect(),
            }
        })
        .collect()
}

/// A prediction as the log keeps it: the text, its hash, the scores, latency and whether the
/// fallback answered (no embeddings or token counts, so every model family logs the same row).
fn record(p: &Prediction, at: &str, tag: &str, text: String, latency_ms: f64, degraded: bool) -> PredictionRecord {
    PredictionRecord {
        id: p.id.clone(),
        at: at.to_owned(),
        model: tag.to_owned(),
        input_sha256: keel_core::sha256_hex(text.as_bytes()),
        input_text: text,
        label: p.label.clone(),
        scores: json!(p.scores),
        latency_ms,
        degraded,
    }
}

/// What the shadow may score from.
struct ShadowInput {
    texts: Vec<String>,
    /// The embeddings the answering model read, if it read embeddings and the encoder worked.
    vectors: Option<Vec<Vec<f32>>>,
    /// Whether an embedding shadow may call the encoder itself (the answer did not try it).
    may_embed: bool,
}

/// The shadow challenger scores the request; its predictions are logged under its own tag and
/// counted, never answered.
async fn score_in_shadow(
    state: &AppState,
    shadow: &Arc<LoadedModel>,
    input: ShadowInput,
    answered: &[String],
    latency_ms: f64,
) {
    let probas = match shadow_scores(state, shadow, &input).await {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::warn!(model = %shadow.version.tag(), error = %e, "the shadow model cannot score");
            return;
        }
        None => return,
    };
    let tag = shadow.version.tag();
    let predictions = predictions_of(shadow.head.labels(), &probas);
    let m = &state.metrics;
    m.predictions
        .get_or_create(&ModelRole { model: tag.clone(), role: "shadow".into() })
        .inc_by(predictions.len() as u64);
    m.shadow_agreed.inc_by(predictions.iter().zip(answered).filter(|(p, a)| &p.label == *a).count() as u64);
    if let Some(log) = &state.log {
        let at = now();
        for (p, text) in predictions.iter().zip(&input.texts) {
            log.record(record(p, &at, &tag, text.clone(), latency_ms, false));
        }
    }
}

/// The shadow's probabilities; `None` when it reads embeddings and there are none to read.
async fn shadow_scores(
    state: &AppState,
    shadow: &Arc<LoadedModel>,
    input: &ShadowInput,
) -> Option<Result<Vec<Vec<f32>>, ApiError>> {
    if !shadow.needs_encoder() {
        return Some(score_texts(shadow.clone(), input.texts.clone(), Which::Head).await);
    }
    let embedded;
    let vectors = match (&input.vectors, input.may_embed) {
        (Some(v), _) => v,
        (None, true) => match state.batcher.encode_with(input.texts.clone(), shadow.encoder.clone()).await {
            Ok(e) => {
                embedded = e.vectors;
                &embedded
            }
            Err(e) => return Some(Err(state.batcher.api_error(e))),
        },
        (None, false) => return None,
    };
    Some(read_both(&shadow.head, &input.texts, vectors))
}

/// A head that reads embeddings (the combined model: the text too) on each text and its vector.
fn read_both(head: &keel_train::Head, texts: &[String], vectors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ApiError> {
    texts
        .iter()
        .zip(vectors)
        .map(|(text, v)| head.predict_proba(keel_train::Input::Both { text, embedding: v }))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)
}

/// The store's timestamp format (UTC, milliseconds), so time windows compare as strings.
fn now() -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}
