//! Request limits and the checks every inference route shares: reading the body (413 over
//! the limit, decided from `Content-Length` before reading and otherwise while reading, never
//! buffering past the limit), the Content-Type (415), JSON parsing (400 for malformed JSON,
//! invalid UTF-8, lone surrogates, nesting deeper than serde_json's 128 levels, and wrong
//! types — wrong types are 400, not 422), and the numeric limits (context length, `n`,
//! log-probs, stop strings).
//!
//! Error messages never echo request content: a type error names the field and what was
//! expected, not the value sent.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// What one request may ask for, and the server's timeouts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Largest `n` (choices per prompt) and largest number of choices in one request.
    pub max_n: usize,
    /// Largest `logprobs` / `top_logprobs`.
    pub max_logprobs: usize,
    /// Most stop strings, and the longest one (bytes).
    pub max_stop: usize,
    pub max_stop_bytes: usize,
    /// Most prompts in one `/v1/completions` request.
    pub max_prompts: usize,
    /// A stream whose client reads nothing for this long while output waits is aborted.
    pub write_timeout: Duration,
    /// Most output pieces buffered for a client that is not reading.
    pub max_pending_outputs: usize,
    /// After SIGTERM, how long in-flight requests may take before they are aborted.
    pub drain_timeout: Duration,
    /// How long a health probe's result is reused (probes run at most once per TTL).
    pub health_ttl: Duration,
    /// How long a health probe may wait for the engine (it waits for the step in progress)
    /// before `/health` says 503.
    pub health_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 2 << 20,
            max_n: 16,
            max_logprobs: host_runtime::sampling::MAX_LOGPROBS,
            max_stop: 16,
            max_stop_bytes: 1024,
            max_prompts: 16,
            write_timeout: Duration::from_secs(30),
            max_pending_outputs: 8192,
            drain_timeout: Duration::from_secs(30),
            health_ttl: Duration::from_secs(5),
            health_timeout: Duration::from_secs(20),
        }
    }
}

/// 415 unless the Content-Type is `application/json` (parameters such as `charset` allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::unsupported_media_type());
    };
    let mime = v.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

/// The whole body, at most `limit` bytes: 413 at once when `Content-Length` says more, and
/// as soon as the limit is passed while reading otherwise (nothing past it is buffered).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            // `to_bytes` stops at the limit; any other failure is the connection's.
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::payload_too_large(limit));
                }
                src = s.source();
            }
            Err(ApiError::bad_request("the request body could not be read"))
        }
    }
}

/// Parses the body as a JSON object: 400 for invalid UTF-8, malformed JSON (lone
/// surrogates and over-deep nesting included) or a non-object.
pub fn parse_object(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request("the request body is not valid UTF-8"));
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("the request body is empty: expected a JSON object"));
    }
    // serde_json's syntax messages ("expected value at line 1 column 5", "recursion limit
    // exceeded", "lone leading surrogate in hex escape") carry no request content.
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("expected a JSON object"));
    }
    Ok(v)
}

/// Deserializes `value` as `T`; a type error becomes 400 naming the field and the expected
/// type (never the value sent).
pub fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let what = if let Some(i) = inner.find(", expected ") {
            let rest = &inner[i + 2..];
            rest.split(" at line ").next().unwrap_or(rest).to_string()
        } else if inner.starts_with("missing field") {
            inner.split(" at line ").next().unwrap_or(&inner).to_string()
        } else {
            "invalid value".to_string()
        };
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid request: {what}"))
        } else {
            ApiError::invalid_param(path, format!("wrong type or value ({what})"))
        }
    })
}

