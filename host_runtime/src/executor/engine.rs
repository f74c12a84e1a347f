//! The executor's loop: schedule → backend step → sample → update, on one thread.
//!
//! State shared with callers ([`Shared`]) sits behind one mutex that the loop holds only
//! while planning a step and while applying its results, never during the backend's
//! forward pass, so `submit` and `cancel` answer at once.
//!
//! Health probes ([`super::probe`]) run between steps, as steps of their own on the block
//! kept for them. A backend that panics (in a step or a probe) stops the loop: its state is
//! unknown after the unwind, so the step's requests end with the panic's message, every other
//! request with "the engine loop stopped: …", the executor refuses new work and reports
//! itself dead (`is_alive` false, `fault` says why). A backend that returns an error fails
//! that step's requests only; the loop goes on.
//!
//! A beam search request's items of a step (its context's last chunk, then one item per
//! beam, consecutive and in beam order) are applied together: their logits rows go to its
//! `BeamSearch`, whose parents and tokens go to `Scheduler::on_beam_step_done`; it ends
//! when the search is done, at `max_new_tokens` or when the context is full.

use super::backend::{Backend, BackendItem, LogitsRow};
use super::detok::Detokenizer;
use super::probe::Probe;
use super::request::FinishReason;
use super::sequence::Sequence;
use crate::sampling::LogitsWant;
use crate::scheduler::{RequestId, Scheduler, Step, StepItem};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Everything the loop and the callers share.
pub(super) struct Shared {
    pub scheduler: Scheduler,
    pub sequences: HashMap<RequestId, Sequence>,
    pub next_id: RequestId,
    /// No new requests (draining or stopped).
    pub closed: bool,
    /// The loop must exit (after draining when `drain`).
    pub stop: bool,
    pub drain: bool,
    pub steps: u64,
    /// Whether the loop thread is alive (readiness).
    pub alive: bool,
    pub last_stats: Option<String>,
    pub metrics: super::ExecutorMetrics,
    /// Health probes waiting for the loop.
    pub probes: Vec<Probe>,
    /// Why the loop stopped, when a backend panic stopped it.
    pub fault: Option<String>,
}

/// What the loop does next.
enum Work {
    /// A step and, per item with `needs_logits`, what its row must hold.
    Step(Step, Vec<LogitsWant>),
    Probes(Vec<Probe>),
}

pub(super) struct LoopCtx {
    pub shared: Arc<(Mutex<Shared>, Condvar)>,
    pub backend: Box<dyn Backend>,
    pub detok: Arc<dyn Detokenizer>,
    pub max_seq_len: usize,
    /// The block kept out of the scheduler's pool for health probes.
    pub probe_block: crate::kv::BlockId,
    /// Set when the backend panicked: the loop stops after the current work.
    pub fatal: Option<String>,
}

/// Marks the loop dead when it exits, however it exits.
struct AliveGuard(Arc<(Mutex<Shared>, Condvar)>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        let (lock, cv) = &*self.0;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.alive = false;
        s.closed = true;
        // Pending probes get their channel closed: "the engine loop stopped".
        s.probes.clear();
        let why = match &s.fault {
            Some(f) => format!("the engine loop stopped: {f}"),
            None => "the engine loop stopped".to_string(),
        };
        let ids: Vec<RequestId> = s.sequences.keys().copied().collect();
        for id in ids {
            if let Some(mut seq) = s.sequences.remove(&id) {
                seq.finish(FinishReason::Error(why.clone()));
            }
            s.scheduler.cancel(id);
        }
        cv.notify_all();
    }
}

impl LoopCtx {
    pub fn run(mut self) {
        let _guard = AliveGuard(self.shared.clone());
        while let Some(work) = self.plan() {
            match work {
                Work::Probes(p) => self.run_probes(p),
                Work::Step(step, wants) => {
                    let t0 = Instant::now();
                    let result = self.compute(&step, &wants);
                    self.apply(step, result, t0);
                }
            }
            if let Some(f) = self.fatal.take() {
                tracing::error!(target: "inflight::executor", "stopping the engine loop: {f}");
                mark_stopped(&mut self.shared.0.lock().unwrap_or_else(|e| e.into_inner()), f);
                return;
            }
        }
    }

