//! The OpenAI-compatible API: `POST /v1/completions`, `POST /v1/chat/completions`,
//! `GET /v1/models`.
//!
//! Shared here: reading and checking a request (readiness, Content-Type, body, JSON,
//! `model`), turning [`CommonParams`] into the executor's [`SamplingParams`] with every
//! range checked, submitting the `n` choices of each prompt (choice `i` gets seed `seed + i`;
//! all or nothing: a refused submission cancels those already made), and log-prob tokens.
//!
//! Parameter semantics: `temperature` in [0, 2] (0 = greedy; default 1), `top_p` in (0, 1],
//! `top_k` ≥ 1 keeps k tokens and 0 or -1 mean off, `min_p` in [0, 1], penalties in
//! [-2, 2], `repetition_penalty` in (0, 10], `n` in 1..=16 and > 1 only when sampling,
//! `best_of` (if given) equal to `n`, `logprobs`/`top_logprobs` ≤ 20, at most 16 stop strings
//! of at most 1024 bytes, `max_tokens` ≥ 1 with prompt + max_tokens ≤ the context (missing:
//! the context left after the prompt).

pub mod chat;
pub mod completions;
pub mod types;

use crate::engine::{self, Engine, Job};
use crate::error::ApiError;
use crate::limits::{self, Limits};
use crate::state::{AppState, InflightToken};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use host_runtime::sampling::SamplingParams;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use types::CommonParams;

/// The API name of an executor field.
pub fn rename(field: &str) -> &str {
    match field {
        "max_new_tokens" => "max_tokens",
        "min_new_tokens" => "min_tokens",
        "stop_strings" => "stop",
        other => other,
    }
}

/// A request that passed the common checks.
pub struct Checked {
    pub engine: Arc<Engine>,
    pub body: Value,
    pub common: CommonParams,
    pub inflight: InflightToken,
    pub arrived: Instant,
}

/// Readiness (503), Content-Type (415), body (413), JSON (400), common fields (400),
/// `model` (404; missing = the served model).
pub async fn check_request(state: &Arc<AppState>, headers: &HeaderMap, body: Body) -> Result<Checked, ApiError> {
    let arrived = Instant::now();
    let engine = state.ready_engine()?;
    let inflight = state.inflight_token();
    limits::require_json(headers)?;
    let bytes = limits::read_body(headers, body, state.config.limits.max_body_bytes).await?;
    let body = limits::parse_object(&bytes)?;
    let common: CommonParams = limits::typed(&body)?;
    // A missing `model` means the served one; another name is a 404.
    if let Some(m) = common.model.as_deref() {
        state.check_model(m)?;
    }
    Ok(Checked { engine, body, common, inflight, arrived })
}

/// The common fields as sampling parameters (no `max_new_tokens` yet), with `n`.
pub struct Sampling {
    pub params: SamplingParams,
    pub n: usize,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Checks every common field's range and builds the sampling parameters; `logprobs` is the
/// route's (already range-checked) count.
pub fn sampling(c: &CommonParams, engine: &Engine, limits: &Limits, logprobs: Option<usize>) -> Result<Sampling, ApiError> {
    let temperature = limits::ranged("temperature", c.temperature, 1.0, 0.0, 2.0)?;
    let top_p = limits::ranged("top_p", c.top_p, 1.0, 0.0, 1.0)?;
    if top_p <= 0.0 {
        return Err(ApiError::invalid_param("top_p", format!("{top_p} (must be in (0, 1])")));
    }
    let presence_penalty = limits::ranged("presence_penalty", c.presence_penalty, 0.0, -2.0, 2.0)?;
    let frequency_penalty = limits::ranged("frequency_penalty", c.frequency_penalty, 0.0, -2.0, 2.0)?;
    let repetition_penalty = limits::ranged("repetition_penalty", c.repetition_penalty, 1.0, 0.0, 10.0)?;
    if repetition_penalty <= 0.0 {
        return Err(ApiError::invalid_param("repetition_penalty", format!("{repetition_penalty} (must be in (0, 10])")));
    }
    let min_p = limits::ranged("min_p", c.min_p, 0.0, 0.0, 1.0)?;
    let top_k = match c.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k >= 1 => k,
        Some(k) => return Err(ApiError::invalid_param("top_k", format!("{k} (must be ≥ 1, or 0 / -1 for off)"))),
    };
    let n = c.n.unwrap_or(1);
    if n < 1 || n as u64 > limits.max_n as u64 {
        return Err(ApiError::invalid_param("n", format!("{n} (must be in 1..={})", limits.max_n)));
    }
    let n = n as usize;
    if n > 1 && temperature == 0.0 {
        return Err(ApiError::invalid_param("n", format!("{n} with temperature 0: greedy choices would all be identical (use n = 1 or temperature > 0)")));
    }
    if let Some(b) = c.best_of {
        if b < n as i64 {
            return Err(ApiError::invalid_param("best_of", format!("{b} (must be ≥ n = {n})")));
        }
        if b > n as i64 {
            return Err(ApiError::invalid_param("best_of", format!("{b}: best_of > n is not supported (use best_of = n)")));
        }
    }
    let stop = c.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    limits::check_stop(&stop, limits, "stop")?;
    if let Some(bias) = &c.logit_bias {
        for (k, v) in bias {
            let id: i64 = k.trim().parse().map_err(|_| ApiError::invalid_param("logit_bias", "keys must be integer token ids"))?;
            limits::token_id("logit_bias", id, engine.vocab_size)?;
            if !v.is_finite() || !(-100.0..=100.0).contains(v) {
                return Err(ApiError::invalid_param("logit_bias", format!("bias {v} for token {id} (must be in [-100, 100])")));
            }
        }
        if !bias.is_empty() {
            return Err(ApiError::invalid_param("logit_bias", "not supported by this server"));
        }
    }
    let mut stop_token_ids = Vec::new();
    for &id in c.stop_token_ids.as_deref().unwrap_or(&[]) {
        stop_token_ids.push(vec![limits::token_id("stop_token_ids", id, engine.vocab_size)?]);
    }
    if stop_token_ids.len() > limits.max_stop {
        return Err(ApiError::invalid_param("stop_token_ids", format!("{} ids (at most {})", stop_token_ids.len(), limits.max_stop)));
    }
    if let Some(allowed) = &c.allowed_token_ids {
        for &id in allowed {
            limits::token_id("allowed_token_ids", id, engine.vocab_size)?;
        }
        if !allowed.is_empty() {
            return Err(ApiError::invalid_param("allowed_token_ids", "not supported by this server"));
        }
    }
    let min_tokens = match c.min_tokens {
        None => 0,
        Some(m) if (0..=i32::MAX as i64).contains(&m) => m as usize,
        Some(m) => return Err(ApiError::invalid_param("min_tokens", format!("{m} (must be ≥ 0)"))),
    };
    let params = SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        presence_penalty,
        frequency_penalty,
        stop_strings: stop,
        stop_token_ids,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        min_new_tokens: min_tokens,
        logprobs,
        ..SamplingParams::default()
    };
    let include_usage = c.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    Ok(Sampling { params, n, seed: c.seed.map(|s| s as u64), stream: c.stream.unwrap_or(false), include_usage })
}

