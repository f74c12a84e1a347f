//! What goes in (a [`Request`]) and what comes out (a stream of [`Output`]s ending with a
//! [`FinishReason`]), and the [`OutputSink`] outputs are delivered to.

use crate::sampling::{SamplingParams, TokenLogprob};

/// A generation request: prompt token ids and sampling parameters.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
}

/// Why a request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FinishReason {
    /// An end id, a stop token sequence or a stop string.
    Stop,
    /// `max_new_tokens`, or the model's context is full.
    Length,
    /// Cancelled by the caller (or the receiver went away).
    Cancelled,
    /// The backend failed; the message says how.
    Error(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error(_) => "error",
        }
    }
}

/// Log-probabilities of one generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub id: u32,
    pub logprob: f32,
    /// The most likely tokens at this step, when asked for.
    pub top: Vec<TokenLogprob>,
}

/// One piece of a request's output stream. The last one has `finish` set.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Tokens released by this piece (never a stop sequence's tokens).
    pub token_ids: Vec<u32>,
    /// Text released by this piece (whole UTF-8 characters; never a stop string).
    pub text: String,
    /// One entry per token in `token_ids`, when log-probs were asked for.
    pub logprobs: Vec<TokenLogprobs>,
    /// Sum of the log-probs of all released tokens so far.
    pub cum_logprob: f32,
    pub finish: Option<FinishReason>,
    pub prompt_tokens: usize,
    /// Tokens released so far, this piece included.
    pub generated_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub reused_tokens: usize,
    /// Beam search only, in the final output: the `n` best hypotheses, best first (the
    /// first is also in `token_ids` / `text` / `cum_logprob`). Empty otherwise.
    pub beams: Vec<BeamOutput>,
}

/// One beam search hypothesis of a final [`Output`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BeamOutput {
    /// Generated tokens, without the end id / stop token sequence that ended it.
    pub token_ids: Vec<u32>,
    pub text: String,
    /// Sum of the chosen tokens' log-probs (the end token's included when it ended).
    pub cum_logprob: f32,
    /// `cum_logprob / len^length_penalty` (`len` counts the end token).
    pub score: f32,
}

/// Where a request's outputs go. `send` returns false once nobody listens; the executor
/// then cancels the request.
pub trait OutputSink: Send {
    fn send(&mut self, out: Output) -> bool;
}

impl OutputSink for std::sync::mpsc::Sender<Output> {
    fn send(&mut self, out: Output) -> bool {
        std::sync::mpsc::Sender::send(self, out).is_ok()
    }
}

impl<F: FnMut(Output) -> bool + Send> OutputSink for F {
    fn send(&mut self, out: Output) -> bool {
        self(out)
    }
}
