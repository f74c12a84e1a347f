//! API-key authentication, as a layer over the whole router (fallback included).
//!
//! With a key configured, every request needs `Authorization: Bearer <key>` (scheme
//! case-insensitive, key compared in constant time) except the health routes, which are
//! matched on the exact request path: `/health`, `/v2/health/ready`, `/v2/health/live`.
//! Nothing is normalised before the match, so `//v1/...`, `/v1%2F...`, `/V1/...`, `/health/`
//! or `/health/../v1/...` are not health routes and need the key like everything else (an
//! allow-list of exact paths cannot be bypassed by spelling a path differently).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// Paths that never need the key.
pub const OPEN_PATHS: [&str; 3] = ["/health", "/v2/health/ready", "/v2/health/live"];

/// Whether `path` (exactly as received) is a health route.
pub fn is_open_path(path: &str) -> bool {
    OPEN_PATHS.contains(&path)
}

/// Equal lengths and bytes, without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries `Authorization: Bearer <key>` (one header only).
pub fn authorized(req: &Request, key: &str) -> bool {
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let v = v.as_bytes();
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let token = v[7..].trim_ascii();
    constant_time_eq(token, key.as_bytes())
}

/// The middleware.
pub async fn require_api_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = state.config.api_key.as_deref() else {
        return next.run(req).await;
    };
    if is_open_path(req.uri().path()) || authorized(&req, key) {
        return next.run(req).await;
    }
    ApiError::unauthorized().for_path(req.uri().path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: &[&str]) -> Request {
        let mut b = axum::http::Request::builder().uri("/v1/models");
        for a in auth {
            b = b.header(AUTHORIZATION, *a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn bearer_matching() {
        assert!(authorized(&req(&["Bearer k1"]), "k1"));
        assert!(authorized(&req(&["bearer k1"]), "k1"));
        assert!(!authorized(&req(&["Bearer k2"]), "k1"));
        assert!(!authorized(&req(&["Bearer k1x"]), "k1"));
        assert!(!authorized(&req(&["Basic k1"]), "k1"));
        assert!(!authorized(&req(&["k1"]), "k1"));
        assert!(!authorized(&req(&[]), "k1"));
        assert!(!authorized(&req(&["Bearer k1", "Bearer k1"]), "k1"));
    }

    #[test]
    fn only_exact_health_paths_are_open() {
        assert!(is_open_path("/health"));
        for p in ["//health", "/health/", "/HEALTH", "/health/../v1/models", "/v2/health/ready/", "/v2%2Fhealth%2Fready"] {
            assert!(!is_open_path(p), "{p}");
        }
    }
}