    /// Waits for work and plans the next step (pending probes first); `None` when the loop
    /// should exit.
    fn plan(&mut self) -> Option<Work> {
        let (lock, cv) = &*self.shared;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stop && (!s.drain || s.sequences.is_empty()) {
                return None;
            }
            if !s.probes.is_empty() {
                return Some(Work::Probes(std::mem::take(&mut s.probes)));
            }
            if !s.sequences.is_empty() {
                let step = s.scheduler.schedule();
                // Copies (swaps, beam block copies) must run even in a step without items.
                let work = !step.items.is_empty()
                    || !step.preempted.is_empty()
                    || !step.swap_out.is_empty()
                    || !step.swap_in.is_empty()
                    || !step.block_copies.is_empty();
                if work {
                    let wants = logits_wants(&s, &step, self.backend.top_candidates());
                    return Some(Work::Step(step, wants));
                }
                // Nothing fits right now (waiting on memory held by nobody would be a
                // scheduler bug; sleep briefly rather than spin).
                let (g, _) = cv.wait_timeout(s, std::time::Duration::from_millis(5)).unwrap_or_else(|e| e.into_inner());
                s = g;
                continue;
            }
            s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs the host-tier copies and the forward pass (no lock held). A panicking backend
    /// is caught and turned into an error for this step's requests, and stops the loop.
    fn compute(&mut self, step: &Step, wants: &[LogitsWant]) -> Result<Vec<LogitsRow>, String> {
        let backend = &mut self.backend;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Vec<LogitsRow>, String> {
            for &(block, slot) in &step.swap_out {
                backend.swap_out(block, slot).map_err(|e| e.to_string())?;
            }
            for &(slot, block) in &step.swap_in {
                backend.swap_in(slot, block).map_err(|e| e.to_string())?;
            }
            for &(src, dst) in &step.block_copies {
                backend.copy_block(src, dst).map_err(|e| e.to_string())?;
            }
            let items: Vec<BackendItem> = step
                .items
                .iter()
                .map(|it| BackendItem { tokens: &it.tokens, start_pos: it.start_pos, block_table: &it.block_table, needs_logits: it.needs_logits })
                .collect();
            if items.is_empty() {
                return Ok(Vec::new());
            }
            let logits = backend.step_reduced(&items, wants).map_err(|e| e.to_string())?;
            let want = items.iter().filter(|i| i.needs_logits).count();
            if logits.len() != want {
                return Err(format!("backend returned {} logits rows for {want} requests", logits.len()));
            }
            Ok(logits)
        }));
        match run {
            Ok(r) => r,
            Err(p) => {
                let msg = format!("backend panicked: {}", panic_message(&p));
                self.fatal = Some(msg.clone());
                Err(msg)
            }
        }
    }

    /// Samples and updates every request of the step, then publishes iteration stats.
    fn apply(&mut self, step: Step, result: Result<Vec<LogitsRow>, String>, t0: Instant) {
        let (lock, cv) = &*self.shared;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        s.steps += 1;
        match result {
            Err(msg) => {
                if let Some(f) = &self.fatal {
                    // Dead before anyone hears of the failure: no new work reaches the loop.
                    mark_stopped(s, f.clone());
                }
                for it in &step.items {
                    if let Some(mut seq) = s.sequences.remove(&it.id) {
                        seq.finish(FinishReason::Error(msg.clone()));
                    }
                    s.scheduler.cancel(it.id);
                }
            }
            Ok(rows) => {
                let (mut sampled, beam_rows) = sample_rows(s, &step, rows);
                let mut beam_rows = beam_rows.into_iter();
                let mut i = 0;
                while i < step.items.len() {
                    let it = &step.items[i];
                    let beam = it.needs_logits && s.sequences.get(&it.id).is_some_and(Sequence::is_beam);
                    if beam {
                        // The group's items are consecutive.
                        let n = step.items[i..].iter().take_while(|x| x.id == it.id && x.needs_logits).count();
                        let group: Vec<Vec<f32>> = beam_rows.by_ref().take(n).collect();
                        let rows: Vec<&[f32]> = group.iter().map(Vec::as_slice).collect();
                        self.update_beam(s, &step.items[i..i + n], &rows);
                        i += n;
                        continue;
                    }
                    self.update(s, it, sampled[i].take());
                    i += 1;
                }
            }
        }
        let compute_ms = t0.elapsed().as_secs_f64() * 1e3;
        let stats = s.scheduler.stats();
        s.metrics.steps = s.steps;
        s.metrics.preempted += step.preempted.len() as u64;
        s.metrics.reused_blocks = stats.total_reused_blocks;
        s.metrics.scheduled_tokens += step.items.iter().map(|i| i.tokens.len() as u64).sum::<u64>();
        if let Ok(mut v) = serde_json::to_value(&stats) {
            v["step_ms"] = serde_json::json!(compute_ms);
            let line = v.to_string();
            tracing::debug!(target: "inflight::iteration", "{line}");
            s.last_stats = Some(line);
        }
        cv.notify_all();
    }

    /// One request after the step: record the token sampled from its logits (if any), end
    /// it if it is done.
    fn update(&self, s: &mut Shared, it: &StepItem, sampled: Option<u32>) {
        let id = it.id;
        let Some(seq) = s.sequences.get_mut(&id) else {
            return; // cancelled during the step
        };
        if it.is_context && !seq.seen_context {
            // The first chunk starts after the prefix the cache already held.
            seq.seen_context = true;
            seq.reused_tokens = it.start_pos;
        }
        let Some(tok) = sampled else {
            s.scheduler.on_step_done(id, None);
            return;
        };
        s.scheduler.on_step_done(id, Some(tok));
        let context_left = self.max_seq_len.saturating_sub(it.start_pos + it.tokens.len() + 1);
        let ended = seq.advance(context_left).is_some() || seq.disconnected;
        if ended {
            s.sequences.remove(&id);
            s.scheduler.finish(id);
        }
    }
}

