//! The executor: `submit(request) → handle` with a stream of outputs, `cancel(id)`, and one
//! loop thread running schedule → backend step → sample → update behind the [`Backend`]
//! trait (the CPU backend now, the GPU backend later: same scheduler, sampling and loop).
//!
//! - [`backend`]: the trait a device implements (forward step over a paged KV cache).
//! - [`request`]: requests, output pieces, finish reasons, output sinks.
//! - [`sequence`]: one request's output state (stop handling, hold-back, text deltas).
//! - [`engine`]: the loop.
//! - [`detok`]: text deltas through the model's tokenizer.
//! - [`probe`]: health probes (a real one-token generation on a block kept for them).
//!
//! Invariants: submission is validated and either accepted or refused at once (never left
//! waiting when it can never run); every accepted request gets exactly one final output
//! (stop, length, cancelled or error), also when the backend fails or panics; a cancelled
//! request's KV blocks are free before `cancel` returns; an iteration-stats JSON line is
//! logged at debug level (`inflight::iteration`) after every step. The last device block is
//! kept for health probes ([`Executor::probe`]): the scheduler's pool has `num_blocks - 1`
//! blocks, so `kv_blocks()` counts the blocks requests can use. A backend panic stops the
//! loop (`is_alive` false, [`Executor::fault`] says why); a backend error fails one step.
//!
//! Beam search (`beam_width > 1`, at most `max_beam_width`): the scheduler runs the request
//! as a beam group (prompt computed once, `beam_width` beams with their own block tables,
//! never preempted); the final output alone carries the result: the best hypothesis in
//! `token_ids` / `text` / `cum_logprob` and the `n` best in `beams`. Stop strings do not
//! apply to beam search (end ids and stop token sequences do), and no per-token log-probs
//! are returned.

pub mod backend;
pub mod detok;
mod engine;
pub mod probe;
pub mod request;
mod sequence;
#[cfg(test)]
mod tests;

pub use backend::{Backend, BackendError, BackendItem, LogitsRow};
pub use detok::{Detokenizer, NoText, TextStream};
pub use probe::ProbeError;
pub use request::{BeamOutput, FinishReason, Output, OutputSink, Request, TokenLogprobs};

