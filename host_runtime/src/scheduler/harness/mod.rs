//! A model-checking driver for the scheduler, shared by the property tests and the
//! `scheduler_ops` fuzz target: it applies [`Op`]s the way an executor would, plays the
//! backend against a shadow KV cache, and checks after every operation:
//! - [`Scheduler::check_invariants`] and [`Scheduler::check_step`];
//! - submit refusals happen exactly when a refusal condition holds;
//! - the scheduler's tokens for each request equal the driver's (prompt + sampled);
//! - the scheduler's tokens of every beam of a beam group equal the driver's, which reorders
//!   its beams by the random parents it reports (`on_beam_step_done`);
//! - **KV contents**: the shadow cache stores, at each position, a fingerprint of the token
//!   prefix up to it (what real KV depends on); swaps and block copies are applied as the
//!   backend would (all swap-outs, then all swap-ins, then the block copies), and every
//!   item must find its own beam's prefix fingerprints at all positions before `start_pos`
//!   (reuse, host tier, recomputation and beam reorders are correct);
//! - after [`Harness::drain`], every block is free.
//!
//! It is public so the fuzz crate can use it; it is not part of the engine's API.

mod decode;
mod shadow;

use std::collections::{BTreeMap, HashSet};

pub use decode::{decode, run_bytes};
use shadow::{BeamModel, Model, Shadow};

use super::{RequestId, Scheduler, SchedulerConfig, SchedulerError, Step, SubmitError};
use crate::kv::{KvCacheConfig, blocks_for};
use crate::testing::Rng;

/// One executor action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Submit a new request: its first `shared` tokens come from prompt family `family`
    /// (so requests share prefixes), the rest from `seed`.
    Submit {
        prompt_len: usize,
        max_new: usize,
        family: u8,
        shared: usize,
        seed: u64,
    },
    /// Submit a follow-up (like a chat's next turn): the full tokens of a live or recently
    /// ended request, then `extra` tokens from `seed`.
    SubmitFollowUp {
        pick: usize,
        extra: usize,
        max_new: usize,
        seed: u64,
    },
    /// Submit a beam group of `width` beams (prompt as for `Submit`).
    SubmitBeam {
        prompt_len: usize,
        max_new: usize,
        width: usize,
        family: u8,
        shared: usize,
        seed: u64,
    },
    /// Submit with the id of a live request (must be refused).
    SubmitDuplicate { pick: usize },
    /// schedule(), run the step on the shadow backend, on_step_done for each item.
    Step { seed: u64 },
    /// finish() a live request (or an unknown id when none is live).
    Finish { pick: usize },
    /// cancel() a live request, or an unknown id when `pick % 5 == 0`.
    Cancel { pick: usize },
    /// finish() every request that generated all its tokens.
    FinishDone,
}

/// What the driven steps exercised (to check that tests reach every path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub steps: u64,
    pub items: u64,
    pub chunks: u64,
    pub preempted: u64,
    pub reused_blocks: u64,
    pub swap_out: u64,
    pub swap_in: u64,
    /// Beam group reports applied, and block copies emitted.
    pub beam_steps: u64,
    pub block_copies: u64,
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        self.steps += o.steps;
        self.items += o.items;
        self.chunks += o.chunks;
        self.preempted += o.preempted;
        self.reused_blocks += o.reused_blocks;
        self.swap_out += o.swap_out;
        self.swap_in += o.swap_in;
        self.beam_steps += o.beam_steps;
        self.block_copies += o.block_copies;
    }
}

/// The driver.
pub struct Harness {
    pub coverage: Coverage,
    pub sched: Scheduler,
    model: BTreeMap<RequestId, Model>,
    shadow: Shadow,
    /// Token sequences of recently ended requests (for follow-ups).
    history: Vec<Vec<u32>>,
    next_id: RequestId,
    /// Requests accepted and requests finished (by `finish`) so far.
    pub accepted: u64,
    pub finished: u64,
}

impl Harness {
    pub fn new(cfg: SchedulerConfig, kv: KvCacheConfig) -> Result<Self, SchedulerError> {
        let tpb = kv.tokens_per_block;
        let shadow = Shadow {
            tpb,
            device: vec![0; kv.num_blocks * tpb],
            host: vec![0; kv.host_cache_blocks * tpb],
        };
        let sched = Scheduler::new(cfg, kv)?;
        Ok(Harness {
            coverage: Coverage::default(),
            sched,
            model: BTreeMap::new(),
            shadow,
            history: Vec::new(),
            next_id: 1,
            accepted: 0,
            finished: 0,
        })
    }

