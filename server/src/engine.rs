//! The engine the routes talk to ([`Engine`]: tokenizer + running executor + limits) and one
//! submitted request as the routes see it ([`Job`]).
//!
//! A `Job` owns the receiving end of its request's outputs (a tokio channel the executor's
//! sink feeds) and a guard that cancels the request when the job is dropped before its final
//! output: a client that disconnects drops the handler future (non-streaming) or the SSE body
//! (streaming), and with it the job, so the request is cancelled and its KV blocks are free
//! at once, queued or running.
//!
//! Slow readers: the sink counts outputs not yet read; when the oldest has waited longer than
//! the write timeout, or too many wait, the sink refuses the next output and the executor
//! ends the request (buffering stays bounded; the job then reports an error).

use crate::state::AppState;
use host_runtime::executor::{Executor, ExecutorError, FinishReason, Output, Request};
use host_runtime::sampling::SamplingParams;
use host_runtime::scheduler::RequestId;
use models::tokenizer::Tokenizer;
use models::{Llm, LlmConfig, LlmError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

enum Core {
    Llm(Box<Llm>),
    Executor(Executor),
}

/// A loaded model behind a running executor.
pub struct Engine {
    /// The served model name.
    pub name: String,
    pub tokenizer: Arc<Tokenizer>,
    core: Core,
    /// Longest sequence (prompt + generated).
    pub max_seq_len: usize,
    pub vocab_size: usize,
    pub max_batch_size: usize,
    pub max_queue_size: usize,
    /// Requests submitted through the server and not yet finished (for abort-all).
    live: Mutex<HashSet<RequestId>>,
    /// The health probe's prompt (a few tokens: it must fit one KV block).
    pub probe_prompt: Vec<u32>,
}

/// The health probe's prompt: "Hello" as the model tokenizes it, at most 8 tokens (the
/// smallest KV block), or token 0 when the tokenizer gives nothing.
fn probe_prompt(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids = tokenizer.encode("Hello", true).unwrap_or_default();
    ids.truncate(8);
    if ids.is_empty() {
        ids.push(0);
    }
    ids
}

impl Engine {
    /// Loads the model (`config.model`: a known name, a `.gguf` or an HF directory), starts
    /// the executor and runs a one-token warm-up generation.
    pub fn load(name: String, config: LlmConfig) -> Result<Engine, LlmError> {
        let llm = Llm::new(config)?;
        let engine = Engine::from_llm(name, llm);
        engine.warmup().map_err(LlmError::Invalid)?;
        Ok(engine)
    }

    pub fn from_llm(name: String, llm: Llm) -> Engine {
        let c = llm.model.config();
        let max_seq_len = llm.config.max_seq_len.unwrap_or(c.max_position).min(c.max_position);
        let vocab_size = c.vocab_size;
        let (max_batch_size, max_queue_size) = (llm.config.max_batch_size, llm.config.max_queue_size);
        let probe_prompt = probe_prompt(&llm.tokenizer);
        Engine { name, tokenizer: llm.tokenizer.clone(), core: Core::Llm(Box::new(llm)), max_seq_len, vocab_size, max_batch_size, max_queue_size, live: Mutex::default(), probe_prompt }
    }

    /// An engine over an executor built by the caller (tests: fault-injecting backends).
    pub fn from_parts(name: String, tokenizer: Arc<Tokenizer>, executor: Executor, max_seq_len: usize, vocab_size: usize, max_batch_size: usize, max_queue_size: usize) -> Engine {
        let probe_prompt = probe_prompt(&tokenizer);
        Engine { name, tokenizer, core: Core::Executor(executor), max_seq_len, vocab_size, max_batch_size, max_queue_size, live: Mutex::default(), probe_prompt }
    }

    pub fn executor(&self) -> &Executor {
        match &self.core {
            Core::Llm(l) => l.executor(),
            Core::Executor(e) => e,
        }
    }

    /// Whether the executor loop runs and accepts requests.
    pub fn is_healthy(&self) -> bool {
        let ex = self.executor();
        ex.is_alive() && !ex.is_closed()
    }

    /// Why the engine is not healthy (the backend fault that stopped the loop, if known).
    pub fn unhealthy_reason(&self) -> String {
        match self.executor().fault() {
            Some(f) => format!("the engine loop is not running: {f}"),
            None => "the engine loop is not running".to_string(),
        }
    }

    /// One greedy token through the whole path; an error says why the engine is unusable.
    pub fn warmup(&self) -> Result<(), String> {
        let prompt = self.tokenizer.encode("Hello", true).map_err(|e| format!("warm-up: {e}"))?;
        let sampling = SamplingParams { temperature: 0.0, max_new_tokens: 1, seed: Some(0), ..Default::default() };
        let out = self.executor().submit(Request { prompt, sampling }).map_err(|e| format!("warm-up: {e}"))?.wait();
        match out.finish {
            Some(FinishReason::Error(e)) => Err(format!("warm-up generation failed: {e}")),
            _ => Ok(()),
        }
    }

    /// Cancels every request submitted through the server; returns how many.
    pub fn abort_all(&self) -> usize {
        let ids: Vec<RequestId> = self.live.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        ids.into_iter().filter(|&id| self.executor().cancel(id)).count()
    }

    fn unregister(&self, id: RequestId) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Reader progress shared by the sink (executor thread) and the job (handler).
struct Flow {
    epoch: Instant,
    /// Outputs sent and not yet read.
    pending: AtomicUsize,
    /// When the oldest unread output was sent (ms since `epoch`).
    oldest_ms: AtomicU64,
    timed_out: AtomicBool,
}

impl Flow {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Submits `prompt` to `engine` for `state`: the returned job streams its outputs and
/// cancels the request if dropped early. `arrived` is when the HTTP request came in
/// (time-to-first-token is measured from it).
pub fn submit(state: &Arc<AppState>, engine: &Arc<Engine>, prompt: Vec<u32>, sampling: SamplingParams, arrived: Instant) -> Result<Job, ExecutorError> {
    let (tx, rx) = mpsc::unbounded_channel::<Output>();
    let flow = Arc::new(Flow { epoch: Instant::now(), pending: AtomicUsize::new(0), oldest_ms: AtomicU64::new(0), timed_out: AtomicBool::new(false) });
    let timeout_ms = state.config.limits.write_timeout.as_millis() as u64;
    let max_pending = state.config.limits.max_pending_outputs.max(1);
    let f = flow.clone();
    let sink = move |out: Output| -> bool {
        let now = f.now_ms();
        let pending = f.pending.load(Ordering::Acquire);
        if pending == 0 {
            f.oldest_ms.store(now, Ordering::Release);
        } else if pending >= max_pending || now.saturating_sub(f.oldest_ms.load(Ordering::Acquire)) > timeout_ms {
            f.timed_out.store(true, Ordering::Release);
            return false;
        }
        f.pending.fetch_add(1, Ordering::AcqRel);
        tx.send(out).is_ok()
    };
    let prompt_tokens = prompt.len();
    // Registered before submitting so that an abort-all racing the submission sees it.
    let mut live = engine.live.lock().unwrap_or_else(|e| e.into_inner());
    let id = engine.executor().submit_to(Request { prompt, sampling }, Box::new(sink))?;
    live.insert(id);
    drop(live);
    state.metrics.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
    Ok(Job {
        id,
        prompt_tokens,
        rx,
        flow,
        write_timeout: state.config.limits.write_timeout,
        guard: JobGuard { state: state.clone(), engine: engine.clone(), id, finished: false },
        arrived,
        last_token: None,
        done: false,
    })
}

/// Cancels the request unless it finished; unregisters it.
struct JobGuard {
    state: Arc<AppState>,
    engine: Arc<Engine>,
    id: RequestId,
    finished: bool,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.engine.executor().cancel(self.id);
            self.state.metrics.record_finish("abort");
        }
        self.engine.unregister(self.id);
    }
}

/// One submitted request.
pub struct Job {
    pub id: RequestId,
    pub prompt_tokens: usize,
    rx: mpsc::UnboundedReceiver<Output>,
    flow: Arc<Flow>,
    write_timeout: Duration,
    guard: JobGuard,
    arrived: Instant,
    last_token: Option<Instant>,
    done: bool,
}

/// The API name of a finish reason (`Cancelled` → `abort`).
pub fn finish_name(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "abort",
        FinishReason::Error(_) => "error",
    }
}

