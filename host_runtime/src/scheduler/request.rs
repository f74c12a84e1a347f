//! One request's scheduling state.
//!
//! A request is one or more beams, each with its `tokens` (the prompt followed by every
//! token sampled so far) and its block `table`; positions `0..computed` of every beam are in
//! the KV cache (through its table). A normal request has one beam. A beam group (width
//! above 1) has one beam until its prompt is computed; the report of that step forks it
//! into `width` beams, and every later report reorders them (see
//! `Scheduler::on_beam_step_done`).
//! All beams of a group have the same length and advance together.
//!
//! Phases: `Waiting` (queued, holds no blocks, `computed == 0`), `Context` (positions up to
//! `tokens.len()` still to compute; the chunk that reaches the end yields logits),
//! `Generation` (exactly the last sampled token of each beam is uncomputed). A preempted
//! request (never a beam group) returns to `Waiting` with all its tokens, to be recomputed
//! as one context (`recompute`), and keeps its remaining `max_new_tokens`.
//!
//! Invariants: `prompt_len <= tokens.len() <= prompt_len + max_new_tokens` (every beam);
//! `computed <= tokens.len()`; each table covers `computed` positions and never more than
//! `kv_limit()` positions' worth of blocks; the request is done (never scheduled again) once
//! `tokens.len() == prompt_len + max_new_tokens`, and the last token is never computed, so
//! at most `kv_limit() = prompt_len + max_new_tokens - 1` positions are ever cached. A beam
//! group never holds more than `reservation()` distinct blocks, copies included.

use crate::kv::{BlockId, ROOT, blocks_for};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Waiting,
    Context,
    Generation,
}

/// What the current step computes for the request (for each of its beams), until
/// `on_step_done` / `on_beam_step_done` confirms it.
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

/// One beam: its tokens and its block table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Beam {
    pub(crate) tokens: Vec<u32>,
    pub(crate) table: Vec<BlockId>,
}

#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// One beam, or `width` beams once a beam group forked.
    pub(crate) beams: Vec<Beam>,
    /// Beam width: 1 for a normal request.
    pub(crate) width: usize,
    pub(crate) prompt_len: usize,
    pub(crate) max_new_tokens: usize,
    pub(crate) computed: usize,
    pub(crate) phase: Phase,
    pub(crate) recompute: bool,
    pub(crate) scheduled: Option<Scheduled>,
    pub(crate) reg: RegChain,
    /// Block copies (src, dst) of the last reorder, emitted with the next step.
    pub(crate) copies: Vec<(BlockId, BlockId)>,
}

impl Request {
    pub(crate) fn new(prompt: Vec<u32>, max_new_tokens: usize, width: usize) -> Self {
        Request {
            prompt_len: prompt.len(),
            beams: vec![Beam {
                tokens: prompt,
                table: Vec::new(),
            }],
            width: width.max(1),
            max_new_tokens,
            computed: 0,
            phase: Phase::Waiting,
            recompute: false,
            scheduled: None,
            reg: RegChain::EMPTY,
            copies: Vec::new(),
        }
    }

    /// Beam 0's tokens (every beam has the same length).
    pub(crate) fn tokens(&self) -> &[u32] {
        &self.beams[0].tokens
    }

    /// Beam 0's block table.
    pub(crate) fn table(&self) -> &[BlockId] {
        &self.beams[0].table
    }

    /// A beam group (never preempted, fully reserved at admission).
    pub(crate) fn is_group(&self) -> bool {
        self.width > 1
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
        self.tokens().len() >= self.max_len()
    }

    /// Tokens not yet in the KV cache (per beam).
    pub(crate) fn remaining(&self) -> usize {
        self.tokens().len().saturating_sub(self.computed)
    }

    /// Positions beam 0's table covers beyond `computed`.
    pub(crate) fn spare_positions(&self, tpb: usize) -> usize {
        (self.table().len() * tpb).saturating_sub(self.computed)
    }

    /// Blocks one beam's table holds at most.
    pub(crate) fn max_blocks(&self, tpb: usize) -> usize {
        blocks_for(self.kv_limit(), tpb)
    }

    /// Distinct blocks the request holds at most over its life: see [`reservation_blocks`].
    pub(crate) fn reservation(&self, tpb: usize) -> usize {
        reservation_blocks(self.prompt_len, self.max_new_tokens, self.width, tpb)
    }

    /// Distinct blocks held now (beams share blocks).
    pub(crate) fn held_blocks(&self) -> usize {
        if self.beams.len() == 1 {
            return self.beams[0].table.len();
        }
        let mut all: Vec<BlockId> = self
            .beams
            .iter()
            .flat_map(|b| b.table.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }

    /// Blocks still to be allocated at most: the reservation not yet held.
    pub(crate) fn outstanding(&self, tpb: usize) -> usize {
        self.reservation(tpb).saturating_sub(self.held_blocks())
    }

    /// Items a step of this request has: `width` for a forked group, else 1.
    pub(crate) fn items(&self) -> usize {
        self.beams.len()
    }

    /// May this context be split into chunks? With chunked context, and always for a
    /// recomputation after preemption (its length can exceed `max_num_tokens`).
    pub(crate) fn chunkable(&self, chunked_context: bool, max_num_tokens: usize) -> bool {
        chunked_context || self.recompute || self.remaining() > max_num_tokens
    }

    /// Back to the queue after preemption; the caller released the blocks.
    pub(crate) fn reset_for_recompute(&mut self) {
        for b in &mut self.beams {
            b.table.clear();
        }
        self.computed = 0;
        self.phase = Phase::Waiting;
        self.recompute = true;
        self.scheduled = None;
        self.reg = RegChain::EMPTY;
    }
}

/// Distinct blocks a request of `width` beams holds at most at any time: the prompt's full
/// blocks (shared by every beam, never copied) plus, per beam, every other block up to
/// `prompt + max_new_tokens - 1` positions (the partial block copies of a reorder are among
/// them). For `width` 1: the blocks of `prompt + max_new_tokens - 1` positions.
pub(crate) fn reservation_blocks(
    prompt_len: usize,
    max_new_tokens: usize,
    width: usize,
    tpb: usize,
) -> usize {
    let per_beam = blocks_for((prompt_len + max_new_tokens).saturating_sub(1), tpb);
    let shared = (prompt_len / tpb).min(per_beam);
    shared + width.max(1) * (per_beam - shared)
}
