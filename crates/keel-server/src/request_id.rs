//! Request ids: every request gets one, sent back in `x-request-id` and in every error body, so
//! a client's report of a 5xx finds the cause in the server log (the cause itself is never in
//! the answer). A client-sent id is kept when it is sane (1..=64 chars of `[A-Za-z0-9._-]`);
//! otherwise the server makes one (a UUIDv7: time-ordered, random in its low bits).

use std::future::Future;
use std::sync::Arc;

use axum::http::HeaderMap;

/// The header a request id travels in, both ways.
pub(crate) const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Whether a client-sent id may be kept (and logged and echoed as it is).
fn sane(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The client's id if it is sane, else a fresh one.
pub(crate) fn of(headers: &HeaderMap) -> Arc<str> {
    match headers.get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| sane(v)) {
        Some(id) => id.into(),
        None => uuid::Uuid::now_v7().to_string().into(),
    }
}

/// The id of the request being answered on this task, if any.
pub(crate) fn current() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Runs `f` as part of request `id` (errors it answers name the id).
pub(crate) async fn scope<F: Future>(id: Option<Arc<str>>, f: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, f).await,
        None => f.await,
    }
}
