//! API errors: one type, [`ApiError`], rendered in OpenAI's shape on `/v1` routes
//! (`{"error": {"message", "type", "param", "code"}}`) and in Triton's on `/v2` routes
//! (`{"error": "..."}`, through [`TritonError`]).
//!
//! Statuses: 400 bad input (malformed JSON, wrong types, invalid values, context length),
//! 401 missing/wrong API key, 404 unknown model or route, 413 body over the limit, 415 missing
//! or wrong Content-Type, 429 queue full (with `Retry-After`), 500 internal errors (never
//! 400), 503 loading or draining (with `Retry-After`). Messages never echo request content.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use host_runtime::executor::ExecutorError;
use host_runtime::sampling::InvalidParam;
use host_runtime::scheduler::SubmitError;
use serde_json::json;

/// An error answer, whatever the API.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A stable machine-readable code (`context_length_exceeded`, `queue_full`, ...).
    pub code: Option<&'static str>,
}

/// The same error in Triton's `{"error": "..."}` shape.
#[derive(Debug)]
pub struct TritonError(pub ApiError);

impl From<ApiError> for TritonError {
    fn from(e: ApiError) -> Self {
        TritonError(e)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code }
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
    }

    /// 400 naming the field at fault.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        let param = param.into();
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", Some("invalid_parameter"), format!("invalid {param}: {}", message.into()));
        e.param = Some(param);
        e
    }

    /// 400 `context_length_exceeded` (the message gives both numbers).
    pub fn context_length(param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", Some("context_length_exceeded"), message);
        e.param = Some(param.into());
        e
    }

    /// 404 for a model this server does not serve (the name asked for is not echoed).
    pub fn model_not_found(served: &str) -> Self {
        let mut e = Self::new(StatusCode::NOT_FOUND, "not_found_error", Some("model_not_found"), format!("The requested model does not exist; this server serves `{served}`"));
        e.param = Some("model".into());
        e
    }

    /// 404 for a route that does not exist.
    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", Some("not_found"), "no such route")
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", Some("invalid_api_key"), "missing or invalid API key: send `Authorization: Bearer <key>`")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("request_too_large"), format!("the request body exceeds the limit of {limit} bytes"))
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", Some("unsupported_media_type"), "expected `Content-Type: application/json`")
    }

    /// 429: the executor's queue is full; nothing was queued.
    pub fn queue_full(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("queue_full"), message)
    }

    /// 503 while the model loads.
    pub fn loading() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", Some("model_loading"), "Loading model: the server is not ready yet")
    }

    /// 503 once shutdown began.
    pub fn shutting_down() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", Some("shutting_down"), "the server is shutting down and accepts no new requests")
    }

    /// 503 for an engine that is not usable (failed to load, loop stopped).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", Some("engine_unavailable"), message)
    }

    /// 500: a failure of ours, never the client's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", Some("internal_error"), message)
    }

    /// A sampling parameter rejected by the executor, named as the API names it.
    pub fn from_invalid(e: &InvalidParam, rename: fn(&str) -> &str) -> Self {
        Self::invalid_param(rename(e.field), e.message.clone())
    }

    /// A refused submission: 400 for requests that can never run, 429 for a full queue,
    /// 503 when shutting down, 500 for our own failures.
    pub fn from_executor(e: ExecutorError, rename: fn(&str) -> &str) -> Self {
        match e {
            ExecutorError::Invalid(p) => Self::from_invalid(&p, rename),
            ExecutorError::Rejected(s) => match s {
                SubmitError::QueueFull { .. } => Self::queue_full(s.to_string()),
                SubmitError::ExceedsMaxSeqLen { .. } => Self::context_length(rename("max_new_tokens"), s.to_string()),
                SubmitError::EmptyPrompt => Self::invalid_param(rename("prompt"), "the prompt is empty"),
                SubmitError::ZeroMaxNewTokens => Self::invalid_param(rename("max_new_tokens"), "must be ≥ 1"),
                SubmitError::ExceedsKvPool { .. } | SubmitError::PromptExceedsMaxNumTokens { .. } => {
                    Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", Some("request_too_large_for_engine"), s.to_string())
                }
                SubmitError::BeamWidth { .. } => Self::invalid_param(rename("beam_width"), s.to_string()),
                SubmitError::DuplicateId { .. } => Self::internal(s.to_string()),
                // Anything else the scheduler refuses can never run as asked.
                #[allow(unreachable_patterns)]
                other => Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", Some("request_not_runnable"), other.to_string()),
            },
            ExecutorError::Closed => Self::shutting_down(),
            ExecutorError::Config(m) => Self::internal(m),
        }
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn openai_body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }

    /// `{"error": "..."}`.
    pub fn triton_body(&self) -> serde_json::Value {
        json!({"error": self.message})
    }

    fn with_headers(&self, body: serde_json::Value) -> Response {
        let mut r = (self.status, axum::Json(body)).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }

    /// The response in the shape the route's API uses (`/v2...` → Triton, else OpenAI).
    pub fn for_path(self, path: &str) -> Response {
        if path.starts_with("/v2") { TritonError(self).into_response() } else { self.into_response() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.with_headers(self.openai_body())
    }
}

impl IntoResponse for TritonError {
    fn into_response(self) -> Response {
        self.0.with_headers(self.0.triton_body())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}
