//! Triton's generate extension, as the TensorRT-LLM backend serves it, so that its clients
//! work unchanged: `POST /v2/models/<m>/generate` and `/generate_stream` (SSE `data: {json}`
//! events), `GET /v2/models/<m>` (metadata), `GET /v2/models/<m>/ready`, `GET /v2`, and the
//! health routes `GET /v2/health/ready|live` (in `lib.rs`). `<m>` is `ensemble`,
//! `tensorrt_llm_bls` or the served model name; anything else is a 404.
//!
//! Like Triton, the body is JSON whatever the Content-Type (`curl -d` sends
//! `application/x-www-form-urlencoded`). Every input may be a scalar or a one-element list
//! (a shape-[1] tensor). Inputs: `text_input` (required), `max_tokens` (missing = the context
//! left), `bad_words` / `stop_words` (a string or a list; `""` = none; stop words end the text
//! and are not part of it; bad words are tokenized and never generated), `end_id`, `pad_id`,
//! `temperature`, `top_k`, `top_p`, `beam_width`, `repetition_penalty`,
//! `presence_penalty`, `frequency_penalty`, `length_penalty`, `min_length`, `random_seed`,
//! `return_log_probs`, `exclude_input_in_output`, `stream`. Sampling follows TensorRT-LLM:
//! with `top_k` 0 (or missing) and `top_p` 0 (or missing) decoding is greedy, as it is with
//! `top_k` 1 or `temperature` 0; `top_p` 0 means off.
//!
//! Output: `{"model_name", "model_version": "1", "text_output"}` plus `cum_log_probs` and
//! `output_log_probs` with `return_log_probs`. Non-streaming `text_output` starts with the
//! prompt unless `exclude_input_in_output` is true (the backend's default); streamed events
//! carry only the new text. Errors are `{"error": "..."}`; a stream that fails after its
//! headers ends with such an event.
//!
//! Beam search (`beam_width` > 1, up to the engine's `max_beam_width`), as the TensorRT-LLM
//! backend returns it: `text_output` is a list of `beam_width` texts, best first (by
//! `cum_log_prob / len^length_penalty`), each with the prompt in front unless
//! `exclude_input_in_output`, and `cum_log_probs` a list of the beams' cumulative log-probs
//! (always: they rank the beams). `output_log_probs` is not returned for beams (the
//! executor keeps no per-token log-probs for them). Streamed, the beams come in one event
//! at the end (beams reorder until the search ends, so no partial text is final).

use crate::engine::{self, Engine};
use crate::error::{ApiError, TritonError};
use crate::limits;
use crate::sse::{self, json_event, StreamFormat};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use host_runtime::executor::{BeamOutput, FinishReason, Output};
use host_runtime::sampling::SamplingParams;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Model names of the TensorRT-LLM backend's repository that this server answers for.
pub const TRTLLM_MODELS: [&str; 2] = ["ensemble", "tensorrt_llm_bls"];

/// The API name of an executor field.
pub fn rename(field: &str) -> &str {
    match field {
        "max_new_tokens" => "max_tokens",
        "stop_strings" => "stop_words",
        "seed" => "random_seed",
        "min_new_tokens" => "min_length",
        "prompt" => "text_input",
        other => other,
    }
}

fn check_model(state: &AppState, model: &str) -> Result<(), ApiError> {
    if TRTLLM_MODELS.contains(&model) || state.config.serves(model) {
        return Ok(());
    }
    let mut e = ApiError::model_not_found(&state.config.model_name);
    e.message = format!("Request for unknown model: the requested model is not found (this server serves '{}', 'ensemble' and 'tensorrt_llm_bls')", state.config.model_name);
    Err(e)
}

/// A tensor given as a scalar or as nested one-element lists.
fn scalar(v: &Value) -> &Value {
    let mut v = v;
    while let Value::Array(a) = v {
        if a.len() != 1 {
            break;
        }
        v = &a[0];
    }
    v
}

fn field<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name).map(scalar).filter(|v| !v.is_null())
}

fn get_str(body: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid_param(name, "wrong type (expected a string)")),
    }
}

fn get_i64(body: &Value, name: &str) -> Result<Option<i64>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::Number(n)) if n.is_u64() => Err(ApiError::invalid_param(name, "out of range")),
        Some(_) => Err(ApiError::invalid_param(name, "wrong type (expected an integer)")),
    }
}