/// Checks the prompt against the context and returns the tokens to generate: `max_tokens`
/// when given (prompt + max_tokens must fit), else everything the context has left.
/// `prompt_len >= max_seq_len` leaves no room and is rejected too.
pub fn generation_budget(prompt_len: usize, max_tokens: Option<i64>, max_seq_len: usize, param: &str) -> Result<usize, ApiError> {
    if let Some(m) = max_tokens {
        if m < 1 {
            return Err(ApiError::invalid_param(param, format!("{m} (must be ≥ 1)")));
        }
        if m > i32::MAX as i64 {
            return Err(ApiError::invalid_param(param, format!("{m} (must be < 2^31)")));
        }
    }
    if prompt_len >= max_seq_len {
        return Err(ApiError::context_length(
            "prompt",
            format!("This model's maximum context length is {max_seq_len} tokens; the prompt has {prompt_len} tokens, which leaves no room to generate"),
        ));
    }
    match max_tokens {
        None => Ok(max_seq_len - prompt_len),
        Some(m) => {
            let m = m as usize;
            if prompt_len + m > max_seq_len {
                return Err(ApiError::context_length(
                    param,
                    format!("This model's maximum context length is {max_seq_len} tokens; the prompt has {prompt_len} tokens and {param} is {m} ({} in total)", prompt_len + m),
                ));
            }
            Ok(m)
        }
    }
}

/// Validates stop strings: none empty, at most `max_stop`, each at most `max_stop_bytes`.
pub fn check_stop(stop: &[String], limits: &Limits, param: &str) -> Result<(), ApiError> {
    if stop.len() > limits.max_stop {
        return Err(ApiError::invalid_param(param, format!("{} stop strings (at most {})", stop.len(), limits.max_stop)));
    }
    for (i, s) in stop.iter().enumerate() {
        if s.is_empty() {
            return Err(ApiError::invalid_param(param, format!("stop string {i} is empty")));
        }
        if s.len() > limits.max_stop_bytes {
            return Err(ApiError::invalid_param(param, format!("stop string {i} has {} bytes (at most {})", s.len(), limits.max_stop_bytes)));
        }
    }
    Ok(())
}

/// A finite `f64` in `[lo, hi]` converted to `f32` (rejects NaN, ±inf, overflow).
pub fn ranged(param: &str, v: Option<f64>, default: f32, lo: f64, hi: f64) -> Result<f32, ApiError> {
    let Some(v) = v else { return Ok(default) };
    if !v.is_finite() || v < lo || v > hi {
        return Err(ApiError::invalid_param(param, format!("{v} (must be in [{lo}, {hi}])")));
    }
    Ok(v as f32)
}

/// A token id given by the client: `0 <= id < vocab`.
pub fn token_id(param: &str, id: i64, vocab: usize) -> Result<u32, ApiError> {
    if id < 0 || id as u64 >= vocab as u64 {
        return Err(ApiError::invalid_param(param, format!("token id {id} is outside the vocabulary (0..{vocab})")));
    }
    Ok(id as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_boundaries() {
        assert_eq!(generation_budget(255, Some(1), 256, "max_tokens"), Ok(1));
        assert_eq!(generation_budget(10, None, 256, "max_tokens"), Ok(246));
        let e = generation_budget(256, Some(1), 256, "max_tokens").unwrap_err();
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert!(e.message.contains("256") && e.message.contains("prompt has 256"), "{}", e.message);
        let e = generation_budget(200, Some(100), 256, "max_tokens").unwrap_err();
        assert!(e.message.contains("300") && e.message.contains("256") && e.message.contains("200"), "{}", e.message);
        assert_eq!(generation_budget(1, Some(0), 256, "max_tokens").unwrap_err().param.as_deref(), Some("max_tokens"));
        assert!(generation_budget(1, Some(1 << 31), 256, "max_tokens").is_err());
    }

    #[test]
    fn type_errors_name_the_field_not_the_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct R {
            temperature: Option<f64>,
        }
        let v = parse_object(br#"{"temperature": "secret-value"}"#).unwrap();
        let e = typed::<R>(&v).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(!e.message.contains("secret"), "{}", e.message);
    }

    #[test]
    fn json_errors() {
        assert!(parse_object(b"{\"a\": \"\xff\"}").unwrap_err().message.contains("UTF-8"));
        assert!(parse_object(br#"{"a": "\ud800"}"#).is_err());
        assert!(parse_object(b"[1]").is_err());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_object(deep.as_bytes()).unwrap_err().message.contains("recursion"));
    }
}
