//! The scheduler's limits ([`SchedulerConfig`]) and its errors.
//!
//! Invariants after [`SchedulerConfig::validate`]: every limit is at least 1, and
//! `max_num_tokens >= tokens_per_block`, so a context chunk of one block always fits a step
//! (chunks other than the last are whole blocks).

use thiserror::Error;

use super::RequestId;
use crate::kv::KvConfigError;

/// How the scheduler trades KV-cache utilisation for never pausing a started request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacityPolicy {
    /// A request is admitted only when blocks for its whole prompt + `max_new_tokens` can be
    /// reserved; a started request never pauses.
    GuaranteedNoEvict,
    /// Admit while blocks for the next step exist; when a running request needs a block and
    /// none is free, the newest running request is preempted (recomputed later).
    MaxUtilization,
}

/// Batch and sequence limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Requests admitted at once (a beam group counts its width), and items of one step.
    pub max_batch_size: usize,
    /// Tokens computed in one step, all items together.
    pub max_num_tokens: usize,
    /// Waiting requests; a submit beyond it is refused.
    pub max_queue_size: usize,
    /// Prompt + generated tokens of one request.
    pub max_seq_len: usize,
    pub policy: CapacityPolicy,
    /// Split long contexts into whole-block chunks over several steps.
    pub chunked_context: bool,
}

impl SchedulerConfig {
    /// Checks the limits against each other and the block size.
    pub fn validate(&self, tokens_per_block: usize) -> Result<(), SchedulerError> {
        for (field, v) in [
            ("max_batch_size", self.max_batch_size),
            ("max_queue_size", self.max_queue_size),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return Err(SchedulerError::Zero { field });
            }
        }
        if self.max_num_tokens < tokens_per_block {
            return Err(SchedulerError::MaxNumTokens {
                max_num_tokens: self.max_num_tokens,
                tokens_per_block,
            });
        }
        Ok(())
    }
}

/// A configuration the scheduler cannot run with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("invalid KV cache config: {0}")]
    Kv(#[from] KvConfigError),
    #[error("{field} = 0: must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "max_num_tokens = {max_num_tokens} must be at least tokens_per_block = {tokens_per_block}"
    )]
    MaxNumTokens {
        max_num_tokens: usize,
        tokens_per_block: usize,
    },
}

/// Why a request was refused at submission (it would never run otherwise).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    #[error("queue full: {queued} waiting requests, max_queue_size = {max_queue_size}")]
    QueueFull {
        queued: usize,
        max_queue_size: usize,
    },
    #[error("request id {id} is already in use")]
    DuplicateId { id: RequestId },
    #[error("empty prompt: a request needs at least 1 prompt token")]
    EmptyPrompt,
    #[error("max_new_tokens = 0: a request must generate at least 1 token")]
    ZeroMaxNewTokens,
    #[error(
        "prompt {prompt_len} + max_new_tokens {max_new_tokens} = {total} tokens exceeds max_seq_len = {max_seq_len}"
    )]
    ExceedsMaxSeqLen {
        prompt_len: usize,
        max_new_tokens: usize,
        total: usize,
        max_seq_len: usize,
    },
    #[error(
        "prompt {prompt_len} + max_new_tokens {max_new_tokens} needs {needed_blocks} KV blocks \
         of {tokens_per_block} tokens, but the pool has {usable_blocks}"
    )]
    ExceedsKvPool {
        prompt_len: usize,
        max_new_tokens: usize,
        needed_blocks: usize,
        tokens_per_block: usize,
        usable_blocks: usize,
    },
    #[error(
        "prompt of {prompt_len} tokens exceeds max_num_tokens = {max_num_tokens} and chunked_context is off"
    )]
    PromptExceedsMaxNumTokens {
        prompt_len: usize,
        max_num_tokens: usize,
    },
    #[error(
        "beam_width = {beam_width} must be at least 1 and at most max_batch_size = {max_batch_size} \
         and max_num_tokens = {max_num_tokens} (all beams are scheduled in one step)"
    )]
    BeamWidth {
        beam_width: usize,
        max_batch_size: usize,
        max_num_tokens: usize,
    },
}