fn get_u64(body: &Value, name: &str) -> Result<Option<u64>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().map(|v| v as u64)),
        Some(_) => Err(ApiError::invalid_param(name, "wrong type (expected an integer)")),
    }
}

fn get_f64(body: &Value, name: &str) -> Result<Option<f64>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::invalid_param(name, "wrong type (expected a number)")),
    }
}

fn get_bool(body: &Value, name: &str) -> Result<Option<bool>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid_param(name, "wrong type (expected true or false)")),
    }
}

/// `bad_words` / `stop_words`: a string or a (nested) list of strings; empty strings are
/// dropped (`""` = none).
fn get_words(body: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    fn walk(v: &Value, out: &mut Vec<String>, depth: usize) -> bool {
        match v {
            Value::String(s) => {
                if !s.is_empty() {
                    out.push(s.clone());
                }
                true
            }
            Value::Array(a) if depth < 4 => a.iter().all(|x| walk(x, out, depth + 1)),
            Value::Null => true,
            _ => false,
        }
    }
    let mut out = Vec::new();
    match body.get(name) {
        None => Ok(out),
        Some(v) if walk(v, &mut out, 0) => Ok(out),
        Some(_) => Err(ApiError::invalid_param(name, "wrong type (expected a string or a list of strings)")),
    }
}

/// A parsed generate request.
struct Generate {
    text: String,
    max_tokens: Option<i64>,
    params: SamplingParams,
    bad_words: Vec<String>,
    log_probs: bool,
    exclude_input: bool,
    stream: Option<bool>,
}

fn parse(body: &Value, engine: &Engine, limits: &limits::Limits) -> Result<Generate, ApiError> {
    let text = get_str(body, "text_input")?.ok_or_else(|| ApiError::invalid_param("text_input", "missing"))?;
    if text.is_empty() {
        return Err(ApiError::invalid_param("text_input", "the prompt is empty"));
    }
    let max_tokens = get_i64(body, "max_tokens")?;
    let temperature = limits::ranged("temperature", get_f64(body, "temperature")?, 1.0, 0.0, 1e4)?;
    let top_k = get_i64(body, "top_k")?.or(get_i64(body, "runtime_top_k")?).unwrap_or(0);
    if top_k < 0 {
        return Err(ApiError::invalid_param("top_k", format!("{top_k} (must be ≥ 0; 0 = off)")));
    }
    let top_p = limits::ranged("top_p", get_f64(body, "top_p")?.or(get_f64(body, "runtime_top_p")?), 0.0, 0.0, 1.0)?;
    let greedy = temperature == 0.0 || top_k == 1 || (top_k == 0 && top_p == 0.0);
    let repetition_penalty = limits::ranged("repetition_penalty", get_f64(body, "repetition_penalty")?, 1.0, 0.0, 1e4)?;
    if repetition_penalty <= 0.0 {
        return Err(ApiError::invalid_param("repetition_penalty", format!("{repetition_penalty} (must be > 0)")));
    }
    let presence_penalty = limits::ranged("presence_penalty", get_f64(body, "presence_penalty")?, 0.0, -1e4, 1e4)?;
    let frequency_penalty = limits::ranged("frequency_penalty", get_f64(body, "frequency_penalty")?, 0.0, -1e4, 1e4)?;
    let length_penalty = limits::ranged("length_penalty", get_f64(body, "length_penalty")?, 1.0, -1e4, 1e4)?;
    let beam_width = match get_i64(body, "beam_width")? {
        None => 1,
        Some(b) if (1..=1024).contains(&b) => b as usize,
        Some(b) => return Err(ApiError::invalid_param("beam_width", format!("{b} (must be ≥ 1)"))),
    };
    let end_id = get_i64(body, "end_id")?.map(|id| limits::token_id("end_id", id, engine.vocab_size)).transpose()?;
    if let Some(id) = get_i64(body, "pad_id")? {
        limits::token_id("pad_id", id, engine.vocab_size)?;
    }
    let min_length = match get_i64(body, "min_length")?.or(get_i64(body, "min_tokens")?) {
        None => 0,
        Some(m) if (0..=i32::MAX as i64).contains(&m) => m as usize,
        Some(m) => return Err(ApiError::invalid_param("min_length", format!("{m} (must be ≥ 0)"))),
    };
    let stop = get_words(body, "stop_words")?;
    limits::check_stop(&stop, limits, "stop_words")?;
    let bad_words = get_words(body, "bad_words")?;
    limits::check_stop(&bad_words, limits, "bad_words")?;
    let params = SamplingParams {
        n: beam_width,
        temperature: if greedy { 0.0 } else { temperature },
        top_k: if greedy { 0 } else { top_k },
        top_p: if greedy || top_p == 0.0 { 1.0 } else { top_p },
        repetition_penalty,
        presence_penalty,
        frequency_penalty,
        length_penalty,
        beam_width,
        seed: get_u64(body, "random_seed")?.or(get_u64(body, "seed")?),
        stop_strings: stop,
        end_id,
        min_new_tokens: min_length,
        ..SamplingParams::default()
    };
    Ok(Generate {
        text,
        max_tokens,
        params,
        bad_words,
        log_probs: get_bool(body, "return_log_probs")?.unwrap_or(false),
        exclude_input: get_bool(body, "exclude_input_in_output")?.unwrap_or(false),
        stream: get_bool(body, "stream")?,
    })
}

