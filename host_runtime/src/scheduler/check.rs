//! Invariant checks for tests and fuzzing: [`Scheduler::check_invariants`] (the state) and
//! [`Scheduler::check_step`] (a step just returned by `schedule()`). Both are O(blocks +
//! tokens) and return a description of the first violation.

use std::collections::{HashMap, HashSet};

use super::request::Phase;
use super::{CapacityPolicy, RequestId, Scheduler, Step, StepItem};
use crate::kv::BlockId;

impl Scheduler {
    /// Checks every state invariant listed in the module documentation.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(f) = self.faults.first() {
            return Err(format!("internal fault: {f}"));
        }
        self.pool.check()?;
        self.check_queues()?;
        self.check_requests()?;
        self.check_block_sharing()?;
        if self.cfg.policy == CapacityPolicy::GuaranteedNoEvict {
            if self.stats.total_preempted > 0 {
                return Err(format!(
                    "GuaranteedNoEvict preempted {} requests",
                    self.stats.total_preempted
                ));
            }
            let out = self.outstanding_blocks();
            if out > self.pool.free_blocks() {
                return Err(format!(
                    "reserved {out} blocks but only {} free",
                    self.pool.free_blocks()
                ));
            }
        }
        Ok(())
    }

    fn check_queues(&self) -> Result<(), String> {
        if self.running.len() > self.cfg.max_batch_size {
            return Err(format!(
                "{} running > max_batch_size {}",
                self.running.len(),
                self.cfg.max_batch_size
            ));
        }
        let mut seen = HashSet::new();
        let listed = self
            .waiting
            .iter()
            .map(|&id| (id, true))
            .chain(self.running.iter().map(|&id| (id, false)));
        for (id, waiting) in listed {
            let Some(r) = self.reqs.get(&id) else {
                return Err(format!("request {id} queued but unknown"));
            };
            if !seen.insert(id) || (r.phase == Phase::Waiting) != waiting {
                return Err(format!(
                    "request {id} listed twice or in the wrong queue ({:?})",
                    r.phase
                ));
            }
        }
        if seen.len() != self.reqs.len() {
            return Err(format!(
                "{} requests known, {} queued or running",
                self.reqs.len(),
                seen.len()
            ));
        }
        Ok(())
    }

    fn check_requests(&self) -> Result<(), String> {
        let tpb = self.tpb;
        for (id, r) in &self.reqs {
            let ok = r.prompt_len <= r.tokens.len()
                && r.tokens.len() <= r.max_len()
                && r.computed <= r.tokens.len()
                && r.computed <= r.table.len() * tpb
                && r.table.len() <= r.max_blocks(tpb)
                && !r.table.contains(&0)
                && (r.phase != Phase::Waiting || (r.table.is_empty() && r.computed == 0))
                && (r.phase != Phase::Generation || r.remaining() == 1 || r.is_done());
            if !ok {
                return Err(format!(
                    "request {id}: phase {:?}, prompt {}, tokens {}, max {}, computed {}, table {:?}",
                    r.phase,
                    r.prompt_len,
                    r.tokens.len(),
                    r.max_len(),
                    r.computed,
                    r.table
                ));
            }
        }
        Ok(())
    }

    /// Refcounts equal table occurrences; shared blocks sit at the same index of requests
    /// whose tokens agree up to the block's end.
    fn check_block_sharing(&self) -> Result<(), String> {
        let tpb = self.tpb;
        let mut holders: HashMap<BlockId, (RequestId, usize, u32)> = HashMap::new();
        for (&id, r) in &self.reqs {
            for (i, &b) in r.table.iter().enumerate() {
                let h = holders.entry(b).or_insert((id, i, 0));
                h.2 += 1;
                let (first, fi, _) = *h;
                if first == id && fi == i {
                    continue;
                }
                let end = (i + 1) * tpb;
                let f = &self.reqs[&first];
                if fi != i
                    || f.tokens.len() < end
                    || r.tokens.len() < end
                    || f.tokens[..end] != r.tokens[..end]
                {
                    return Err(format!(
                        "block {b} shared by requests {first} (index {fi}) and {id} (index {i}) with different prefixes"
                    ));
                }
            }
        }
        for (&b, &(_, _, n)) in &holders {
            if self.pool.refcount(b) != n {
                return Err(format!(
                    "block {b}: refcount {} but held by {n} tables",
                    self.pool.refcount(b)
                ));
            }
        }
        let held: usize = holders.len();
        if held != self.pool.used_blocks() {
            return Err(format!(
                "{held} blocks in tables but {} used",
                self.pool.used_blocks()
            ));
        }
        Ok(())
    }

    /// Checks a step just returned by `schedule()` against the limits and the state.
    pub fn check_step(&self, step: &Step) -> Result<(), String> {
        let c = &self.cfg;
        if step.items.len() > c.max_batch_size {
            return Err(format!(
                "{} items > max_batch_size {}",
                step.items.len(),
                c.max_batch_size
            ));
        }
        let tokens: usize = step.items.iter().map(|i| i.tokens.len()).sum();
        if tokens > c.max_num_tokens {
            return Err(format!(
                "{tokens} tokens > max_num_tokens {}",
                c.max_num_tokens
            ));
        }
        if c.policy == CapacityPolicy::GuaranteedNoEvict && !step.preempted.is_empty() {
            return Err(format!("GuaranteedNoEvict preempted {:?}", step.preempted));
        }
        let mut ids = HashSet::new();
        for it in &step.items {
            if !ids.insert(it.id) || step.preempted.contains(&it.id) {
                return Err(format!(
                    "request {} scheduled twice or also preempted",
                    it.id
                ));
            }
            self.check_item(it)?;
        }
        for &(_, b) in &step.swap_in {
            if self.pool.refcount(b) == 0 {
                return Err(format!("swap-in into unreferenced block {b}"));
            }
        }
        Ok(())
    }

    fn check_item(&self, it: &StepItem) -> Result<(), String> {
        let tpb = self.tpb;
        let Some(r) = self.reqs.get(&it.id) else {
            return Err(format!("item for unknown request {}", it.id));
        };
        let end = it.start_pos + it.tokens.len();
        let err = |what: &str| {
            Err(format!(
                "request {} item (start {}, {} tokens): {what}",
                it.id,
                it.start_pos,
                it.tokens.len()
            ))
        };
        if it.tokens.is_empty()
            || end > r.tokens.len()
            || it.tokens[..] != r.tokens[it.start_pos..end]
        {
            return err("tokens are not the request's next uncomputed tokens");
        }
        if it.start_pos != r.computed
            || it.block_table != r.table
            || it.block_table.len() * tpb < end
        {
            return err("block table does not cover the item or start is not the computed count");
        }
        if end > r.kv_limit() {
            return err("schedules past prompt + max_new_tokens - 1 positions");
        }
        if !it.is_context && (it.tokens.len() != 1 || !it.needs_logits) {
            return err("a generation item is one token with logits");
        }
        if !it.needs_logits
            && (!it.is_context
                || !it.tokens.len().is_multiple_of(tpb)
                || !it.start_pos.is_multiple_of(tpb))
        {
            return err("a non-last context chunk must be whole blocks");
        }
        if it.is_context && !it.needs_logits && !self.cfg.chunked_context && !r.recompute {
            return err("a prompt was chunked without chunked_context");
        }
        for &b in &it.block_table[it.start_pos / tpb..end.div_ceil(tpb)] {
            if self.pool.refcount(b) != 1 {
                return err(&format!(
                    "writes to block {b} with refcount {}",
                    self.pool.refcount(b)
                ));
            }
        }
        if r.scheduled.map(|s| (s.len, s.needs_logits)) != Some((it.tokens.len(), it.needs_logits))
        {
            return err("the request's pending step does not match the item");
        }
        Ok(())
    }
}
