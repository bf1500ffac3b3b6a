//! `/v1/answer` with `"stream": true`: server-sent events. `draft` events carry generated text
//! as it is produced (`{"text": "..."}`, not yet checked: a client must not present it as the
//! answer); the last event is `answer` with the whole reply (the text shown, the decision, its
//! reason, the `grounded` score, citations), or `error` with the usual error body.

use std::convert::Infallible;
use std::future::Future;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use keel_llm::{OnText, Reply};
use serde_json::json;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::ApiError;

/// Runs `answer` (given the draft sink) in its own task and streams its events.
pub(crate) fn respond<F, Fut>(answer: F) -> Response
where
    F: FnOnce(OnText) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Reply, ApiError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Event, Infallible>>();
    let drafts = tx.clone();
    let sink: OnText = Box::new(move |t| {
        let _ = drafts.send(Ok(Event::default().event("draft").data(json!({"text": t}).to_string())));
    });
    let id = crate::request_id::current();
    tokio::spawn(crate::request_id::scope(id.clone(), async move {
        let last = match answer(sink).await {
            Ok(reply) => Event::default()
                .event("answer")
                .data(serde_json::to_string(&reply).unwrap_or_else(|e| json!({"error": e.to_string()}).to_string())),
            Err(e) => {
                let mut body = e.body(id.as_deref());
                body["status"] = json!(e.status.as_u16());
                e.log(id.as_deref());
                Event::default().event("error").data(json!({"error": body}).to_string())
            }
        };
        let _ = tx.send(Ok(last));
    }));
    Sse::new(UnboundedReceiverStream::new(rx)).keep_alive(KeepAlive::default()).into_response()
}
