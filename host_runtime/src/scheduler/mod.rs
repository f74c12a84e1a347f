//! The in-flight batching scheduler: a CPU state machine that never touches device memory.
//!
//! The executor drives it: [`Scheduler::submit`] / [`Scheduler::cancel`] at any time; per
//! iteration [`Scheduler::schedule`] plans a [`Step`], the backend performs its swaps and
//! computes its items, [`Scheduler::on_step_done`] reports each item's sampled token, and
//! [`Scheduler::finish`] ends a request whose generation the executor stopped.
//!
//! One step is three named stages:
//! 1. **capacity** (`capacity.rs`): which running and waiting requests fit the KV cache under
//!    the [`CapacityPolicy`]; FIFO admission (the queue head blocks those behind it, so
//!    nothing starves); preemption of the newest running requests under `MaxUtilization`;
//! 2. **micro-batch** (`microbatch.rs`): within `max_batch_size` items and `max_num_tokens`
//!    tokens, generation requests first (1 token each, oldest first), then context chunks
//!    (oldest first; a context that cannot be scheduled stops those behind it);
//! 3. **allocation** (`allocate.rs`): extend block tables to cover the scheduled tokens.
//!
//! Invariants (checked by [`Scheduler::check_invariants`] and [`Scheduler::check_step`]):
//! - every request is waiting or running, never both; waiting requests hold no blocks;
//!   running requests are at most `max_batch_size`;
//! - a block's refcount equals the number of block tables holding it; `free + used ==
//!   usable`; a block held by two requests is at the same index in both, and their tokens
//!   up to its end are identical; items only write to blocks their request alone holds;
//! - a step has at most `max_batch_size` items and `max_num_tokens` tokens; every context
//!   chunk but the last is a whole number of blocks; without chunked context a prompt is
//!   computed whole (only a recomputation after preemption may be chunked); every item's
//!   block table covers `start_pos + tokens.len()`; nothing is scheduled past
//!   `prompt + max_new_tokens - 1` positions;
//! - `GuaranteedNoEvict` never preempts and always holds `free >= blocks still reserved`.
//!
//! A request is done once it holds prompt + `max_new_tokens` tokens: it is never scheduled
//! again and waits for `finish()` (the executor may finish it earlier). Its last token is
//! never computed, so a request caches at most `prompt + max_new_tokens - 1` positions and
//! that is what `GuaranteedNoEvict` reserves. With prefix reuse, a block becomes findable
//! once all its positions are computed (a sampled token is only cached by the next step).
//!
//! A step's `on_step_done` reports must arrive before the next `schedule()`; an item not
//! confirmed by then (or confirmed without a token where logits were needed) counts as not
//! run and is planned again. Cancelling or finishing a request frees its blocks at once
//! (leaf blocks first, so cached prefixes are evicted from the end); they are only handed
//! out again by the next `schedule()`.

mod allocate;
mod capacity;
mod check;
mod config;
pub mod harness;
mod microbatch;
mod request;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

pub use config::{CapacityPolicy, SchedulerConfig, SchedulerError, SubmitError};
pub use stats::IterationStats;

use crate::kv::{BlockId, BlockPool, KvCacheConfig, blocks_for};
use request::{Phase, Request};
use stats::StatsState;

/// The executor's request id.
pub type RequestId = u64;

/// One planned iteration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub items: Vec<StepItem>,
    /// Requests preempted this step (MaxUtilization): blocks freed, back at the head of the
    /// waiting queue, will recompute prompt + generated tokens as context.
    pub preempted: Vec<RequestId>,
    /// Host-tier copies the backend performs BEFORE computing, in this order: every
    /// `swap_out` (device block -> host slot, evictions) in list order, then every `swap_in`
    /// (host slot -> device block, reuse hits).
    pub swap_out: Vec<(BlockId, usize)>,
    pub swap_in: Vec<(usize, BlockId)>,
}

