//! Admin routes: `POST /v1/admin/promote`, `/v1/admin/rollback`, `/v1/admin/reload`. Each needs
//! `Authorization: Bearer <token>` with the token the server was started with; without a
//! configured token the routes answer 404 (disabled). They move aliases in the server's own
//! store and swap the model at once; nothing here takes a path.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::rollout::load_version;
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/admin/promote", post(promote))
        .route("/v1/admin/rollback", post(rollback))
        .route("/v1/admin/reload", post(reload))
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::not_found(
            "the admin routes are disabled: start the server with --admin-token or KEEL_ADMIN_TOKEN",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <admin token>"))?;
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong admin token"))
    }
}

/// What the server serves now, for admin answers.
fn serving(state: &AppState) -> Value {
    json!({
        "model": state.model().map(|m| m.version.tag()),
        "challenger": state.challenger().map(|m| m.version.tag()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    model: String,
    version: i64,
    #[serde(default = "production")]
    alias: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    model: String,
    #[serde(default = "production")]
    alias: String,
}

fn production() -> String {
    "production".into()
}

/// Points an alias at a version (after checking that this server can load it), then reloads.
async fn promote(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<PromoteRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Json(req) = body?;
    let store = state.store().ok_or_else(|| ApiError::not_ready("this server has no store"))?;
    let version = store.model_version(&req.model, req.version).await?;
    // Refuse before moving the alias if this server could not serve the version.
    load_version(store, version, state.encoder_slot()).await?;
    let reason = req.reason.unwrap_or_else(|| "promoted through the admin API".into());
    let previous = store.set_alias(&req.model, &req.alias, req.version, &reason).await?;
    let (_, errors) = state.reload().await;
    Ok(Json(json!({
        "model": req.model, "alias": req.alias, "from": previous, "to": req.version,
        "serving": serving(&state), "errors": errors,
    })))
}

/// Moves an alias back to its previous version, then reloads.
async fn rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Json(req) = body?;
    let store = state.store().ok_or_else(|| ApiError::not_ready("this server has no store"))?;
    let (from, to) = store.rollback(&req.model, &req.alias).await?;
    let (_, errors) = state.reload().await;
    Ok(Json(json!({
        "model": req.model, "alias": req.alias, "from": from, "to": to,
        "serving": serving(&state), "errors": errors,
    })))
}

/// Looks at the registry now instead of at the next poll.
async fn reload(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let (changed, errors) = state.reload().await;
    Ok(Json(json!({"changed": changed, "serving": serving(&state), "errors": errors})))
}