impl LoopCtx {
    /// A beam request after its step: one beam search step over its rows, the reorder in
    /// the scheduler, and the end (the `n` best) when the search is done, at
    /// `max_new_tokens` or when the context is full.
    fn update_beam(&self, s: &mut Shared, items: &[StepItem], rows: &[&[f32]]) {
        let it = &items[0];
        let id = it.id;
        let Some(seq) = s.sequences.get_mut(&id) else {
            return;
        };
        if it.is_context && !seq.seen_context {
            seq.seen_context = true;
            seq.reused_tokens = it.start_pos;
        }
        let step = match seq.beam_step(rows) {
            Ok(step) => step,
            Err(msg) => {
                seq.finish(FinishReason::Error(msg));
                s.sequences.remove(&id);
                s.scheduler.cancel(id);
                return;
            }
        };
        if !s.scheduler.on_beam_step_done(id, &step.parents, &step.tokens) {
            seq.finish(FinishReason::Error("the scheduler refused a beam step".into()));
            s.sequences.remove(&id);
            s.scheduler.cancel(id);
            return;
        }
        let context_left = self.max_seq_len.saturating_sub(it.start_pos + it.tokens.len() + 1);
        if step.done || seq.beam_steps() >= seq.params.max_new_tokens || context_left == 0 {
            seq.finish_beams(&*self.detok);
            s.sequences.remove(&id);
            s.scheduler.finish(id);
        }
    }
}

/// What each item with `needs_logits` needs of its row, in item order: beams and requests
/// whose processors act need the whole row; greedy and small top-k draws a device's
/// `top_candidates` (none when it keeps none).
fn logits_wants(s: &Shared, step: &Step, top_candidates: usize) -> Vec<LogitsWant> {
    step.items
        .iter()
        .filter(|it| it.needs_logits)
        .map(|it| match s.sequences.get(&it.id) {
            Some(seq) if top_candidates > 0 && !seq.is_beam() => seq.sampler.want(&seq.generated, top_candidates),
            _ => LogitsWant::Full,
        })
        .collect()
}

/// Samples every non-beam row of a step, in parallel across requests (each request's
/// sampler and generator are its own, so the result does not depend on the order). Returns
/// the token per item index (`None` for items without logits, beams, cancelled requests)
/// and the beam groups' rows, in order.
fn sample_rows(s: &mut Shared, step: &Step, rows: Vec<LogitsRow>) -> (Vec<Option<u32>>, Vec<Vec<f32>>) {
    let mut sampled = vec![None; step.items.len()];
    let mut beam_rows = Vec::new();
    let mut jobs = Vec::new();
    let mut rows = rows.into_iter();
    for (i, it) in step.items.iter().enumerate().filter(|(_, it)| it.needs_logits) {
        let Some(row) = rows.next() else { break };
        match s.sequences.get(&it.id) {
            Some(seq) if seq.is_beam() => beam_rows.push(match row {
                LogitsRow::Full(v) => v,
                // A backend only reduces rows that asked for it; beams never do.
                LogitsRow::Top(_) => Vec::new(),
            }),
            Some(_) => jobs.push((i, it.id, row)),
            None => {} // cancelled during the step
        }
    }
    // Each request appears once among the non-beam items of a step.
    let mut work: Vec<(usize, Sequence, LogitsRow)> = jobs.into_iter().filter_map(|(i, id, row)| s.sequences.remove(&id).map(|seq| (i, seq, row))).collect();
    let sample = |(_, seq, row): &mut (usize, Sequence, LogitsRow)| seq.sample_row(row);
    let tokens: Vec<u32> = if work.len() > 1 { work.par_iter_mut().map(sample).collect() } else { work.iter_mut().map(sample).collect() };
    for ((i, seq, _), tok) in work.into_iter().zip(tokens) {
        sampled[i] = Some(tok);
        s.sequences.insert(step.items[i].id, seq);
    }
    (sampled, beam_rows)
}

/// Records why the loop stops and refuses new work from now on (`is_alive` false).
pub(super) fn mark_stopped(s: &mut Shared, fault: String) {
    s.fault.get_or_insert(fault);
    s.closed = true;
    s.alive = false;
}

pub(super) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
