//! The in-flight batching scheduler: a CPU state machine that never touches device memory.
//!
//! The executor drives it: [`Scheduler::submit`] / [`Scheduler::submit_beam`] /
//! [`Scheduler::cancel`] at any time; per iteration [`Scheduler::schedule`] plans a
//! [`Step`], the backend performs its swaps and block copies and computes its items,
//! [`Scheduler::on_step_done`] reports each item's sampled token (for a beam group,
//! [`Scheduler::on_beam_step_done`] reports the whole group), and [`Scheduler::finish`]
//! ends a request whose generation the executor stopped.
//!
//! One step is three named stages:
//! 1. **capacity** (`capacity.rs`): which running and waiting requests fit the KV cache under
//!    the [`CapacityPolicy`]; FIFO admission (the queue head blocks those behind it, so
//!    nothing starves); preemption of the newest running requests under `MaxUtilization`;
//! 2. **micro-batch** (`microbatch.rs`): within `max_batch_size` items and `max_num_tokens`
//!    tokens, generation requests first (1 token each, oldest first; a beam group's `W`
//!    beams together or not at all), then context chunks (oldest first; a context that
//!    cannot be scheduled stops those behind it);
//! 3. **allocation** (`allocate.rs`): extend block tables to cover the scheduled tokens.
//!
//! **Beam groups** ([`Scheduler::submit_beam`], width `W` > 1): the prompt is computed once
//! (one beam, one table, chunked like any context). The report of its last chunk
//! ([`Scheduler::on_beam_step_done`], all parents 0) forks it into `W` beams, each with its
//! own block table; from then on every step schedules all `W` beams (items with
//! [`StepItem::beam`] `0..W`, counting `W` toward `max_batch_size` and `max_num_tokens`),
//! and each report reorders them: new beam `i` continues old beam `parents[i]` with
//! `tokens[i]`. Full blocks are shared by refcount (a shared block sits at the same index
//! with identical tokens up to its end, as the pool requires); the partial last block goes
//! to the parent's first child and is copied into a fresh block for every other child (the
//! next step's [`Step::block_copies`]); beams without children release their blocks first.
//! A group is admitted, under both policies, only when the free blocks cover its whole
//! reservation (the prompt's full blocks once, plus every other block of
//! `prompt + max_new_tokens - 1` positions per beam: copies included), so it always runs to
//! completion; it is never preempted, and under `MaxUtilization` its outstanding
//! reservation is set aside before other running requests reserve blocks. Its running
//! slots count `W` toward `max_batch_size`. Blocks of a group are registered for prefix
//! reuse up to the end of its prompt only.
//!
//! Invariants (checked by [`Scheduler::check_invariants`] and [`Scheduler::check_step`]):
//! - every request is waiting or running, never both; waiting requests hold no blocks;
//!   running requests' widths sum to at most `max_batch_size`;
//! - a block's refcount equals the number of block tables (of every beam) holding it;
//!   `free + used == usable`; a block held by two tables is at the same index in both, and
//!   their tokens up to its end are identical; items only write to blocks their beam alone
//!   holds;
//! - a step has at most `max_batch_size` items and `max_num_tokens` tokens; a forked group
//!   has all its beams in a step or none; every context chunk but the last is a whole
//!   number of blocks; without chunked context a prompt is computed whole (only a
//!   recomputation after preemption may be chunked); every item's block table covers
//!   `start_pos + tokens.len()`; nothing is scheduled past `prompt + max_new_tokens - 1`
//!   positions; a block copy reads a block its group holds and writes one only it holds;
//! - `GuaranteedNoEvict` never preempts and always holds `free >= blocks still reserved`;
//!   under both policies `free >=` the beam groups' outstanding reservations, and a group
//!   never holds more distinct blocks than its reservation.
//!
//! A request is done once it holds prompt + `max_new_tokens` tokens: it is never scheduled
//! again and waits for `finish()` (the executor may finish it earlier). Its last token is
//! never computed, so a request caches at most `prompt + max_new_tokens - 1` positions and
//! that is what `GuaranteedNoEvict` reserves. With prefix reuse, a block becomes findable
//! once all its positions are computed (a sampled token is only cached by the next step).
//!
//! A step's reports must arrive before the next `schedule()`; an item not confirmed by then
//! (or confirmed without a token where logits were needed, or a beam group's logits item
//! reported through `on_step_done`) counts as not run and is planned again. Cancelling or
//! finishing a request frees its blocks at once (leaf blocks first, so cached prefixes are
//! evicted from the end) and drops its pending block copies; freed blocks are only handed
//! out again by the next `schedule()` or a beam reorder (which follows the backend's step).

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
use request::{Beam, Phase, Request};
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
    /// Whole-block device copies `(src, dst)` from beam reorders, performed AFTER the
    /// swaps and BEFORE computing (order: swap-outs, swap-ins, block copies, compute). No
    /// copy reads a block another copy of the step writes.
    pub block_copies: Vec<(BlockId, BlockId)>,
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
    /// The beam this item computes: `0..W` for a forked beam group (its `W` items are
    /// consecutive, in beam order), 0 otherwise.
    pub beam: usize,
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
        self.submit_beam(id, prompt, max_new_tokens, 1)
    }

    /// Queues a beam group of `beam_width` beams (see the module documentation); width 1 is
    /// [`Scheduler::submit`]. Refused at once when it could never run, including a width
    /// above `max_batch_size` or `max_num_tokens`, or a reservation above the pool.
    pub fn submit_beam(
        &mut self,
        id: RequestId,
        prompt: Vec<u32>,
        max_new_tokens: usize,
        beam_width: usize,
    ) -> Result<(), SubmitError> {
        self.admissible(id, prompt.len(), max_new_tokens, beam_width)?;
        self.reqs
            .insert(id, Request::new(prompt, max_new_tokens, beam_width));
        self.waiting.push_back(id);
        Ok(())
    }

    /// Distinct KV blocks a request of `beam_width` beams reserves (its most at any time).
    pub fn reservation_blocks(
        &self,
        prompt_len: usize,
        max_new_tokens: usize,
        beam_width: usize,
    ) -> usize {
        request::reservation_blocks(prompt_len, max_new_tokens, beam_width, self.tpb)
    }

    /// The submit checks, in the order the errors are reported.
    fn admissible(
        &self,
        id: RequestId,
        prompt_len: usize,
        max_new_tokens: usize,
        beam_width: usize,
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
        if beam_width == 0 || beam_width > c.max_batch_size || beam_width > c.max_num_tokens {
            return Err(SubmitError::BeamWidth {
                beam_width,
                max_batch_size: c.max_batch_size,
                max_num_tokens: c.max_num_tokens,
            });
        }
        let needed_blocks = if beam_width == 1 {
            blocks_for(total - 1, self.tpb)
        } else {
            self.reservation_blocks(prompt_len, max_new_tokens, beam_width)
        };
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
        for b in r.beams.iter_mut().rev() {
            self.release_blocks(&mut b.table);
        }
        true
    }

    /// Releases a table's blocks, last block first.
    fn release_blocks(&mut self, table: &mut Vec<BlockId>) {
        release_table(&mut self.pool, &mut self.faults, table, 0);
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
        let mut block_copies = Vec::new();
        for id in &self.running {
            if let Some(r) = self.reqs.get_mut(id) {
                block_copies.append(&mut r.copies);
            }
        }
        let step = Step {
            items,
            preempted,
            swap_out,
            swap_in,
            block_copies,
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

    /// Reports the backend's result for one item of the last step (see the module doc). A
    /// beam group's items that need logits are reported with
    /// [`Scheduler::on_beam_step_done`] instead (here they count as not run).
    pub fn on_step_done(&mut self, id: RequestId, sampled: Option<u32>) {
        let Some(r) = self.reqs.get_mut(&id) else {
            return;
        };
        let Some(s) = r.scheduled.take() else { return };
        if s.needs_logits {
            let Some(tok) = sampled else { return };
            if r.is_done() || r.is_group() {
                return;
            }
            r.beams[0].tokens.push(tok);
            r.phase = Phase::Generation;
            r.recompute = false;
        }
        r.computed += s.len;
        self.register_full_blocks(id);
    }

    /// Reports a beam group's step (the last context chunk, or all `W` beams of a
    /// generation step): new beam `i` continues old beam `parents[i]` with `tokens[i]` (after
    /// the context every parent is 0). Reorders the block tables as the module documentation
    /// describes; the block copies go out with the next step. For a width-1 request, the
    /// same as `on_step_done(id, Some(tokens[0]))` with `parents == [0]`. Returns false (and
    /// changes nothing) when the request has no pending logits step, is done, or the
    /// lengths or parents do not fit the group.
    pub fn on_beam_step_done(&mut self, id: RequestId, parents: &[usize], tokens: &[u32]) -> bool {
        let Some(r) = self.reqs.get_mut(&id) else {
            return false;
        };
        let Some(s) = r.scheduled else { return false };
        let fits = parents.len() == r.width
            && tokens.len() == r.width
            && parents.iter().all(|&p| p < r.beams.len());
        if !s.needs_logits || r.is_done() || !fits {
            return false;
        }
        if r.width == 1 {
            self.on_step_done(id, Some(tokens[0]));
            return true;
        }
        r.scheduled = None;
        r.computed += s.len;
        self.register_full_blocks(id);
        self.reorder(id, parents, tokens);
        true
    }

    /// Forks/reorders a group's beams after its step (see `on_beam_step_done`).
    fn reorder(&mut self, id: RequestId, parents: &[usize], tokens: &[u32]) {
        let tpb = self.tpb;
        let Some(r) = self.reqs.get_mut(&id) else {
            return;
        };
        let (pool, faults) = (&mut self.pool, &mut self.faults);
        let keep = blocks_for(r.computed, tpb);
        let partial = !r.computed.is_multiple_of(tpb);
        let mut old = std::mem::take(&mut r.beams);
        let mut children = vec![0usize; old.len()];
        for &p in parents {
            children[p] += 1;
        }
        // First free what no child keeps (blocks past the computed positions, beams without
        // children), so the copies below can use those blocks.
        for (p, b) in old.iter_mut().enumerate() {
            let cut = if children[p] == 0 { 0 } else { keep };
            release_table(pool, faults, &mut b.table, cut);
            if children[p] > 0 && b.table.len() != keep {
                faults.push(format!(
                    "request {id}: beam {p} table of {} blocks for {} computed positions",
                    b.table.len(),
                    r.computed
                ));
            }
        }
        let mut taken = vec![false; old.len()];
        let mut beams = Vec::with_capacity(parents.len());
        for (&p, &t) in parents.iter().zip(tokens) {
            let mut beam = Beam {
                tokens: Vec::with_capacity(old[p].tokens.len() + 1),
                table: old[p].table.clone(),
            };
            beam.tokens.extend_from_slice(&old[p].tokens);
            beam.tokens.push(t);
            if taken[p] {
                // A later child: share the full blocks, copy the partial one.
                let shared = if partial {
                    beam.table.len().saturating_sub(1)
                } else {
                    beam.table.len()
                };
                for &b in &beam.table[..shared] {
                    if let Err(e) = pool.retain(b) {
                        faults.push(e.to_string());
                    }
                }
                if partial && let Some(last) = beam.table.last_mut() {
                    match pool.allocate() {
                        Some(dst) => {
                            r.copies.push((*last, dst));
                            *last = dst;
                        }
                        None => {
                            faults.push(format!(
                                "request {id}: no free block for a beam copy (reservation broken)"
                            ));
                            let _ = pool.retain(*last);
                        }
                    }
                }
            }
            taken[p] = true;
            beams.push(beam);
        }
        r.beams = beams;
        r.phase = Phase::Generation;
        r.recompute = false;
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

    /// A live request's tokens: prompt followed by the tokens sampled so far (beam 0's for
    /// a beam group).
    pub fn request_tokens(&self, id: RequestId) -> Option<&[u32]> {
        self.reqs.get(&id).map(|r| r.tokens())
    }

    /// The tokens of beam `beam` of a live request.
    pub fn beam_tokens(&self, id: RequestId, beam: usize) -> Option<&[u32]> {
        self.reqs
            .get(&id)
            .and_then(|r| r.beams.get(beam))
            .map(|b| b.tokens.as_slice())
    }

    /// A live request's current beams: 1 until a beam group's prompt is computed, then its
    /// width.
    pub fn beam_count(&self, id: RequestId) -> Option<usize> {
        self.reqs.get(&id).map(|r| r.beams.len())
    }

    /// Requests waiting (including preempted ones).
    pub fn queue_len(&self) -> usize {
        self.waiting.len()
    }

    /// Requests admitted (holding blocks, including those done and awaiting `finish`).
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// Batch slots the running requests take (a beam group counts its width).
    pub fn running_slots(&self) -> usize {
        self.running
            .iter()
            .filter_map(|id| self.reqs.get(id))
            .map(|r| r.width)
            .sum()
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

/// Releases `table`'s blocks past the first `keep`, last block first.
fn release_table(
    pool: &mut BlockPool,
    faults: &mut Vec<String>,
    table: &mut Vec<BlockId>,
    keep: usize,
) {
    while table.len() > keep {
        let Some(b) = table.pop() else { break };
        if let Err(e) = pool.release(b) {
            faults.push(e.to_string());
        }
    }
}
