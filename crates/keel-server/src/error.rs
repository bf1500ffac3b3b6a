use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel_store::StoreError;
use serde_json::json;

/// An error as the client sees it: `{"error": {"type": ..., "message": ..., "request_id": ...}}`
/// with a status. The message is written for the client; the cause (an underlying error that
/// may name paths, SQL or a remote body) is logged with the request id and never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds the client should wait before retrying; sent as `Retry-After` (429 and 503).
    pub retry_after: Option<u32>,
    /// What went wrong underneath: for the log only.
    pub(crate) cause: Option<String>,
    /// The configured limit a request went past (its name in [`crate::Limits`] and its value),
    /// sent as `"limit": {"name": ..., "value": ...}`.
    pub(crate) limit: Option<(&'static str, usize)>,
}

/// The message, then the cause: for logs and the CLI, never for an HTTP body.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{}: {cause}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), retry_after: None, cause: None, limit: None }
    }

    /// The same error with `cause` kept for the log (not sent to the client).
    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 413: a request went past the configured limit `name` (a [`crate::Limits`] field), whose
    /// value is `value`; the body names both.
    pub fn over_limit(name: &'static str, value: usize, message: impl Into<String>) -> Self {
        Self { limit: Some((name, value)), ..Self::too_large(message) }
    }

    /// The request's `Host` is not on the allow-list (403).
    pub fn forbidden_host(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "host_not_allowed", message)
    }

    /// The route exists, but not for this method (405).
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
    }

    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The encoder queue is full: come back in `retry_after` seconds (429 with `Retry-After`).
    pub fn overloaded(message: impl Into<String>, retry_after: u32) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message) }
    }

    /// A dependency (the encoder, the prediction log) cannot answer right now (503).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The request conflicts with the server's state (a version trained on another encoder).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// No or a wrong bearer token on an admin route (401 with `WWW-Authenticate: Bearer`).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The request took longer than the per-request deadline (503 with `Retry-After`).
    pub fn deadline(message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded", message)
        }
    }

    /// A dependency is failing and will not be called for `retry_after` seconds (503).
    pub fn unavailable_for(message: impl Into<String>, retry_after: u32) -> Self {
        Self { retry_after: Some(retry_after), ..Self::unavailable(message) }
    }

    /// A failure that is Keel's fault. The cause is logged with the request id; the client sees
    /// a generic message and the id.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the cause under this request id",
        )
        .with_cause(cause)
    }
}

/// The one mapping of store failures: a missing row is 404, a refused value 422, and anything
/// else (the database or the artifact folder failing) 503 with the cause in the log only.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Invalid(m) => ApiError::unprocessable(m),
            e => ApiError::unavailable("the store cannot answer right now; retry shortly").with_cause(e),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        let status = r.status();
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_input",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_request",
        };
        Self::new(status, kind, r.body_text())
    }
}

impl ApiError {
    /// Logs the cause, if there is one, with the request id: an error for a 500, a warning for
    /// another 5xx.
    pub(crate) fn log(&self, request_id: Option<&str>) {
        let Some(cause) = &self.cause else { return };
        let (id, status) = (request_id.unwrap_or("-"), self.status.as_u16());
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(request_id = id, status, kind = self.kind, %cause, "{}", self.message);
        } else if self.status.is_server_error() {
            tracing::warn!(request_id = id, status, kind = self.kind, %cause, "{}", self.message);
        } else {
            tracing::info!(request_id = id, status, kind = self.kind, %cause, "{}", self.message);
        }
    }

    /// The `error` object of an answer (also an SSE `error` event's).
    pub(crate) fn body(&self, request_id: Option<&str>) -> serde_json::Value {
        let mut body = json!({"type": self.kind, "message": self.message});
        if let Some(id) = request_id {
            body["request_id"] = json!(id);
        }
        if let Some((name, value)) = self.limit {
            body["limit"] = json!({"name": name, "value": value});
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = crate::request_id::current();
        self.log(id.as_deref());
        let body = json!({"error": self.body(id.as_deref())});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