/// `POST /v2/models/<m>/generate`.
pub async fn generate(state: State<Arc<AppState>>, model: Path<String>, headers: HeaderMap, body: Body) -> Response {
    run(state, model, headers, body, false).await
}

/// `POST /v2/models/<m>/generate_stream`.
pub async fn generate_stream(state: State<Arc<AppState>>, model: Path<String>, headers: HeaderMap, body: Body) -> Response {
    run(state, model, headers, body, true).await
}

async fn run(State(state): State<Arc<AppState>>, Path(model): Path<String>, headers: HeaderMap, body: Body, stream: bool) -> Response {
    match generate_inner(&state, &model, &headers, body, stream).await {
        Ok(r) => r,
        Err(e) => TritonError(e).into_response(),
    }
}

async fn generate_inner(state: &Arc<AppState>, model: &str, headers: &HeaderMap, body: Body, stream_route: bool) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let engine = state.ready_engine()?;
    let inflight = state.inflight_token();
    check_model(state, model)?;
    let bytes = limits::read_body(headers, body, state.config.limits.max_body_bytes).await?;
    let body = limits::parse_object(&bytes)?;
    let mut g = parse(&body, &engine, &state.config.limits)?;
    // The route decides (`stream` in the body is accepted and checked, as Triton passes it
    // to the model, but /generate always answers with one JSON object).
    let _ = g.stream;
    let stream = stream_route;
    let tok = engine.tokenizer.clone();
    let (text, bad) = (g.text.clone(), std::mem::take(&mut g.bad_words));
    let (prompt, bad_words) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let prompt = tok.encode(&text, true).map_err(|e| e.to_string())?;
        let bad: Vec<Vec<u32>> = bad.iter().map(|w| tok.encode(w, false)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        Ok((prompt, bad))
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("tokenizer: {e}")))?;
    if prompt.is_empty() {
        return Err(ApiError::invalid_param("text_input", "the prompt has no tokens"));
    }
    g.params.bad_words = bad_words.into_iter().filter(|w| !w.is_empty()).collect();
    g.params.max_new_tokens = limits::generation_budget(prompt.len(), g.max_tokens, engine.max_seq_len, "max_tokens")?;
    if g.log_probs {
        g.params.logprobs = Some(0);
    }
    let beam = g.params.beam_width > 1;
    let job = engine::submit(state, &engine, prompt, g.params, arrived).map_err(|e| ApiError::from_executor(e, rename))?;
    if stream {
        let format = TritonStream { model: model.to_string(), log_probs: g.log_probs };
        return Ok(sse::stream(vec![job], format, inflight));
    }
    let out = job.collect().await;
    drop(inflight);
    if let Some(FinishReason::Error(e)) = &out.finish {
        return Err(ApiError::internal(format!("generation failed: {e}")));
    }
    let prefix = if g.exclude_input { "" } else { g.text.as_str() };
    let mut resp = json!({"model_name": model, "model_version": "1", "text_output": format!("{prefix}{}", out.text)});
    if beam {
        beam_fields(&mut resp, &out.beams, prefix);
    } else if g.log_probs {
        resp["cum_log_probs"] = json!(out.cum_logprob);
        resp["output_log_probs"] = json!(out.logprobs.iter().map(|l| l.logprob).collect::<Vec<_>>());
    }
    Ok(Json(resp).into_response())
}

