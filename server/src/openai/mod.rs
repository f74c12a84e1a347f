//! The OpenAI-compatible API: `POST /v1/completions`, `POST /v1/chat/completions`,
//! `GET /v1/models`.
//!
//! Shared here: reading and checking a request (readiness, Content-Type, body, JSON,
//! `model`), turning [`CommonParams`] into the executor's [`SamplingParams`] with every
//! range checked, submitting the `n` choices of each prompt (choice `i` gets seed `seed + i`;
//! all or nothing: a refused submission cancels those already made), collecting finished
//! choices ([`collect_choices`]), log-prob tokens, and the end of a stream.
//!
//! Parameter semantics: `temperature` in [0, 2] (0 = greedy; default 1), `top_p` in (0, 1],
//! `top_k` ≥ 1 keeps k tokens and 0 or -1 mean off, `min_p` in [0, 1], penalties in
//! [-2, 2], `repetition_penalty` in (0, 10], `n` in 1..=16 and > 1 only when sampling,
//! `best_of` (if given) equal to `n`, `logprobs`/`top_logprobs` ≤ 20, at most 16 stop strings
//! of at most 1024 bytes, `max_tokens` ≥ 1 with prompt + max_tokens ≤ the context (missing:
//! the context left after the prompt).
//!
//! Beam search (vLLM's `use_beam_search: true`): one request per prompt with beam width
//! `best_of` (default `n`; `n ≤ best_of ≤` the engine's `max_beam_width`), whose `n` best
//! hypotheses (by `cum_logprob / len^length_penalty`, `length_penalty` default 1) are the
//! prompt's `n` choices, best first. Deterministic: `temperature` must be 0 or missing;
//! not with `stream` or `logprobs` (the executor keeps no per-token log-probs for beams).
//! Every choice of a beam request has the request's `finish_reason`.

pub mod chat;
pub mod completions;
pub mod types;

use crate::engine::{self, finish_name, Engine, Job};
use crate::error::ApiError;
use crate::limits::{self, Limits};
use crate::state::{AppState, InflightToken};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use host_runtime::executor::{FinishReason, Output, TokenLogprobs};
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
        "beam_width" => "best_of",
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
    /// Beam width (1 = no beam search).
    pub beam_width: usize,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Checks every common field's range and builds the sampling parameters; `logprobs` is the
/// route's (already range-checked) count.
pub fn sampling(c: &CommonParams, engine: &Engine, limits: &Limits, logprobs: Option<usize>) -> Result<Sampling, ApiError> {
    let beam = c.use_beam_search.unwrap_or(false);
    let temperature = limits::ranged("temperature", c.temperature, if beam { 0.0 } else { 1.0 }, 0.0, 2.0)?;
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
    let (n, beam_width) = if beam { beam_choices(c, temperature, logprobs, limits)? } else { sampled_choices(c, temperature, limits)? };
    let length_penalty = limits::ranged("length_penalty", c.length_penalty, 1.0, -10.0, 10.0)?;
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
        beam_width,
        n: if beam_width > 1 { n } else { 1 },
        length_penalty: length_penalty as f32,
        ..SamplingParams::default()
    };
    let include_usage = c.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    Ok(Sampling { params, n, beam_width, seed: c.seed.map(|s| s as u64), stream: c.stream.unwrap_or(false), include_usage })
}

/// `n` checked against the limit.
fn checked_n(c: &CommonParams, limits: &Limits) -> Result<usize, ApiError> {
    let n = c.n.unwrap_or(1);
    if n < 1 || n as u64 > limits.max_n as u64 {
        return Err(ApiError::invalid_param("n", format!("{n} (must be in 1..={})", limits.max_n)));
    }
    Ok(n as usize)
}

/// Sampling: `(n, 1)`; `n > 1` needs temperature > 0, `best_of` must equal `n`.
fn sampled_choices(c: &CommonParams, temperature: f32, limits: &Limits) -> Result<(usize, usize), ApiError> {
    let n = checked_n(c, limits)?;
    if n > 1 && temperature == 0.0 {
        return Err(ApiError::invalid_param("n", format!("{n} with temperature 0: greedy choices would all be identical (use n = 1, temperature > 0 or use_beam_search)")));
    }
    match c.best_of {
        Some(b) if b < n as i64 => Err(ApiError::invalid_param("best_of", format!("{b} (must be ≥ n = {n})"))),
        Some(b) if b > n as i64 => Err(ApiError::invalid_param("best_of", format!("{b}: best_of > n needs use_beam_search (otherwise use best_of = n)"))),
        _ => Ok((n, 1)),
    }
}

/// Beam search: `(n, best_of)` with `n ≤ best_of ≤ max_n`, greedy, no stream, no logprobs.
fn beam_choices(c: &CommonParams, temperature: f32, logprobs: Option<usize>, limits: &Limits) -> Result<(usize, usize), ApiError> {
    let n = checked_n(c, limits)?;
    if temperature != 0.0 {
        return Err(ApiError::invalid_param("temperature", format!("{temperature}: beam search is deterministic (use 0 or leave it out)")));
    }
    if c.stream.unwrap_or(false) {
        return Err(ApiError::invalid_param("stream", "not supported with use_beam_search"));
    }
    if logprobs.is_some() {
        return Err(ApiError::invalid_param("logprobs", "not supported with use_beam_search (no per-token log-probs are kept for beams)"));
    }
    let width = c.best_of.unwrap_or(n as i64);
    if width < n as i64 || width > limits.max_n as i64 {
        return Err(ApiError::invalid_param("best_of", format!("{width} (the beam width: must be in n = {n}..={})", limits.max_n)));
    }
    Ok((n, width as usize))
}