/// One request's work in a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepItem {
    pub id: RequestId,
    /// Tokens to compute this step (a context chunk, or the one last sampled token).
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]`; positions before it are already in the KV cache.
    pub start_pos: usize,
    /// The request's full block table, covering at least `start_pos + tokens.len()` positions.
    pub block_table: Vec<BlockId>,
    /// True for generation steps and the last context chunk.
    pub needs_logits: bool,
    pub is_context: bool,
}

/// The scheduler; see the module documentation.
pub struct Scheduler {
    cfg: SchedulerConfig,
    tpb: usize,
    pool: BlockPool,
    reqs: HashMap<RequestId, Request>,
    /// FIFO; preempted requests go back to the front.
    waiting: VecDeque<RequestId>,
    /// Admission order, oldest first.
    running: Vec<RequestId>,
    stats: StatsState,
    /// Internal inconsistencies (never expected); reported by `check_invariants`.
    faults: Vec<String>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (free, used, total) = self.kv_block_counts();
        f.debug_struct("Scheduler")
            .field("cfg", &self.cfg)
            .field("waiting", &self.waiting)
            .field("running", &self.running)
            .field("kv_blocks (free, used, total)", &(free, used, total))
            .finish()
    }
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, kv: KvCacheConfig) -> Result<Scheduler, SchedulerError> {
        kv.validate()?;
        cfg.validate(kv.tokens_per_block)?;
        let pool = BlockPool::new(&kv)?;
        let stats = StatsState::new(&pool);
        Ok(Scheduler {
            cfg,
            tpb: kv.tokens_per_block,
            pool,
            reqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats,
            faults: Vec::new(),
        })
    }

    /// Queues a request, or refuses it at once when it could never run (see [`SubmitError`]).
    pub fn submit(
        &mut self,
        id: RequestId,
        prompt: Vec<u32>,
        max_new_tokens: usize,
    ) -> Result<(), SubmitError> {
        self.admissible(id, prompt.len(), max_new_tokens)?;
        self.reqs.insert(id, Request::new(prompt, max_new_tokens));
        self.waiting.push_back(id);
        Ok(())
    }

    /// The submit checks, in the order the errors are reported.
    fn admissible(
        &self,
        id: RequestId,
        prompt_len: usize,
        max_new_tokens: usize,
    ) -> Result<(), SubmitError> {
        let c = &self.cfg;
        if self.waiting.len() >= c.max_queue_size {
            return Err(SubmitError::QueueFull {
                queued: self.waiting.len(),
                max_queue_size: c.max_queue_size,
            });
        }
        if self.reqs.contains_key(&id) {
            return Err(SubmitError::DuplicateId { id });
        }
        if prompt_len == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if max_new_tokens == 0 {
            return Err(SubmitError::ZeroMaxNewTokens);
        }
        let total = prompt_len.saturating_add(max_new_tokens);
        if total > c.max_seq_len {
            return Err(SubmitError::ExceedsMaxSeqLen {
                prompt_len,
                max_new_tokens,
                total,
                max_seq_len: c.max_seq_len,
            });
        }
        let needed_blocks = blocks_for(total - 1, self.tpb);
        if needed_blocks > self.pool.usable_blocks() {
            let usable_blocks = self.pool.usable_blocks();
            return Err(SubmitError::ExceedsKvPool {
                prompt_len,
                max_new_tokens,
                needed_blocks,
                tokens_per_block: self.tpb,
                usable_blocks,
            });
        }
        if !c.chunked_context && prompt_len > c.max_num_tokens {
            return Err(SubmitError::PromptExceedsMaxNumTokens {
                prompt_len,
                max_num_tokens: c.max_num_tokens,
            });
        }
        Ok(())
    }

    /// Cancels a waiting or running request and frees its blocks; false for unknown ids.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        self.remove(id)
    }

    /// Ends a request (the executor decided stop/length) and frees its blocks; its full
    /// computed blocks stay cached for reuse when reuse is on. Unknown ids are ignored.
    pub fn finish(&mut self, id: RequestId) {
        self.remove(id);
    }

    fn remove(&mut self, id: RequestId) -> bool {
        let Some(mut r) = self.reqs.remove(&id) else {
            return false;
        };
        match r.phase {
            Phase::Waiting => self.waiting.retain(|&w| w != id),
            Phase::Context | Phase::Generation => self.running.retain(|&w| w != id),
        }
        self.release_blocks(&mut r.table);
        true
    }

    /// Releases a table's blocks, last block first.
    fn release_blocks(&mut self, table: &mut Vec<BlockId>) {
        while let Some(b) = table.pop() {
            if let Err(e) = self.pool.release(b) {
                self.faults.push(e.to_string());
            }
        }
    }

    /// Plans one step: capacity, micro-batch, allocation (see the module documentation).
    pub fn schedule(&mut self) -> Step {
        self.pool.begin_step();
        for id in &self.running {
            if let Some(r) = self.reqs.get_mut(id) {
                r.scheduled = None;
            }
        }
        let mut preempted = Vec::new();
        let (cands, reused) = self.capacity(&mut preempted);
        let plan = microbatch::form(&cands, &self.cfg, self.tpb);
        let items = self.allocate(&plan);
        let (swap_out, swap_in) = self.pool.take_swaps();
        let step = Step {
            items,
            preempted,
            swap_out,
            swap_in,
        };
        self.stats.record(
            &step,
            reused,
            &self.pool,
            self.running.len(),
            self.waiting.len(),
        );
        step
    }

    /// Reports the backend's result for one item of the last step (see the module doc).
    pub fn on_step_done(&mut self, id: RequestId, sampled: Option<u32>) {
        let Some(r) = self.reqs.get_mut(&id) else {
            return;
        };
        let Some(s) = r.scheduled.take() else { return };
        if s.needs_logits {
            let Some(tok) = sampled else { return };
            if r.is_done() {
                return;
            }
            r.tokens.push(tok);
            r.phase = Phase::Generation;
            r.recompute = false;
        }
        r.computed += s.len;
        self.register_full_blocks(id);
    }

    /// The last step's statistics.
    pub fn stats(&self) -> IterationStats {
        self.stats.last.clone()
    }

    /// (free, used, total usable) KV blocks now; free blocks include cached reusable ones.
    pub fn kv_block_counts(&self) -> (usize, usize, usize) {
        (
            self.pool.free_blocks(),
            self.pool.used_blocks(),
            self.pool.usable_blocks(),
        )
    }

    /// A live request's tokens: prompt followed by the tokens sampled so far.
    pub fn request_tokens(&self, id: RequestId) -> Option<&[u32]> {
        self.reqs.get(&id).map(|r| r.tokens.as_slice())
    }

    /// Requests waiting (including preempted ones).
    pub fn queue_len(&self) -> usize {
        self.waiting.len()
    }

    /// Requests admitted (holding blocks, including those done and awaiting `finish`).
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    pub fn tokens_per_block(&self) -> usize {
        self.tpb
    }

    /// The block pool (read-only: counts, refcounts, cached blocks).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }
}