use crate::kv::KvCacheConfig;
use crate::sampling::InvalidParam;
use crate::scheduler::{RequestId, Scheduler, SchedulerConfig, SubmitError};
use engine::{LoopCtx, Shared};
use sequence::Sequence;
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How the executor is set up.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    pub scheduler: SchedulerConfig,
    pub kv: KvCacheConfig,
    /// Largest beam width a request may ask for.
    pub max_beam_width: usize,
    /// The model's end-of-sequence ids (a request's `end_id` replaces them).
    pub end_ids: Vec<u32>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Invalid(#[from] InvalidParam),
    #[error(transparent)]
    Rejected(#[from] SubmitError),
    #[error("the executor is shutting down and accepts no new requests")]
    Closed,
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Counters since the executor started.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExecutorMetrics {
    pub steps: u64,
    /// Requests preempted (blocks freed, recomputed later).
    pub preempted: u64,
    /// KV blocks taken from the prefix cache.
    pub reused_blocks: u64,
    /// Tokens computed by the backend (context and generation).
    pub scheduled_tokens: u64,
}

/// A submitted request: its id and the receiving end of its output stream.
pub struct Handle {
    pub id: RequestId,
    pub outputs: mpsc::Receiver<Output>,
}

impl Handle {
    /// Blocks until the request ends; returns all its outputs merged into one.
    pub fn wait(self) -> Output {
        let mut all = Output::default();
        for o in self.outputs.iter() {
            all.token_ids.extend(o.token_ids);
            all.text.push_str(&o.text);
            all.logprobs.extend(o.logprobs);
            all.cum_logprob = o.cum_logprob;
            all.prompt_tokens = o.prompt_tokens;
            all.generated_tokens = o.generated_tokens;
            all.reused_tokens = o.reused_tokens;
            all.beams.extend(o.beams);
            if o.finish.is_some() {
                all.finish = o.finish;
                break;
            }
        }
        if all.finish.is_none() {
            all.finish = Some(FinishReason::Error("the engine loop stopped".into()));
        }
        all
    }
}

/// The in-flight batching executor.
pub struct Executor {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    detok: Arc<dyn Detokenizer>,
    vocab_size: usize,
    max_beam_width: usize,
    end_ids: Vec<u32>,
    tokens_per_block: usize,
}

impl Executor {
    /// Starts the loop thread over `backend`.
    pub fn new(config: ExecutorConfig, backend: Box<dyn Backend>, detok: Arc<dyn Detokenizer>) -> Result<Executor, ExecutorError> {
        let max_seq_len = config.scheduler.max_seq_len;
        let tokens_per_block = config.kv.tokens_per_block;
        let (kv, probe_block) = probe::reserve_block(config.kv).map_err(ExecutorError::Config)?;
        let scheduler = Scheduler::new(config.scheduler, kv).map_err(|e| ExecutorError::Config(e.to_string()))?;
        let vocab_size = backend.vocab_size();
        let shared = Arc::new((
            Mutex::new(Shared {
                scheduler,
                sequences: HashMap::new(),
                next_id: 1,
                closed: false,
                stop: false,
                drain: false,
                steps: 0,
                alive: true,
                last_stats: None,
                metrics: ExecutorMetrics::default(),
                probes: Vec::new(),
                fault: None,
            }),
            Condvar::new(),
        ));
        let ctx = LoopCtx { shared: shared.clone(), backend, detok: detok.clone(), max_seq_len, probe_block, fatal: None };
        let thread = std::thread::Builder::new().name("inflight-executor".into()).spawn(move || ctx.run()).map_err(|e| ExecutorError::Config(format!("cannot start the executor thread: {e}")))?;
        Ok(Executor { shared, thread: Mutex::new(Some(thread)), detok, vocab_size, max_beam_width: config.max_beam_width, end_ids: config.end_ids, tokens_per_block })
    }

    /// A health probe: `prompt` (1..=tokens_per_block ids) computed by the loop thread on
    /// the block kept for probes, greedy; returns the token. Needs no user KV, batch slot or
    /// queue place (so a full engine does not refuse it); waits at most `timeout`.
    pub fn probe(&self, prompt: &[u32], timeout: std::time::Duration) -> Result<u32, ProbeError> {
        probe::check_prompt(prompt, self.vocab_size, self.tokens_per_block)?;
        let (tx, rx) = mpsc::channel();
        {
            let (lock, cv) = &*self.shared;
            let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
            if !s.alive || s.stop {
                return Err(ProbeError::Stopped(s.fault.clone().unwrap_or_else(|| "shut down".into())));
            }
            s.probes.push(probe::Probe { prompt: prompt.to_vec(), reply: tx });
            cv.notify_all();
        }
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(ProbeError::Failed),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ProbeError::TimedOut(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ProbeError::Stopped(self.fault().unwrap_or_else(|| "shut down".into()))),
        }
    }

    /// Why the loop stopped, when a backend panic stopped it.
    pub fn fault(&self) -> Option<String> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).fault.clone()
    }

    /// Submits a request; outputs arrive on the handle's receiver.
    pub fn submit(&self, request: Request) -> Result<Handle, ExecutorError> {
        let (tx, rx) = mpsc::channel();
        let id = self.submit_to(request, Box::new(tx))?;
        Ok(Handle { id, outputs: rx })
    }

    /// Submits a request whose outputs go to `sink` (e.g. an async channel). Validation
    /// and admission happen now: an error means nothing was queued.
    pub fn submit_to(&self, request: Request, sink: Box<dyn OutputSink>) -> Result<RequestId, ExecutorError> {
        let mut params = request.sampling;
        params.validate(self.vocab_size, self.max_beam_width)?;
        for &t in &request.prompt {
            if t as usize >= self.vocab_size {
                return Err(InvalidParam { field: "prompt", message: format!("token id {t} is outside the vocabulary (size {})", self.vocab_size) }.into());
            }
        }
        if params.seed.is_none() {
            params.seed = Some(random_seed());
        }
        let end_ids: Vec<u32> = match params.end_id {
            Some(e) => vec![e],
            None => self.end_ids.clone(),
        };
        let (lock, cv) = &*self.shared;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        if s.closed {
            return Err(ExecutorError::Closed);
        }
        let id = s.next_id;
        let width = if params.is_beam_search() { params.beam_width } else { 1 };
        s.scheduler.submit_beam(id, request.prompt.clone(), params.max_new_tokens, width)?;
        s.next_id += 1;
        let seq = Sequence::new(params, &request.prompt, &end_ids, sink, self.detok.stream());
        s.sequences.insert(id, seq);
        cv.notify_all();
        Ok(id)
    }

    /// Cancels a request: its final output says `Cancelled` and its KV blocks are free when
    /// this returns. False when the id is unknown or already finished.
    pub fn cancel(&self, id: RequestId) -> bool {
        let (lock, cv) = &*self.shared;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut seq) = s.sequences.remove(&id) else {
            return false;
        };
        s.scheduler.cancel(id);
        seq.finish(FinishReason::Cancelled);
        cv.notify_all();
        true
    }

    /// Whether the loop thread is running.
    pub fn is_alive(&self) -> bool {
        self.shared.0.lock().map(|s| s.alive).unwrap_or(false)
    }

    /// Whether new requests are refused (shutting down).
    pub fn is_closed(&self) -> bool {
        self.shared.0.lock().map(|s| s.closed).unwrap_or(true)
    }

    /// Requests accepted and not finished.
    pub fn active_requests(&self) -> usize {
        self.shared.0.lock().map(|s| s.sequences.len()).unwrap_or(0)
    }

    /// `(waiting, running)` requests in the scheduler now (for a server's gauges).
    pub fn queue_counts(&self) -> (usize, usize) {
        let s = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        (s.scheduler.queue_len(), s.scheduler.running_len())
    }

    /// `(free, used, total)` KV blocks now.
    pub fn kv_blocks(&self) -> (usize, usize, usize) {
        let s = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        s.scheduler.kv_block_counts()
    }

    /// Counters since start.
    pub fn metrics(&self) -> ExecutorMetrics {
        self.shared.0.lock().map(|s| s.metrics.clone()).unwrap_or_default()
    }

    /// The last step's iteration stats as JSON.
    pub fn last_stats(&self) -> Option<String> {
        self.shared.0.lock().ok().and_then(|s| s.last_stats.clone())
    }

    /// Refuses new requests; with `drain`, finishes the accepted ones first, otherwise
    /// cancels them. Returns when the loop has exited.
    pub fn shutdown(&self, drain: bool) {
        {
            let (lock, cv) = &*self.shared;
            let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
            s.closed = true;
            s.stop = true;
            s.drain = drain;
            if !drain {
                let ids: Vec<RequestId> = s.sequences.keys().copied().collect();
                for id in ids {
                    if let Some(mut seq) = s.sequences.remove(&id) {
                        seq.finish(FinishReason::Cancelled);
                    }
                    s.scheduler.cancel(id);
                }
            }
            cv.notify_all();
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}

/// A seed for requests that did not give one.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}
