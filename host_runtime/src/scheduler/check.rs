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
        let groups = self.group_outstanding_blocks();
        if groups > self.pool.free_blocks() {
            return Err(format!(
                "beam groups reserve {groups} more blocks but only {} are free",
                self.pool.free_blocks()
            ));
        }
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
        if self.running_slots() > self.cfg.max_batch_size {
            return Err(format!(
                "{} running slots > max_batch_size {}",
                self.running_slots(),
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
            let len = r.tokens().len();
            let beams_ok = (r.beams.len() == 1 || r.beams.len() == r.width)
                && (r.beams.len() == 1 || r.phase == Phase::Generation)
                && r.beams.iter().all(|b| {
                    b.tokens.len() == len && b.tokens[..r.prompt_len] == r.tokens()[..r.prompt_len]
                });
            let tables_ok = r.beams.iter().all(|b| {
                r.computed <= b.table.len() * tpb
                    && b.table.len() <= r.max_blocks(tpb)
                    && !b.table.contains(&0)
                    && (r.phase != Phase::Waiting || b.table.is_empty())
            });
            let ok = beams_ok
                && tables_ok
                && r.prompt_len <= len
                && len <= r.max_len()
                && r.computed <= len
                && (r.phase != Phase::Waiting || r.computed == 0)
                && (r.phase != Phase::Generation || r.remaining() == 1 || r.is_done())
                && (!r.is_group() || (!r.recompute && r.held_blocks() <= r.reservation(tpb)))
                && (r.is_group() || r.copies.is_empty());
            if !ok {
                return Err(format!(
                    "request {id}: phase {:?}, width {}, beams {}, prompt {}, tokens {len}, max {}, computed {}, tables {:?}, held {} of {} reserved",
                    r.phase,
                    r.width,
                    r.beams.len(),
                    r.prompt_len,
                    r.max_len(),
                    r.computed,
                    r.beams.iter().map(|b| &b.table).collect::<Vec<_>>(),
                    r.held_blocks(),
                    r.reservation(tpb)
                ));
            }
            for &(src, dst) in &r.copies {
                let holds = |b: BlockId| r.beams.iter().any(|x| x.table.contains(&b));
                if src == dst || !holds(src) || !holds(dst) || self.pool.refcount(dst) != 1 {
                    return Err(format!(
                        "request {id}: pending copy {src} -> {dst} does not read a held block into a private one"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refcounts equal table occurrences; shared blocks sit at the same index of tables
    /// whose tokens agree up to the block's end.
    fn check_block_sharing(&self) -> Result<(), String> {
        let tpb = self.tpb;
        let mut holders: HashMap<BlockId, (RequestId, usize, usize, u32)> = HashMap::new();
        for (&id, r) in &self.reqs {
            for (beam, bm) in r.beams.iter().enumerate() {
                for (i, &b) in bm.table.iter().enumerate() {
                    let h = holders.entry(b).or_insert((id, beam, i, 0));
                    h.3 += 1;
                    let (first, fbeam, fi, _) = *h;
                    if first == id && fbeam == beam && fi == i {
                        continue;
                    }
                    let end = (i + 1) * tpb;
                    let f = &self.reqs[&first].beams[fbeam].tokens;
                    if fi != i
                        || f.len() < end
                        || bm.tokens.len() < end
                        || f[..end] != bm.tokens[..end]
                    {
                        return Err(format!(
                            "block {b} shared by request {first} beam {fbeam} (index {fi}) and request {id} beam {beam} (index {i}) with different prefixes"
                        ));
                    }
                }
            }
        }
        for (&b, &(_, _, _, n)) in &holders {
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
        let mut per_request: HashMap<RequestId, usize> = HashMap::new();
        for it in &step.items {
            if !ids.insert((it.id, it.beam)) || step.preempted.contains(&it.id) {
                return Err(format!(
                    "request {} beam {} scheduled twice or also preempted",
                    it.id, it.beam
                ));
            }
            *per_request.entry(it.id).or_default() += 1;
            self.check_item(it)?;
        }
        for (id, n) in per_request {
            let beams = self.reqs.get(&id).map_or(0, |r| r.beams.len());
            if n != beams {
                return Err(format!(
                    "request {id}: {n} items for {beams} beams (a group is scheduled whole)"
                ));
            }
        }
        let mut written = HashSet::new();
        for &(src, dst) in &step.block_copies {
            if self.pool.refcount(src) == 0 || self.pool.refcount(dst) != 1 || !written.insert(dst)
            {
                return Err(format!(
                    "block copy {src} -> {dst}: source free, or destination shared or written twice"
                ));
            }
        }
        if let Some(&(src, _)) = step.block_copies.iter().find(|(s, _)| written.contains(s)) {
            return Err(format!(
                "block copy reads block {src}, which another copy writes"
            ));
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
        let Some(beam) = r.beams.get(it.beam) else {
            return Err(format!(
                "request {} has no beam {} ({} beams)",
                it.id,
                it.beam,
                r.beams.len()
            ));
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
            || end > beam.tokens.len()
            || it.tokens[..] != beam.tokens[it.start_pos..end]
        {
            return err("tokens are not the request's next uncomputed tokens");
        }
        if it.start_pos != r.computed
            || it.block_table != beam.table
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
