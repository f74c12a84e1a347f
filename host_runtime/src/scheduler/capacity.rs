//! Stage 1, capacity: which running and waiting requests fit the KV cache this step, and
//! how many tokens each may compute as far as blocks go (the micro-batch stage then picks
//! within that).
//!
//! - `GuaranteedNoEvict`: a waiting request is admitted only if the free blocks cover every
//!   running request's remaining reservation (blocks up to its `kv_limit`) plus its own
//!   (after prefix reuse); running requests always fit.
//! - `MaxUtilization`: running requests, oldest first, reserve the blocks their next step
//!   needs (a generation: one block when its table is full; a context: blocks for up to
//!   `max_num_tokens` tokens, at least one block when it may be chunked). When none are
//!   left, the newest running request that is not done is preempted; when there is none
//!   newer, the request is skipped this step (keeping its blocks). Waiting requests are
//!   admitted while the blocks for their first chunk exist, and not at all in a step that
//!   preempted.
//!
//! Beam groups (see the module documentation of the scheduler) are admitted under both
//! policies only when the free blocks cover their whole reservation (after prefix reuse)
//! on top of everything else reserved; they are never preempted, and under
//! `MaxUtilization` their outstanding reservations are set aside before any running request
//! reserves blocks, so a group never waits for memory once admitted. A request's batch
//! slots are its width: admission stops at the first waiting request whose width does not
//! fit `max_batch_size`.
//!
//! Reservations do not look at the token budget: a candidate the micro-batch stage then
//! leaves out (more generation requests than `max_num_tokens`) still counted, and may have
//! caused a preemption. The stage is cheap and keeps the two stages independent.
//!
//! Admission is FIFO: the first waiting request that does not fit stops admission, so a
//! request is never overtaken. The oldest running request can always proceed: everything
//! newer can be preempted and submit refused any request needing more blocks than exist.

use super::request::{Phase, Request};
use super::{CapacityPolicy, RequestId, Scheduler};
use crate::kv::blocks_for;

/// A request the micro-batch stage may schedule, with the most tokens its blocks allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) id: RequestId,
    pub(crate) is_context: bool,
    pub(crate) remaining: usize,
    pub(crate) max_tokens: usize,
    pub(crate) chunkable: bool,
    /// Items a step of it has (a forked beam group's width, else 1).
    pub(crate) beams: usize,
}

/// Blocks a request needs for its next step: at least `min`, ideally `desired`.
#[derive(Clone, Copy, Debug)]
struct Want {
    min: usize,
    desired: usize,
}

impl Scheduler {
    /// Runs the policy; returns the candidates and the blocks reused by admissions.
    pub(super) fn capacity(&mut self, preempted: &mut Vec<RequestId>) -> (Vec<Candidate>, usize) {
        match self.cfg.policy {
            CapacityPolicy::GuaranteedNoEvict => self.capacity_no_evict(),
            CapacityPolicy::MaxUtilization => self.capacity_max_util(preempted),
        }
    }

    fn candidate(&self, id: RequestId, r: &Request, max_tokens: usize) -> Candidate {
        Candidate {
            id,
            is_context: r.phase == Phase::Context,
            remaining: r.remaining(),
            max_tokens: max_tokens.min(r.remaining()),
            chunkable: r.chunkable(self.cfg.chunked_context, self.cfg.max_num_tokens),
            beams: r.items(),
        }
    }

    /// Blocks reserved but not yet allocated by running requests (`GuaranteedNoEvict`).
    pub(crate) fn outstanding_blocks(&self) -> usize {
        self.running
            .iter()
            .filter_map(|id| self.reqs.get(id))
            .map(|r| r.outstanding(self.tpb))
            .sum()
    }

    /// Blocks reserved but not yet allocated by running beam groups (both policies).
    pub(crate) fn group_outstanding_blocks(&self) -> usize {
        self.running
            .iter()
            .filter_map(|id| self.reqs.get(id))
            .filter(|r| r.is_group())
            .map(|r| r.outstanding(self.tpb))
            .sum()
    }

    /// Whether the queue head's width fits the batch slots left.
    fn slots_for(&self, width: usize) -> bool {
        self.running_slots() + width <= self.cfg.max_batch_size
    }

    fn capacity_no_evict(&mut self) -> (Vec<Candidate>, usize) {
        let mut cands: Vec<Candidate> = self
            .running
            .iter()
            .filter_map(|id| self.reqs.get(id).map(|r| (*id, r)))
            .filter(|(_, r)| !r.is_done())
            .map(|(id, r)| self.candidate(id, r, usize::MAX))
            .collect();
        let mut outstanding = self.outstanding_blocks();
        let mut reused = 0;
        while let Some((id, max_reuse, m)) = self.peek_head() {
            let Some(r) = self.reqs.get(&id) else { break };
            if !self.slots_for(r.width) {
                break;
            }
            let cost = m.cost + r.reservation(self.tpb).saturating_sub(m.blocks);
            if self.pool.free_blocks() < outstanding + cost {
                break;
            }
            reused += self.admit(id, max_reuse);
            let Some(r) = self.reqs.get(&id) else { break };
            outstanding += r.outstanding(self.tpb);
            cands.push(self.candidate(id, r, usize::MAX));
        }
        (cands, reused)
    }

