//! One request's scheduling state.
//!
//! A request's `tokens` are its prompt followed by every token sampled so far; positions
//! `0..computed` are in the KV cache (through `table`). Phases: `Waiting` (queued, holds no
//! blocks, `computed == 0`), `Context` (positions up to `tokens.len()` still to compute;
//! the chunk that reaches the end yields logits), `Generation` (exactly the last sampled
//! token is uncomputed). A preempted request returns to `Waiting` with all its tokens, to be
//! recomputed as one context (`recompute`), and keeps its remaining `max_new_tokens`.
//!
//! Invariants: `prompt_len <= tokens.len() <= prompt_len + max_new_tokens`;
//! `computed <= tokens.len()`; the table covers `computed` positions and never more than
//! `kv_limit()` positions' worth of blocks; the request is done (never scheduled again) once
//! `tokens.len() == prompt_len + max_new_tokens`, and the last token is never computed, so
//! at most `kv_limit() = prompt_len + max_new_tokens - 1` positions are ever cached.

use crate::kv::{BlockId, ROOT, blocks_for};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Waiting,
    Context,
    Generation,
}

/// What the current step computes for the request, until `on_step_done` confirms it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scheduled {
    pub(crate) len: usize,
    pub(crate) needs_logits: bool,
}

/// How far the request's full blocks are registered for reuse: `blocks` leading blocks, the
/// last with entry serial `parent`; `broken` after a collision (later blocks stay private).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegChain {
    pub(crate) blocks: usize,
    pub(crate) parent: u64,
    pub(crate) broken: bool,
}

impl RegChain {
    pub(crate) const EMPTY: RegChain = RegChain {
        blocks: 0,
        parent: ROOT,
        broken: false,
    };
}

#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) tokens: Vec<u32>,
    pub(crate) prompt_len: usize,
    pub(crate) max_new_tokens: usize,
    pub(crate) computed: usize,
    pub(crate) table: Vec<BlockId>,
    pub(crate) phase: Phase,
    pub(crate) recompute: bool,
    pub(crate) scheduled: Option<Scheduled>,
    pub(crate) reg: RegChain,
}

impl Request {
    pub(crate) fn new(prompt: Vec<u32>, max_new_tokens: usize) -> Self {
        Request {
            prompt_len: prompt.len(),
            tokens: prompt,
            max_new_tokens,
            computed: 0,
            table: Vec::new(),
            phase: Phase::Waiting,
            recompute: false,
            scheduled: None,
            reg: RegChain::EMPTY,
        }
    }

    /// Prompt + `max_new_tokens`.
    pub(crate) fn max_len(&self) -> usize {
        self.prompt_len + self.max_new_tokens
    }

    /// The most positions ever cached (the final token is never computed).
    pub(crate) fn kv_limit(&self) -> usize {
        self.max_len() - 1
    }

    /// All tokens generated: waits for `finish`, never scheduled again.
    pub(crate) fn is_done(&self) -> bool {
        self.tokens.len() >= self.max_len()
    }

    /// Tokens not yet in the KV cache.
    pub(crate) fn remaining(&self) -> usize {
        self.tokens.len().saturating_sub(self.computed)
    }

    /// Positions the table covers beyond `computed`.
    pub(crate) fn spare_positions(&self, tpb: usize) -> usize {
        (self.table.len() * tpb).saturating_sub(self.computed)
    }

    /// Blocks the request holds at most over its life.
    pub(crate) fn max_blocks(&self, tpb: usize) -> usize {
        blocks_for(self.kv_limit(), tpb)
    }

    /// May this context be split into chunks? With chunked context, and always for a
    /// recomputation after preemption (its length can exceed `max_num_tokens`).
    pub(crate) fn chunkable(&self, chunked_context: bool, max_num_tokens: usize) -> bool {
        chunked_context || self.recompute || self.remaining() > max_num_tokens
    }

    /// Back to the queue after preemption; the caller released the blocks.
    pub(crate) fn reset_for_recompute(&mut self) {
        self.table.clear();
        self.computed = 0;
        self.phase = Phase::Waiting;
        self.recompute = true;
        self.scheduled = None;
        self.reg = RegChain::EMPTY;
    }
}
