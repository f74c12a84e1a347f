//! `POST /v1/completions`: text completion of one or more prompts (strings or token-id
//! lists), `n` choices each, streamed (`text_completion` chunks, a final chunk per choice with
//! its `finish_reason`, an optional usage chunk, then `data: [DONE]`) or not.
//!
//! `finish_reason`: `stop` (end token or stop string), `length` (`max_tokens` or the context),
//! `abort` (cancelled by an admin abort or a drain timeout). A generation error is a 500
//! before the headers, and after them a chunk with `finish_reason: "error"` followed by an
//! `{"error": {...}}` event and `[DONE]`.

use super::types::{CompletionRequest, Prompt};
use super::{check_request, collect_choices, encode, error_event, response, sampling, submit_all, token_text, Meta, StreamCore};
use crate::engine::{finish_name, Engine};
use crate::error::ApiError;
use crate::limits;
use crate::sse::{self, StreamFormat};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use host_runtime::executor::{FinishReason, Output, TokenLogprobs};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub async fn handler(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match run(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A prompt as token ids, with its text for `echo`.
struct PromptIn {
    ids: Vec<u32>,
    text: String,
}

async fn prompts(engine: &Arc<Engine>, prompt: Option<Prompt>, max_prompts: usize) -> Result<Vec<PromptIn>, ApiError> {
    let empty = || ApiError::invalid_param("prompt", "the prompt is empty");
    let check_ids = |ids: Vec<i64>| -> Result<PromptIn, ApiError> {
        if ids.is_empty() {
            return Err(empty());
        }
        let ids: Vec<u32> = ids.into_iter().map(|id| limits::token_id("prompt", id, engine.vocab_size)).collect::<Result<_, _>>()?;
        let text = engine.tokenizer.decode(&ids, false).unwrap_or_default();
        Ok(PromptIn { ids, text })
    };
    let list = match prompt {
        None => return Err(ApiError::invalid_param("prompt", "missing")),
        Some(Prompt::Text(t)) => vec![Ok(t)],
        Some(Prompt::Texts(v)) => v.into_iter().map(Ok).collect(),
        Some(Prompt::Ids(ids)) => vec![Err(ids)],
        Some(Prompt::IdLists(v)) => v.into_iter().map(Err).collect(),
    };
    if list.is_empty() {
        return Err(empty());
    }
    if list.len() > max_prompts {
        return Err(ApiError::invalid_param("prompt", format!("{} prompts (at most {max_prompts})", list.len())));
    }
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        out.push(match p {
            Err(ids) => check_ids(ids)?,
            Ok(text) => {
                if text.is_empty() {
                    return Err(empty());
                }
                let ids = encode(engine, text.clone(), true).await?;
                if ids.is_empty() {
                    return Err(empty());
                }
                PromptIn { ids, text }
            }
        });
    }
    Ok(out)
}

async fn run(state: &Arc<AppState>, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let c = check_request(state, headers, body).await?;
    let req: CompletionRequest = limits::typed(&c.body)?;
    let max_lp = state.config.limits.max_logprobs;
    let logprobs = match req.logprobs {
        None => None,
        Some(n) if (0..=max_lp as i64).contains(&n) => Some(n as usize),
        Some(n) => return Err(ApiError::invalid_param("logprobs", format!("{n} (must be in 0..={max_lp})"))),
    };
    let s = sampling(&c.common, &c.engine, &state.config.limits, logprobs)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_param("suffix", "not supported by this server"));
    }
    let echo = req.echo.unwrap_or(false);
    if echo && logprobs.is_some() {
        return Err(ApiError::invalid_param("echo", "echo with logprobs is not supported (prompt log-probs are not computed)"));
    }
    let prompts = prompts(&c.engine, req.prompt, state.config.limits.max_prompts).await?;
    let prompt_tokens: usize = prompts.iter().map(|p| p.ids.len()).sum();
    let echoes: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(if echo { p.text.clone() } else { String::new() }, s.n)).collect();
    let jobs = submit_all(state, &c.engine, prompts.into_iter().map(|p| p.ids).collect(), &s, c.common.max_tokens, c.arrived)?;
    let meta = Meta::new(state, "cmpl", "text_completion", false);
    if s.stream {
        let choices = jobs.len();
        let format = CompletionStream { core: StreamCore::new(meta, &c.engine, logprobs, &s, prompt_tokens), echoes, offsets: vec![0; choices] };
        return Ok(sse::stream(jobs, format, c.inflight));
    }
    let outs = collect_choices(jobs, &s).await?;
    let completion_tokens = outs.iter().map(|o| o.tokens).sum();
    let mut choices = Vec::with_capacity(outs.len());
    for (i, o) in outs.into_iter().enumerate() {
        let lp = logprobs.map(|top| completion_logprobs(&c.engine, &o.logprobs, echoes[i].len(), top > 0).0).unwrap_or(Value::Null);
        choices.push(json!({"index": i, "text": format!("{}{}", echoes[i], o.text), "logprobs": lp, "finish_reason": o.finish}));
    }
    drop(c.inflight);
    Ok(response(&meta, choices, prompt_tokens, completion_tokens))
}

/// OpenAI's completion `logprobs` object for `lps`, text offsets starting at `offset`;
/// returns it and the offset after the last token.
pub fn completion_logprobs(engine: &Engine, lps: &[TokenLogprobs], mut offset: usize, with_top: bool) -> (Value, usize) {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for l in lps {
        let t = token_text(engine, l.id);
        offsets.push(offset);
        offset += t.len();
        tokens.push(t);
        token_logprobs.push(l.logprob);
        if with_top {
            let mut m = Map::new();
            for c in &l.top {
                m.insert(token_text(engine, c.id), json!(c.logprob));
            }
            top.push(Value::Object(m));
        }
    }
    let top = if with_top { json!(top) } else { Value::Null };
    (json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}), offset)
}

struct CompletionStream {
    core: StreamCore,
    /// Per choice: the prompt text still to send first (`echo`).
    echoes: Vec<String>,
    offsets: Vec<usize>,
}

impl CompletionStream {
    fn chunk(&self, index: usize, text: &str, logprobs: Value, finish: Option<&str>) -> Event {
        self.core.chunk(json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}))
    }
}

impl StreamFormat for CompletionStream {
    fn output(&mut self, index: usize, out: &Output) -> Vec<Event> {
        let mut evs = Vec::new();
        let echo = std::mem::take(&mut self.echoes[index]);
        let text = format!("{echo}{}", out.text);
        self.core.completion_tokens += out.token_ids.len();
        let lp = match self.core.logprobs {
            Some(top) if !out.logprobs.is_empty() => {
                let (v, next) = completion_logprobs(&self.core.engine, &out.logprobs, self.offsets[index] + echo.len(), top > 0);
                self.offsets[index] = next;
                v
            }
            _ => {
                self.offsets[index] += text.len();
                Value::Null
            }
        };
        match &out.finish {
            Some(FinishReason::Error(e)) => {
                if !text.is_empty() {
                    evs.push(self.chunk(index, &text, lp, None));
                }
                evs.push(self.chunk(index, "", Value::Null, Some("error")));
                evs.push(error_event(&format!("generation failed: {e}")));
            }
            Some(f) => evs.push(self.chunk(index, &text, lp, Some(finish_name(f)))),
            None if !text.is_empty() || !lp.is_null() => evs.push(self.chunk(index, &text, lp, None)),
            None => {}
        }
        evs
    }

    fn end(&mut self) -> Vec<Event> {
        self.core.end()
    }
}