/// Submits `n` choices for every prompt (`prompts[p]` gives choices `p*n .. p*n+n`), each
/// with `max_tokens` checked against the context: `n` requests per prompt, or one beam
/// search request per prompt (its `n` best beams are the choices). All or nothing.
pub fn submit_all(state: &Arc<AppState>, engine: &Arc<Engine>, prompts: Vec<Vec<u32>>, s: &Sampling, max_tokens: Option<i64>, arrived: Instant) -> Result<Vec<Job>, ApiError> {
    if prompts.len() * s.n > state.config.limits.max_n {
        return Err(ApiError::invalid_param("n", format!("{} prompts × n = {} choices (at most {})", prompts.len(), prompts.len() * s.n, state.config.limits.max_n)));
    }
    let budgets: Vec<usize> = prompts.iter().map(|p| limits::generation_budget(p.len(), max_tokens, engine.max_seq_len, "max_tokens")).collect::<Result<_, _>>()?;
    let mut jobs = Vec::with_capacity(prompts.len() * s.n);
    let per_prompt = if s.beam_width > 1 { 1 } else { s.n };
    for (prompt, budget) in prompts.into_iter().zip(budgets) {
        for i in 0..per_prompt {
            let mut params = s.params.clone();
            params.max_new_tokens = budget;
            params.seed = s.seed.map(|seed| seed.wrapping_add(i as u64));
            // Dropping `jobs` on error cancels what was submitted.
            jobs.push(engine::submit(state, engine, prompt.clone(), params, arrived).map_err(|e| ApiError::from_executor(e, rename))?);
        }
    }
    Ok(jobs)
}

/// One finished choice of a non-streamed response.
pub struct Choice {
    pub text: String,
    pub tokens: usize,
    pub logprobs: Vec<TokenLogprobs>,
    pub finish: &'static str,
}

/// Waits for every job and returns the choices in order (`n` per job for beam search, one
/// otherwise); a generation error is a 500.
pub async fn collect_choices(jobs: Vec<Job>, s: &Sampling) -> Result<Vec<Choice>, ApiError> {
    let outs = futures_util::future::join_all(jobs.into_iter().map(|j| j.collect())).await;
    let mut choices = Vec::with_capacity(outs.len() * s.n);
    for o in outs {
        let finish = o.finish.clone().unwrap_or(FinishReason::Error("no final output".into()));
        if let FinishReason::Error(e) = &finish {
            return Err(ApiError::internal(format!("generation failed: {e}")));
        }
        let name = finish_name(&finish);
        if s.beam_width > 1 {
            choices.extend(beam_choices_of(o, s.n, name));
        } else {
            choices.push(Choice { text: o.text, tokens: o.token_ids.len(), logprobs: o.logprobs, finish: name });
        }
    }
    Ok(choices)
}

/// The `n` best beams of a beam search output (empty choices when it ended without beams,
/// e.g. aborted).
fn beam_choices_of(o: Output, n: usize, finish: &'static str) -> Vec<Choice> {
    let mut beams: Vec<Choice> = o.beams.into_iter().take(n).map(|b| Choice { text: b.text, tokens: b.token_ids.len(), logprobs: Vec::new(), finish }).collect();
    while beams.len() < n {
        beams.push(Choice { text: String::new(), tokens: 0, logprobs: Vec::new(), finish });
    }
    beams
}

/// What a response and each of its stream chunks start with: `id`, `object`, `created`,
/// `model` (and chat's `"system_fingerprint": null`).
pub struct Meta {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub fingerprint: bool,
}

impl Meta {
    /// A new response id (`<prefix>-<hex>`) for `object`, now.
    pub fn new(state: &AppState, prefix: &str, object: &'static str, fingerprint: bool) -> Meta {
        Meta { id: new_id(prefix), object, created: now_secs(), model: state.config.model_name.clone(), fingerprint }
    }

    /// The header fields followed by `fields` (an object).
    pub fn with(&self, fields: Value) -> Value {
        let mut v = json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model});
        if self.fingerprint {
            v["system_fingerprint"] = Value::Null;
        }
        if let (Some(m), Value::Object(f)) = (v.as_object_mut(), fields) {
            m.extend(f);
        }
        v
    }
}

/// What both OpenAI stream formats keep: the chunk header, the engine (token texts), the
/// log-prob setting and the usage counts.
pub struct StreamCore {
    pub meta: Meta,
    pub engine: Arc<Engine>,
    pub logprobs: Option<usize>,
    pub include_usage: bool,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl StreamCore {
    pub fn new(meta: Meta, engine: &Arc<Engine>, logprobs: Option<usize>, s: &Sampling, prompt_tokens: usize) -> StreamCore {
        StreamCore { meta, engine: engine.clone(), logprobs, include_usage: s.include_usage, prompt_tokens, completion_tokens: 0 }
    }

    /// A chunk with one choice.
    pub fn chunk(&self, choice: Value) -> axum::response::sse::Event {
        crate::sse::json_event(&self.meta.with(json!({"choices": [choice]})))
    }

    /// The last events: the usage chunk (`choices: []`) when asked for, then `[DONE]`.
    pub fn end(&self) -> Vec<axum::response::sse::Event> {
        let mut evs = Vec::new();
        if self.include_usage {
            let v = self.meta.with(json!({"choices": [], "usage": usage(self.prompt_tokens, self.completion_tokens)}));
            evs.push(crate::sse::json_event(&v));
        }
        evs.push(done_event());
        evs
    }
}

/// A whole (non-streamed) response: the header, `choices` and `usage`.
pub fn response(meta: &Meta, choices: Vec<Value>, prompt_tokens: usize, completion_tokens: usize) -> Response {
    Json(meta.with(json!({"choices": choices, "usage": usage(prompt_tokens, completion_tokens)}))).into_response()
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