/// Submits `n` choices for every prompt (`prompts[p]` gives choices `p*n .. p*n+n`), each
/// with `max_tokens` checked against the context. All or nothing.
pub fn submit_all(state: &Arc<AppState>, engine: &Arc<Engine>, prompts: Vec<Vec<u32>>, s: &Sampling, max_tokens: Option<i64>, arrived: Instant) -> Result<Vec<Job>, ApiError> {
    if prompts.len() * s.n > state.config.limits.max_n {
        return Err(ApiError::invalid_param("n", format!("{} prompts × n = {} choices (at most {})", prompts.len(), prompts.len() * s.n, state.config.limits.max_n)));
    }
    let budgets: Vec<usize> = prompts.iter().map(|p| limits::generation_budget(p.len(), max_tokens, engine.max_seq_len, "max_tokens")).collect::<Result<_, _>>()?;
    let mut jobs = Vec::with_capacity(prompts.len() * s.n);
    for (prompt, budget) in prompts.into_iter().zip(budgets) {
        for i in 0..s.n {
            let mut params = s.params.clone();
            params.max_new_tokens = budget;
            params.seed = s.seed.map(|seed| seed.wrapping_add(i as u64));
            // Dropping `jobs` on error cancels what was submitted.
            jobs.push(engine::submit(state, engine, prompt.clone(), params, arrived).map_err(|e| ApiError::from_executor(e, rename))?);
        }
    }
    Ok(jobs)
}

/// Tokenizes on a blocking thread (long prompts take a while).
pub async fn encode(engine: &Arc<Engine>, text: String, add_special: bool) -> Result<Vec<u32>, ApiError> {
    let tok = engine.tokenizer.clone();
    tokio::task::spawn_blocking(move || tok.encode(&text, add_special))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("tokenizer: {e}")))
}

/// `id-<hex>` unique enough for response ids.
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}-{:016x}", h.finish())
}

/// Seconds since the UNIX epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A token's text (special tokens included; a partial UTF-8 character shows as U+FFFD).
pub fn token_text(engine: &Engine, id: u32) -> String {
    engine.tokenizer.decode(&[id], false).unwrap_or_default()
}

/// A token's bytes (byte-level BPE vocabularies spell bytes as characters).
pub fn token_bytes(engine: &Engine, id: u32) -> Vec<u8> {
    static REVERSE: OnceLock<std::collections::HashMap<char, u8>> = OnceLock::new();
    let rev = REVERSE.get_or_init(|| models::tokenizer::gguf::byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect());
    let spelled = engine.tokenizer.id_to_token(id).and_then(|s| s.chars().map(|c| rev.get(&c).copied()).collect::<Option<Vec<u8>>>());
    spelled.unwrap_or_else(|| token_text(engine, id).into_bytes())
}

/// The terminal event of a stream that failed after the headers went out.
pub fn error_event(message: &str) -> axum::response::sse::Event {
    crate::sse::json_event(&json!({"error": {"message": message, "type": "internal_error", "param": null, "code": "engine_error"}}))
}

/// `data: [DONE]`.
pub fn done_event() -> axum::response::sse::Event {
    axum::response::sse::Event::default().data("[DONE]")
}

/// `usage`.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens})
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    if let Err(e) = state.ready_engine() {
        return e.into_response();
    }
    Json(json!({
        "object": "list",
        "data": [{"id": state.config.model_name, "object": "model", "created": now_secs(), "owned_by": "inflight"}],
    }))
    .into_response()
}