/// Beam search outputs: `text_output` and `cum_log_probs` as lists, one entry per beam.
fn beam_fields(resp: &mut Value, beams: &[BeamOutput], prefix: &str) {
    resp["text_output"] = json!(beams.iter().map(|b| format!("{prefix}{}", b.text)).collect::<Vec<_>>());
    resp["cum_log_probs"] = json!(beams.iter().map(|b| b.cum_logprob).collect::<Vec<_>>());
}

struct TritonStream {
    model: String,
    log_probs: bool,
}

impl StreamFormat for TritonStream {
    fn output(&mut self, _index: usize, out: &Output) -> Vec<Event> {
        if let Some(FinishReason::Error(e)) = &out.finish {
            return vec![json_event(&json!({"error": format!("generation failed: {e}")}))];
        }
        let has_logprobs = self.log_probs && !out.logprobs.is_empty();
        if out.text.is_empty() && out.finish.is_none() && !has_logprobs {
            return Vec::new();
        }
        let mut v = json!({"model_name": self.model, "model_version": "1", "text_output": out.text});
        if !out.beams.is_empty() {
            beam_fields(&mut v, &out.beams, "");
        } else if self.log_probs {
            v["cum_log_probs"] = json!(out.cum_logprob);
            v["output_log_probs"] = json!(out.logprobs.iter().map(|l| l.logprob).collect::<Vec<_>>());
        }
        vec![json_event(&v)]
    }
}

fn tensor(name: &str, datatype: &str, shape: &[i64]) -> Value {
    json!({"name": name, "datatype": datatype, "shape": shape})
}

/// `GET /v2/models/<m>`: the model's metadata, shaped like Triton's.
pub async fn metadata(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    if let Err(e) = check_model(&state, &model).and_then(|_| state.ready_engine().map(|_| ())) {
        return TritonError(e).into_response();
    }
    let platform = if model == "ensemble" { "ensemble" } else { "inflight" };
    let inputs = vec![
        tensor("text_input", "BYTES", &[-1, 1]),
        tensor("max_tokens", "INT32", &[-1, 1]),
        tensor("bad_words", "BYTES", &[-1, -1]),
        tensor("stop_words", "BYTES", &[-1, -1]),
        tensor("end_id", "INT32", &[-1, 1]),
        tensor("pad_id", "INT32", &[-1, 1]),
        tensor("top_k", "INT32", &[-1, 1]),
        tensor("top_p", "FP32", &[-1, 1]),
        tensor("temperature", "FP32", &[-1, 1]),
        tensor("length_penalty", "FP32", &[-1, 1]),
        tensor("repetition_penalty", "FP32", &[-1, 1]),
        tensor("min_length", "INT32", &[-1, 1]),
        tensor("presence_penalty", "FP32", &[-1, 1]),
        tensor("frequency_penalty", "FP32", &[-1, 1]),
        tensor("random_seed", "UINT64", &[-1, 1]),
        tensor("return_log_probs", "BOOL", &[-1, 1]),
        tensor("exclude_input_in_output", "BOOL", &[-1, 1]),
        tensor("beam_width", "INT32", &[-1, 1]),
        tensor("stream", "BOOL", &[-1, 1]),
    ];
    let outputs = vec![tensor("text_output", "BYTES", &[-1, -1]), tensor("cum_log_probs", "FP32", &[-1, -1]), tensor("output_log_probs", "FP32", &[-1, -1, -1])];
    Json(json!({"name": model, "versions": ["1"], "platform": platform, "inputs": inputs, "outputs": outputs})).into_response()
}

/// `GET /v2/models/<m>/ready`: 200 when the model is ready, 404 for an unknown model.
pub async fn model_ready(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    if let Err(e) = check_model(&state, &model) {
        return TritonError(e).into_response();
    }
    if state.is_ready() { StatusCode::OK.into_response() } else { StatusCode::SERVICE_UNAVAILABLE.into_response() }
}

/// `GET /v2`: server metadata.
pub async fn server_metadata() -> Response {
    Json(json!({"name": "inflight", "version": env!("CARGO_PKG_VERSION"), "extensions": ["generate"]})).into_response()
}
