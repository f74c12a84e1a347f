//! Health, readiness and administration routes.
//!
//! - `GET /health`: 200 `{"status": "ok"}` only when the model is loaded and warmed up, the
//!   executor loop is alive, the server is not draining and the health probe (a real
//!   one-token generation on a reserved KV block, its result reused for a few seconds; see
//!   [`crate::health`]) succeeds; otherwise 503 with the status (`loading`, `draining`,
//!   `failed`, `unhealthy`) and a message. Never needs the API key.
//! - `GET /v2/health/ready` (same readiness, same probe), `GET /v2/health/live` (200 unless
//!   loading failed or the executor loop died; no probe): Triton's health routes, also open.
//! - `POST /admin/abort_all`: cancels every request in flight (running or queued); each ends
//!   with `finish_reason: "abort"`. Needs the API key when one is set.
//! - the fallback: 404 for unknown routes.

use crate::error::ApiError;
use crate::state::{AppState, Phase};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// `GET /health`.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let why = match state.check_health().await {
        Ok(()) => return Json(json!({"status": "ok", "model": state.config.model_name})).into_response(),
        Err(why) => why,
    };
    let (status, message) = match state.phase() {
        Phase::Failed(m) => ("failed", format!("the model failed to load: {m}")),
        _ if state.draining() => ("draining", "the server is shutting down".to_string()),
        Phase::Loading => ("loading", "Loading model".to_string()),
        Phase::Ready(_) => ("unhealthy", why),
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": status, "message": message}))).into_response()
}

/// `GET /v2/health/ready`.
pub async fn ready(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.check_health().await.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// `GET /v2/health/live`.
pub async fn live(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.is_live() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// `POST /admin/abort_all`.
pub async fn abort_all(State(state): State<Arc<AppState>>) -> Response {
    match state.engine() {
        Some(engine) => Json(json!({"aborted": engine.abort_all()})).into_response(),
        None => ApiError::loading().into_response(),
    }
}

/// Unknown routes.
pub async fn not_found(req: Request) -> Response {
    ApiError::route_not_found().for_path(req.uri().path())
}
