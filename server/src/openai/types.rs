//! OpenAI request bodies as parsed (responses are written with `serde_json::json!` in the
//! route modules, field for field as OpenAI writes them).
//!
//! A body is parsed twice from the same JSON value: once as [`CommonParams`] (the sampling
//! fields both routes share) and once as the route's own type ([`CompletionRequest`],
//! [`ChatRequest`]); unknown fields are ignored. Numbers that must be integers are `i64` and
//! floats `f64`, so that a float where an integer belongs, or an out-of-range value, is a 400
//! naming the field, and range checks give a message rather than a parse failure.

use serde::Deserialize;
use std::collections::HashMap;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and `choices: []`) before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Fields shared by `/v1/completions` and `/v1/chat/completions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<i64>,
    pub best_of: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Validated (integer ids in the vocabulary, values in [-100, 100]); non-empty is refused
    /// as unsupported.
    pub logit_bias: Option<HashMap<String, f64>>,
    pub user: Option<String>,
    // Extensions (as vLLM names them).
    /// Keep the k most likely tokens; 0 or -1 = off.
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub ignore_eos: Option<bool>,
    pub min_tokens: Option<i64>,
    pub stop_token_ids: Option<Vec<i64>>,
    /// Validated; non-empty is refused as unsupported.
    pub allowed_token_ids: Option<Vec<i64>>,
    /// Beam search (vLLM's extension): `best_of` beams (default `n`), the `n` best returned.
    pub use_beam_search: Option<bool>,
    /// Beam search: hypotheses are ranked by `cum_logprob / len^length_penalty`.
    pub length_penalty: Option<f64>,
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<i64>),
    IdLists(Vec<Vec<i64>>),
}

/// `/v1/completions` fields beyond [`CommonParams`].
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Option<Prompt>,
    /// Log-probs of the chosen token and of the `logprobs` most likely ones.
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
}

/// One part of a message's content (only `text` parts are supported).
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A message's content: a string or a list of parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
    pub name: Option<String>,
}

/// `/v1/chat/completions` fields beyond [`CommonParams`].
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub messages: Option<Vec<Message>>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub tools: Option<serde_json::Value>,
}