    /// Live (accepted, not finished or cancelled) requests.
    pub fn live(&self) -> usize {
        self.model.len()
    }

    /// Applies one operation and checks everything.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Submit {
                prompt_len,
                max_new,
                family,
                shared,
                seed,
            } => self.submit(prompt_len, max_new, 1, family, shared, seed)?,
            Op::SubmitBeam {
                prompt_len,
                max_new,
                width,
                family,
                shared,
                seed,
            } => self.submit(prompt_len, max_new, width, family, shared, seed)?,
            Op::SubmitFollowUp {
                pick,
                extra,
                max_new,
                seed,
            } => self.submit_follow_up(pick, extra, max_new, seed)?,
            Op::SubmitDuplicate { pick } => self.submit_duplicate(pick)?,
            Op::Step { seed } => self.step(seed)?,
            Op::Finish { pick } => self.end(pick, false)?,
            Op::Cancel { pick } => self.end(pick, true)?,
            Op::FinishDone => self.finish_done(),
        }
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        self.sched.check_invariants()?;
        if self.sched.queue_len() + self.sched.running_len() != self.model.len() {
            return Err(format!(
                "scheduler holds {} requests, driver {}",
                self.sched.queue_len() + self.sched.running_len(),
                self.model.len()
            ));
        }
        for (&id, m) in &self.model {
            if self.sched.beam_count(id) != Some(m.beams.len()) {
                return Err(format!(
                    "request {id}: {:?} beams, the driver has {}",
                    self.sched.beam_count(id),
                    m.beams.len()
                ));
            }
            for (b, beam) in m.beams.iter().enumerate() {
                if self.sched.beam_tokens(id, b) != Some(&beam.tokens[..]) {
                    return Err(format!(
                        "request {id} beam {b}: tokens differ from the driver's"
                    ));
                }
            }
            if self.sched.request_tokens(id) != Some(&m.beams[0].tokens[..]) {
                return Err(format!("request {id}: tokens differ from the driver's"));
            }
        }
        Ok(())
    }

    fn submit(
        &mut self,
        prompt_len: usize,
        max_new: usize,
        width: usize,
        family: u8,
        shared: usize,
        seed: u64,
    ) -> Result<(), String> {
        let mut rng = Rng::new(seed);
        let prompt: Vec<u32> = (0..prompt_len)
            .map(|p| {
                if p < shared {
                    u32::from(family) * 7919 + p as u32 % 97
                } else {
                    rng.below(4) as u32
                }
            })
            .collect();
        self.submit_prompt(prompt, max_new, width)
    }

    fn submit_follow_up(
        &mut self,
        pick: usize,
        extra: usize,
        max_new: usize,
        seed: u64,
    ) -> Result<(), String> {
        let live = self.model.values().map(|m| &m.beams[0].tokens);
        let known: Vec<&Vec<u32>> = live.chain(self.history.iter()).collect();
        let Some(base) = known.get(pick % known.len().max(1)) else {
            return Ok(());
        };
        let mut rng = Rng::new(seed);
        let mut prompt = (*base).clone();
        prompt.extend((0..extra).map(|_| rng.below(4) as u32));
        self.submit_prompt(prompt, max_new, 1)
    }

    fn submit_prompt(
        &mut self,
        prompt: Vec<u32>,
        max_new: usize,
        width: usize,
    ) -> Result<(), String> {
        let prompt_len = prompt.len();
        let id = self.next_id;
        self.next_id += 1;
        let reasons = self.refusal_reasons(prompt_len, max_new, width);
        let submitted = if width == 1 {
            self.sched.submit(id, prompt.clone(), max_new)
        } else {
            self.sched.submit_beam(id, prompt.clone(), max_new, width)
        };
        match submitted {
            Ok(()) if reasons.is_empty() => {
                self.model.insert(
                    id,
                    Model {
                        beams: vec![BeamModel::new(prompt)],
                        width,
                        prompt_len,
                        max_new,
                    },
                );
                self.accepted += 1;
                Ok(())
            }
            Ok(()) => Err(format!("request accepted despite {reasons:?}")),
            Err(e) if reasons.contains(&refusal_name(&e)) => Ok(()),
            Err(e) => Err(format!(
                "refused ({e}) but the conditions that hold are {reasons:?}"
            )),
        }
    }

    /// The refusal conditions that hold for a new request.
    fn refusal_reasons(
        &self,
        prompt_len: usize,
        max_new: usize,
        width: usize,
    ) -> Vec<&'static str> {
        let c = self.sched.config();
        let tpb = self.sched.tokens_per_block();
        let total = prompt_len + max_new;
        // Beams share the prompt's full blocks; every other block is per beam.
        let per_beam = blocks_for(total.max(1) - 1, tpb);
        let shared = (prompt_len / tpb).min(per_beam);
        let needed = shared + width.max(1) * (per_beam - shared);
        let checks = [
            ("queue", self.sched.queue_len() >= c.max_queue_size),
            ("empty", prompt_len == 0),
            ("zero_new", max_new == 0),
            ("seq_len", total > c.max_seq_len),
            (
                "beam",
                width == 0 || width > c.max_batch_size || width > c.max_num_tokens,
            ),
            (
                "pool",
                total > 0 && needed > self.sched.pool().usable_blocks(),
            ),
            (
                "num_tokens",
                !c.chunked_context && prompt_len > c.max_num_tokens,
            ),
        ];
        checks
            .iter()
            .filter(|(_, hold)| *hold)
            .map(|(n, _)| *n)
            .collect()
    }

    fn submit_duplicate(&mut self, pick: usize) -> Result<(), String> {
        let Some(&id) = self.model.keys().nth(pick % self.model.len().max(1)) else {
            return Ok(());
        };
        match self.sched.submit(id, vec![1], 1) {
            Err(SubmitError::DuplicateId { .. } | SubmitError::QueueFull { .. }) => Ok(()),
            other => Err(format!("duplicate id {id}: {other:?}")),
        }
    }

    fn step(&mut self, seed: u64) -> Result<(), String> {
        let step = self.sched.schedule();
        self.sched.check_step(&step)?;
        if let Some(id) = step
            .preempted
            .iter()
            .find(|id| self.model.get(id).is_none_or(|m| m.done() || m.width > 1))
        {
            return Err(format!(
                "preempted request {id} is unknown, done or a beam group"
            ));
        }
        self.shadow.run(&step, &mut self.model)?;
        self.count(&step);
        let mut rng = Rng::new(seed);
        let mut groups = HashSet::new();
        for it in &step.items {
            let group = self.model.get(&it.id).is_some_and(|m| m.width > 1);
            if group && it.needs_logits {
                if groups.insert(it.id) {
                    self.confirm_group(it.id, &mut rng)?;
                }
                continue;
            }
            let roll = rng.below(32);
            if roll == 0 {
                continue; // never confirmed: planned again next step
            }
            if !it.needs_logits {
                self.sched
                    .on_step_done(it.id, roll.is_multiple_of(2).then_some(77));
            } else if roll == 1 {
                self.sched.on_step_done(it.id, None); // no token: counts as not run
            } else {
                let tok = rng.below(8) as u32;
                if let Some(m) = self.model.get_mut(&it.id) {
                    m.beams[0].push(tok);
                }
                if roll == 2 {
                    // A width-1 beam report is an ordinary one.
                    if !self.sched.on_beam_step_done(it.id, &[0], &[tok]) {
                        return Err(format!("request {}: width-1 beam report refused", it.id));
                    }
                } else {
                    self.sched.on_step_done(it.id, Some(tok));
                }
            }
        }
        Ok(())
    }

    /// Reports a beam group's logits step: sometimes not at all, wrongly (must count as not
    /// run or be refused), else with random parents and tokens, mirrored in the driver.
    fn confirm_group(&mut self, id: RequestId, rng: &mut Rng) -> Result<(), String> {
        let Some(m) = self.model.get(&id) else {
            return Err(format!("step item for unknown request {id}"));
        };
        let (n, w) = (m.beams.len() as u64, m.width);
        match rng.below(32) {
            0 => return Ok(()), // never confirmed: planned again next step
            1 => {
                self.sched.on_step_done(id, None); // no token: not run
                return Ok(());
            }
            2 => {
                self.sched.on_step_done(id, Some(3)); // a group reports with on_beam_step_done
                return Ok(());
            }
            3 => {
                let bad_parent = vec![n as usize; w];
                if self.sched.on_beam_step_done(id, &[0], &[1])
                    || self.sched.on_beam_step_done(id, &bad_parent, &vec![1; w])
                {
                    return Err(format!("request {id}: malformed beam report accepted"));
                }
            }
            _ => {}
        }
        // Parents biased toward few beams, so that beams die and fork often.
        let fan = 1 + rng.below(n);
        let parents: Vec<usize> = (0..w).map(|_| rng.below(fan) as usize).collect();
        let tokens: Vec<u32> = (0..w).map(|_| rng.below(8) as u32).collect();
        if !self.sched.on_beam_step_done(id, &parents, &tokens) {
            return Err(format!(
                "request {id}: beam report {parents:?} {tokens:?} refused"
            ));
        }
        if let Some(m) = self.model.get_mut(&id) {
            m.beams = parents
                .iter()
                .zip(&tokens)
                .map(|(&p, &t)| {
                    let mut b = m.beams[p].clone();
                    b.push(t);
                    b
                })
                .collect();
        }
        self.coverage.beam_steps += 1;
        Ok(())
    }

    /// Forgets a request, remembering its tokens for follow-ups.
    fn forget(&mut self, id: RequestId) {
        if let Some(mut m) = self.model.remove(&id) {
            if self.history.len() >= 8 {
                self.history.remove(0);
            }
            self.history.push(m.beams.swap_remove(0).tokens);
        }
    }

    fn count(&mut self, step: &Step) {
        let c = &mut self.coverage;
        c.steps += 1;
        c.items += step.items.len() as u64;
        c.chunks += step.items.iter().filter(|i| !i.needs_logits).count() as u64;
        c.preempted += step.preempted.len() as u64;
        c.reused_blocks += self.sched.stats().reused_blocks as u64;
        c.swap_out += step.swap_out.len() as u64;
        c.swap_in += step.swap_in.len() as u64;
        c.block_copies += step.block_copies.len() as u64;
    }

    fn end(&mut self, pick: usize, cancel: bool) -> Result<(), String> {
        let live = self
            .model
            .keys()
            .nth(pick % self.model.len().max(1))
            .copied();
        let id = match live {
            Some(id) if !(cancel && pick.is_multiple_of(5)) => id,
            _ => {
                let unknown = self.next_id + 1000;
                let removed = if cancel {
                    self.sched.cancel(unknown)
                } else {
                    self.sched.finish(unknown);
                    false
                };
                return if removed {
                    Err(format!("cancel of unknown id {unknown} returned true"))
                } else {
                    Ok(())
                };
            }
        };
        self.forget(id);
        if cancel {
            if !self.sched.cancel(id) {
                return Err(format!("cancel of live request {id} returned false"));
            }
        } else {
            self.sched.finish(id);
            self.finished += 1;
        }
        Ok(())
    }

    fn finish_done(&mut self) {
        let done: Vec<RequestId> = self
            .model
            .iter()
            .filter(|(_, m)| m.done())
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            self.forget(id);
            self.sched.finish(id);
            self.finished += 1;
        }
    }

    /// Steps (finishing requests as they complete) until none is live; fails after
    /// `max_steps`. Returns the steps taken.
    pub fn run_until_idle(&mut self, max_steps: usize) -> Result<usize, String> {
        let mut steps = 0;
        while !self.model.is_empty() {
            if steps >= max_steps {
                return Err(format!(
                    "{} requests still live after {steps} steps",
                    self.model.len()
                ));
            }
            self.apply(&Op::Step { seed: steps as u64 })?;
            self.apply(&Op::FinishDone)?;
            steps += 1;
        }
        Ok(steps)
    }

    /// Finishes or cancels every live request, then checks that every block is free.
    pub fn drain(&mut self) -> Result<(), String> {
        let ids: Vec<RequestId> = self.model.keys().copied().collect();
        for (k, id) in ids.into_iter().enumerate() {
            self.model.remove(&id);
            if k % 2 == 0 {
                self.sched.finish(id);
            } else if !self.sched.cancel(id) {
                return Err(format!("cancel of live request {id} returned false"));
            }
            self.check()?;
        }
        let (free, used, total) = self.sched.kv_block_counts();
        if used != 0 || free != total || self.sched.queue_len() + self.sched.running_len() != 0 {
            return Err(format!(
                "after draining: free {free}, used {used}, total {total}"
            ));
        }
        Ok(())
    }
}

fn refusal_name(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::QueueFull { .. } => "queue",
        SubmitError::DuplicateId { .. } => "duplicate",
        SubmitError::EmptyPrompt => "empty",
        SubmitError::ZeroMaxNewTokens => "zero_new",
        SubmitError::ExceedsMaxSeqLen { .. } => "seq_len",
        SubmitError::ExceedsKvPool { .. } => "pool",
        SubmitError::PromptExceedsMaxNumTokens { .. } => "num_tokens",
        SubmitError::BeamWidth { .. } => "beam",
    }
}