    fn capacity_max_util(&mut self, preempted: &mut Vec<RequestId>) -> (Vec<Candidate>, usize) {
        let mut cands = Vec::new();
        // Beam groups' blocks are set aside first: they always fit.
        let mut reserved = self.group_outstanding_blocks();
        let mut i = 0;
        while i < self.running.len() {
            let id = self.running[i];
            i += 1;
            let Some(r) = self.reqs.get(&id) else {
                continue;
            };
            if r.is_done() {
                continue;
            }
            if r.is_group() {
                cands.push(self.candidate(id, r, usize::MAX));
                continue;
            }
            let want = self.want(r);
            if let Some(take) = self.reserve(want, &mut reserved, i - 1, preempted) {
                let r = &self.reqs[&id];
                cands.push(self.candidate(id, r, self.tokens_for(r, take)));
            }
        }
        if !preempted.is_empty() {
            return (cands, 0);
        }
        let reused = self.admit_max_util(&mut cands, &mut reserved);
        (cands, reused)
    }

    /// Reserves `want` blocks for the running request at `index`, preempting newer ones as
    /// needed; returns how many were reserved, or `None` if it must skip this step.
    fn reserve(
        &mut self,
        want: Want,
        reserved: &mut usize,
        index: usize,
        preempted: &mut Vec<RequestId>,
    ) -> Option<usize> {
        loop {
            let avail = self.pool.free_blocks().saturating_sub(*reserved);
            if avail >= want.min {
                let take = want.desired.min(avail);
                *reserved += take;
                return Some(take);
            }
            let victim = self.newest_victim(index)?;
            self.preempt(victim, preempted);
        }
    }

    /// The index of the newest running request after `index` that is not done and not a
    /// beam group.
    fn newest_victim(&self, index: usize) -> Option<usize> {
        (index + 1..self.running.len()).rev().find(|&j| {
            self.reqs
                .get(&self.running[j])
                .is_some_and(|r| !r.is_done() && !r.is_group())
        })
    }

    fn preempt(&mut self, index: usize, preempted: &mut Vec<RequestId>) {
        let id = self.running.remove(index);
        let Some(mut r) = self.reqs.remove(&id) else {
            return;
        };
        for b in &mut r.beams {
            self.release_blocks(&mut b.table);
        }
        r.reset_for_recompute();
        self.reqs.insert(id, r);
        self.waiting.push_front(id);
        preempted.push(id);
        self.stats.total_preempted += 1;
    }

    /// Blocks the next step of a running request needs (`MaxUtilization`).
    fn want(&self, r: &Request) -> Want {
        let spare = r.spare_positions(self.tpb);
        if r.phase == Phase::Generation {
            let n = usize::from(spare == 0);
            return Want { min: n, desired: n };
        }
        self.context_want(
            r.remaining(),
            spare,
            r.chunkable(self.cfg.chunked_context, self.cfg.max_num_tokens),
        )
    }

    fn context_want(&self, remaining: usize, spare: usize, chunkable: bool) -> Want {
        let cap = remaining.min(self.cfg.max_num_tokens);
        let desired = blocks_for(cap.saturating_sub(spare), self.tpb);
        Want {
            min: if chunkable { desired.min(1) } else { desired },
            desired,
        }
    }

    /// Tokens a request may compute with `take` more blocks.
    fn tokens_for(&self, r: &Request, take: usize) -> usize {
        if r.phase == Phase::Generation {
            return 1;
        }
        r.spare_positions(self.tpb) + take * self.tpb
    }

    /// The queue head, with its reuse limit and cached-prefix match.
    fn peek_head(&self) -> Option<(RequestId, usize, crate::kv::PrefixMatch)> {
        let id = *self.waiting.front()?;
        let r = self.reqs.get(&id)?;
        let max_reuse = if self.pool.reuse_enabled() {
            r.tokens().len().saturating_sub(1) / self.tpb
        } else {
            0
        };
        Some((id, max_reuse, self.pool.match_prefix(r.tokens(), max_reuse)))
    }

    /// `MaxUtilization` admission: FIFO while batch slots and the first chunk's blocks exist
    /// (a beam group's whole reservation).
    fn admit_max_util(&mut self, cands: &mut Vec<Candidate>, reserved: &mut usize) -> usize {
        let mut reused = 0;
        while let Some((id, max_reuse, m)) = self.peek_head() {
            let Some(r) = self.reqs.get(&id) else { break };
            if !self.slots_for(r.width) {
                break;
            }
            if r.is_group() {
                let cost = m.cost + r.reservation(self.tpb).saturating_sub(m.blocks);
                if self.pool.free_blocks().saturating_sub(*reserved) < cost {
                    break;
                }
                reused += self.admit(id, max_reuse);
                let r = &self.reqs[&id];
                *reserved += r.outstanding(self.tpb);
                cands.push(self.candidate(id, r, usize::MAX));
                continue;
            }
            let remaining = r.tokens().len() - m.blocks * self.tpb;
            let chunkable =
                self.cfg.chunked_context || r.recompute || remaining > self.cfg.max_num_tokens;
            let want = self.context_want(remaining, 0, chunkable);
            if self.pool.free_blocks().saturating_sub(*reserved) < m.cost + want.min {
                break;
            }
            reused += self.admit(id, max_reuse);
            let take = want
                .desired
                .min(self.pool.free_blocks().saturating_sub(*reserved));
            *reserved += take;
            let r = &self.reqs[&id];
            cands.push(self.candidate(id, r, self.tokens_for(r, take)));
        }
        reused
    }

    /// Moves the queue head to running, taking its cached prefix; returns the blocks reused.
    fn admit(&mut self, id: RequestId, max_reuse: usize) -> usize {
        self.waiting.pop_front();
        let Some(r) = self.reqs.get_mut(&id) else {
            return 0;
        };
        let take = self.pool.take_prefix(&r.beams[0].tokens, max_reuse);
        r.computed = take.blocks.len() * self.tpb;
        r.reg = super::request::RegChain {
            blocks: take.blocks.len(),
            parent: take.last_serial,
            broken: false,
        };
        r.beams[0].table = take.blocks;
        r.phase = Phase::Context;
        self.running.push(id);
        r.beams[0].table.len()
    }
}
