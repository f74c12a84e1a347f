//! `POST /v1/chat/completions`: the messages rendered with the model's own chat template
//! (sandboxed minijinja, generation prompt added), `n` choices, streamed
//! (`chat.completion.chunk`s: a role chunk per choice, content deltas, a final chunk per
//! choice with an empty delta and its `finish_reason`, an optional usage chunk, then
//! `data: [DONE]`) or not.
//!
//! Messages: `role` one of system, developer, user, assistant, tool; `content` a string or a
//! list of `{"type": "text", "text": ...}` parts (other part types are refused). A template
//! that raises (e.g. roles out of order) is a 400; a broken template is a 500. Tools are
//! not supported (400).

use super::types::{ChatRequest, Content, Message};
use super::{check_request, collect_choices, encode, error_event, response, sampling, submit_all, token_bytes, token_text, Meta, StreamCore};
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
use models::tokenizer::{ChatMessage, TokenizerError};
use serde_json::{json, Value};
use std::sync::Arc;

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

pub async fn handler(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match run(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn messages(msgs: Option<Vec<Message>>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(msgs) = msgs else {
        return Err(ApiError::invalid_param("messages", "missing"));
    };
    if msgs.is_empty() {
        return Err(ApiError::invalid_param("messages", "empty: at least one message is needed"));
    }
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.into_iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(ApiError::invalid_param(format!("messages[{i}].role"), format!("must be one of {}", ROLES.join(", "))));
        }
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => s.push_str(&t),
                        ("text", None) => return Err(ApiError::invalid_param(format!("messages[{i}].content[{j}].text"), "missing")),
                        _ => return Err(ApiError::invalid_param(format!("messages[{i}].content[{j}].type"), "only text parts are supported")),
                    }
                }
                s
            }
        };
        out.push(ChatMessage::new(m.role, content));
    }
    Ok(out)
}

/// The rendered and tokenized chat.
async fn prompt_ids(engine: &Arc<Engine>, msgs: Vec<ChatMessage>) -> Result<Vec<u32>, ApiError> {
    if engine.tokenizer.chat_template().is_none() {
        return Err(ApiError::bad_request("this model has no chat template: use /v1/completions"));
    }
    let tok = engine.tokenizer.clone();
    let text = tokio::task::spawn_blocking(move || tok.apply_chat_template(&msgs, true))
        .await
        .map_err(|e| ApiError::internal(format!("chat template task failed: {e}")))?
        .map_err(|e| match e {
            TokenizerError::TemplateRaised(m) => ApiError::invalid_param("messages", format!("the chat template refused them: {m}")),
            TokenizerError::TemplateOutputTooLarge { .. } => ApiError::invalid_param("messages", e.to_string()),
            other => ApiError::internal(other.to_string()),
        })?;
    let ids = encode(engine, text, false).await?;
    if ids.is_empty() {
        return Err(ApiError::invalid_param("messages", "the rendered chat is empty"));
    }
    Ok(ids)
}

async fn run(state: &Arc<AppState>, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let c = check_request(state, headers, body).await?;
    let req: ChatRequest = limits::typed(&c.body)?;
    let max_lp = state.config.limits.max_logprobs;
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(n)) if !(0..=max_lp as i64).contains(&n) => return Err(ApiError::invalid_param("top_logprobs", format!("{n} (must be in 0..={max_lp})"))),
        (false, Some(n)) if n > 0 => return Err(ApiError::invalid_param("top_logprobs", "needs logprobs: true")),
        (true, n) => Some(n.unwrap_or(0) as usize),
        (false, _) => None,
    };
    if req.tools.as_ref().is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(ApiError::invalid_param("tools", "not supported by this server"));
    }
    let s = sampling(&c.common, &c.engine, &state.config.limits, logprobs)?;
    let msgs = messages(req.messages)?;
    let ids = prompt_ids(&c.engine, msgs).await?;
    let prompt_tokens = ids.len();
    let max_tokens = req.max_completion_tokens.or(c.common.max_tokens);
    let jobs = submit_all(state, &c.engine, vec![ids], &s, max_tokens, c.arrived)?;
    if s.stream {
        let core = StreamCore::new(Meta::new(state, "chatcmpl", "chat.completion.chunk", true), &c.engine, logprobs, &s, prompt_tokens);
        let format = ChatStream { core, choices: jobs.len() };
        return Ok(sse::stream(jobs, format, c.inflight));
    }
    let outs = collect_choices(jobs, &s).await?;
    let completion_tokens = outs.iter().map(|o| o.tokens).sum();
    let mut choices = Vec::with_capacity(outs.len());
    for (i, o) in outs.into_iter().enumerate() {
        let lp = logprobs.map(|top| chat_logprobs(&c.engine, &o.logprobs, top > 0)).unwrap_or(Value::Null);
        choices.push(json!({"index": i, "message": {"role": "assistant", "content": o.text}, "logprobs": lp, "finish_reason": o.finish}));
    }
    drop(c.inflight);
    Ok(response(&Meta::new(state, "chatcmpl", "chat.completion", true), choices, prompt_tokens, completion_tokens))
}

/// OpenAI's chat `logprobs` object: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
pub fn chat_logprobs(engine: &Engine, lps: &[TokenLogprobs], with_top: bool) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            let top: Vec<Value> = if with_top {
                l.top.iter().map(|c| json!({"token": token_text(engine, c.id), "logprob": c.logprob, "bytes": token_bytes(engine, c.id)})).collect()
            } else {
                Vec::new()
            };
            json!({"token": token_text(engine, l.id), "logprob": l.logprob, "bytes": token_bytes(engine, l.id), "top_logprobs": top})
        })
        .collect();
    json!({"content": content})
}

struct ChatStream {
    core: StreamCore,
    choices: usize,
}

impl ChatStream {
    fn chunk(&self, index: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> Event {
        self.core.chunk(json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}))
    }
}

impl StreamFormat for ChatStream {
    fn start(&mut self) -> Vec<Event> {
        (0..self.choices).map(|i| self.chunk(i, json!({"role": "assistant", "content": ""}), Value::Null, None)).collect()
    }

    fn output(&mut self, index: usize, out: &Output) -> Vec<Event> {
        let mut evs = Vec::new();
        self.core.completion_tokens += out.token_ids.len();
        let lp = match self.core.logprobs {
            Some(top) if !out.logprobs.is_empty() => chat_logprobs(&self.core.engine, &out.logprobs, top > 0),
            _ => Value::Null,
        };
        if !out.text.is_empty() || !lp.is_null() {
            evs.push(self.chunk(index, json!({"content": out.text}), lp, None));
        }
        match &out.finish {
            None => {}
            Some(FinishReason::Error(e)) => {
                evs.push(self.chunk(index, json!({}), Value::Null, Some("error")));
                evs.push(error_event(&format!("generation failed: {e}")));
            }
            Some(f) => evs.push(self.chunk(index, json!({}), Value::Null, Some(finish_name(f)))),
        }
        evs
    }

    fn end(&mut self) -> Vec<Event> {
        self.core.end()
    }
}