impl Job {
    /// The next output piece; the last has `finish` set, and `None` follows it. A channel
    /// that closes without a final output yields one with `FinishReason::Error`.
    pub async fn next(&mut self) -> Option<Output> {
        if self.done {
            return None;
        }
        let out = match self.rx.recv().await {
            Some(o) => {
                let left = self.flow.pending.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
                if left > 0 {
                    self.flow.oldest_ms.store(self.flow.now_ms(), Ordering::Release);
                }
                o
            }
            None => {
                let why = if self.flow.timed_out.load(Ordering::Acquire) {
                    format!("aborted: the client read nothing for {:.1} s while output was waiting", self.write_timeout.as_secs_f64())
                } else {
                    "the engine ended the request without a final output".to_string()
                };
                Output { finish: Some(FinishReason::Error(why)), prompt_tokens: self.prompt_tokens, ..Default::default() }
            }
        };
        let now = Instant::now();
        let n = out.token_ids.len();
        let m = &self.guard.state.metrics;
        if n > 0 {
            match self.last_token {
                None => m.ttft.observe(now - self.arrived),
                Some(t) => {
                    let per = (now - t) / n as u32;
                    for _ in 0..n {
                        m.itl.observe(per);
                    }
                }
            }
            self.last_token = Some(now);
            m.generation_tokens.fetch_add(n as u64, Ordering::Relaxed);
        }
        if let Some(f) = &out.finish {
            if matches!(f, FinishReason::Error(_)) && !self.flow.timed_out.load(Ordering::Acquire) {
                // A generation error may mean a broken backend: probe it now.
                self.guard.state.suspect_engine(&self.guard.engine);
            }
            self.done = true;
            self.guard.finished = true;
            m.record_finish(finish_name(f));
            m.e2e.observe(now - self.arrived);
        }
        Some(out)
    }

    /// Reads every output and merges them (text, tokens, log-probs, beam search hypotheses);
    /// the finish reason is the last piece's.
    pub async fn collect(mut self) -> Output {
        let mut all = Output { prompt_tokens: self.prompt_tokens, ..Default::default() };
        while let Some(o) = self.next().await {
            all.token_ids.extend(o.token_ids);
            all.text.push_str(&o.text);
            all.logprobs.extend(o.logprobs);
            all.cum_logprob = o.cum_logprob;
            all.generated_tokens = all.generated_tokens.max(o.generated_tokens);
            all.reused_tokens = o.reused_tokens;
            all.beams.extend(o.beams);
            if o.finish.is_some() {
                all.finish = o.finish;
            }
        }
        all
    }
}
