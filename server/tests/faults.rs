//! Health probes and backend faults against SmolLM2-135M on the CPU (skipped when the model
//! is not cached), each test over an executor of its own whose backend ([`Knobs`]) wraps
//! the CPU backend with a delay per step, a count of health probes, and a fault from decode
//! step N on:
//!
//! - item 40: `/health` and `/v2/health/ready` run a real one-token generation on the block
//!   kept for probes; many probers cost one probe per TTL; a probe answers while every user
//!   KV block and batch slot is taken, without touching them; a probe stuck behind a long
//!   step makes `/health` 503 but turns no request away;
//! - item 36: a backend that panics at decode step N (the loop dies) or fails from step N on
//!   (a sticky device error): requests in flight end with a 500 or a final SSE error event,
//!   `/health` turns 503, new requests get 503, nothing hangs; a backend that heals is
//!   found healthy again by the background re-probe; a dead loop makes `run` (what
//!   `inflight serve` runs) return the error, so the process exits 1.

mod common;

use axum::body::Body;
use common::*;
use host_runtime::executor::{Backend, BackendError, BackendItem, Executor, ExecutorConfig};
use host_runtime::kv::{BlockId, KvCacheConfig};
use host_runtime::scheduler::{CapacityPolicy, SchedulerConfig};
use inflight_server::{AppState, Engine, Limits, ServerConfig};
use models::arch::Model;
use models::backend::{CpuBackend, TokenizerDetok};
use models::load::WeightFormat;
use models::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const TPB: usize = 16;

/// The model and tokenizer, loaded once (native weights).
fn model() -> Option<(Arc<Model>, Arc<Tokenizer>)> {
    static M: OnceLock<Option<(Arc<Model>, Arc<Tokenizer>)>> = OnceLock::new();
    M.get_or_init(|| {
        let path = model_path()?;
        let (m, t) = models::load::load_path(std::path::Path::new(&path), WeightFormat::Native).unwrap();
        Some((Arc::new(m), Arc::new(t)))
    })
    .clone()
}

/// How a [`Knobs`] backend breaks.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Every step fails from decode step N on (probes too), until `healed` is set.
    ErrorFrom(usize),
    /// Decode step N panics.
    PanicAt(usize),
}

/// What a test reads and turns on a [`Knobs`] backend.
#[derive(Default)]
struct Dials {
    /// Steps that were health probes (an item on the probe block).
    probes: AtomicUsize,
    /// Steps with a decode item (one token after the context), counted once `armed`.
    decode_steps: AtomicUsize,
    armed: AtomicBool,
    broken: AtomicBool,
    healed: AtomicBool,
}

/// The CPU backend with a delay per step, counters and a fault.
struct Knobs {
    inner: CpuBackend,
    probe_block: BlockId,
    delay: Duration,
    fault: Fault,
    dials: Arc<Dials>,
}

impl Knobs {
    /// Counts the step and decides whether it fails (or panics).
    fn check(&self, items: &[BackendItem]) -> Result<(), BackendError> {
        let d = &self.dials;
        if items.iter().any(|i| i.block_table.first() == Some(&self.probe_block)) {
            d.probes.fetch_add(1, Ordering::SeqCst);
        } else if d.armed.load(Ordering::SeqCst) && items.iter().any(|i| i.start_pos > 0 && i.tokens.len() == 1) {
            let n = d.decode_steps.fetch_add(1, Ordering::SeqCst) + 1;
            match self.fault {
                Fault::PanicAt(at) if n == at => panic!("injected panic at decode step {n}"),
                Fault::ErrorFrom(at) if n == at => d.broken.store(true, Ordering::SeqCst),
                _ => {}
            }
        }
        if d.broken.load(Ordering::SeqCst) && !d.healed.load(Ordering::SeqCst) {
            return Err(BackendError("injected failure: the device is gone".into()));
        }
        Ok(())
    }
}

impl Backend for Knobs {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError> {
        std::thread::sleep(self.delay);
        self.check(items)?;
        self.inner.step(items)
    }
    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError> {
        self.inner.swap_out(block, slot)
    }
    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError> {
        self.inner.swap_in(slot, block)
    }
    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError> {
        self.inner.copy_block(src, dst)
    }
}

/// An engine over a [`Knobs`] backend: `batch` slots, `usable` KV blocks of 16 (plus the
/// null block and the probe's), context 256.
fn knob_engine(batch: usize, usable: usize, delay: Duration, fault: Fault) -> Option<(Arc<Engine>, Arc<Dials>)> {
    let (model, tok) = model()?;
    let vocab = model.config().vocab_size;
    let num_blocks = usable + 2;
    let dials = Arc::new(Dials::default());
    let backend = Knobs { inner: CpuBackend::new(model, num_blocks, TPB, 0), probe_block: (num_blocks - 1) as BlockId, delay, fault, dials: dials.clone() };
    let cfg = ExecutorConfig {
        scheduler: SchedulerConfig { max_batch_size: batch, max_num_tokens: 512, max_queue_size: 16, max_seq_len: 256, policy: CapacityPolicy::GuaranteedNoEvict, chunked_context: true },
        kv: KvCacheConfig { tokens_per_block: TPB, num_blocks, enable_reuse: false, host_cache_blocks: 0 },
        max_beam_width: 1,
        end_ids: tok.stop_ids().to_vec(),
    };
    let ex = Executor::new(cfg, Box::new(backend), Arc::new(TokenizerDetok(tok.clone()))).unwrap();
    Some((Arc::new(Engine::from_parts(MODEL.into(), tok, ex, 256, vocab, batch, 16)), dials))
}

/// A state (health TTL `ttl`), its router and a server on a socket.
fn serve(engine: &Arc<Engine>, ttl: Duration) -> (Arc<AppState>, axum::Router, SocketAddr) {
    let limits = Limits { health_ttl: ttl, health_timeout: Duration::from_secs(5), ..Limits::default() };
    let state = AppState::ready(ServerConfig { limits, ..config() }, engine.clone());
    (state.clone(), inflight_server::router(state.clone()), spawn_server(state))
}

async fn get(app: &axum::Router, uri: &str) -> (u16, Value) {
    let (s, _, b) = call(app, "GET", uri, &[], Body::empty()).await;
    (s.as_u16(), parse(&b))
}

fn story(max_tokens: usize, stream: bool) -> Value {
    json!({"prompt": "Tell me a long story about a dragon.", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true, "stream": stream})
}

/// Nothing may hang: every wait in these tests is bounded.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f).await.unwrap_or_else(|_| panic!("{what} hung"))
}

// ---- item 40: the health probe ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_runs_one_real_generation_per_ttl_whatever_the_number_of_probers() {
    let (engine, dials) = need_model!(knob_engine(4, 16, Duration::ZERO, Fault::None));
    let (_state, app, _) = serve(&engine, Duration::from_millis(400));
    let probes = || dials.probes.load(Ordering::SeqCst);
    assert_eq!(probes(), 0);
    let t0 = Instant::now();
    let all = futures_util::future::join_all((0..20).map(|i| {
        let app = app.clone();
        async move { get(&app, if i % 2 == 0 { "/health" } else { "/v2/health/ready" }).await.0 }
    }))
    .await;
    assert!(all.iter().all(|&s| s == 200), "{all:?}");
    if t0.elapsed() < Duration::from_millis(400) {
        assert_eq!(probes(), 1, "20 concurrent probers share one probe");
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    let before = probes();
    assert_eq!(get(&app, "/health").await, (200, json!({"status": "ok", "model": MODEL})));
    assert_eq!(probes(), before + 1, "a stale result is probed again");
    // Liveness never probes.
    assert_eq!(get(&app, "/v2/health/live").await.0, 200);
    assert_eq!(probes(), before + 1);
    assert_eq!(engine.executor().kv_blocks(), (16, 0, 16), "no user block taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_at_once_while_every_kv_block_and_slot_is_taken() {
    // 4 usable blocks of 16: a prompt of 50 tokens + 14 new holds all 4 from its prefill;
    // a second request waits for blocks. 40 ms per step (more in a debug build) keeps them
    // there for 14 steps.
    let (engine, dials) = need_model!(knob_engine(2, 4, Duration::from_millis(40), Fault::None));
    dials.armed.store(true, Ordering::SeqCst);
    let (_state, app, addr) = serve(&engine, Duration::from_millis(1));
    let ids: Vec<u32> = (0..50).map(|i| 1000 + i).collect();
    let body = json!({"prompt": ids, "max_tokens": 14, "temperature": 0, "ignore_eos": true});
    let a = tokio::spawn({
        let b = body.clone();
        async move { http(addr, &raw_request("POST", "/v1/completions", &[JSON], b.to_string().as_bytes())).await.unwrap() }
    });
    let b = tokio::spawn(async move { http(addr, &raw_request("POST", "/v1/completions", &[JSON], body.to_string().as_bytes())).await.unwrap() });
    let ex = engine.executor();
    let full = eventually(Duration::from_secs(10), || ex.kv_blocks().0 == 0 && ex.queue_counts() == (1, 1)).await;
    assert!(full, "never full: {:?} {:?}", ex.kv_blocks(), ex.queue_counts());
    let steps_before = dials.decode_steps.load(Ordering::SeqCst);
    assert_eq!(get(&app, "/health").await.0, 200);
    // It waited for at most the step in progress, not for a block or a slot: the requests
    // still hold everything.
    let steps = dials.decode_steps.load(Ordering::SeqCst) - steps_before;
    assert!(steps <= 2, "the probe waited {steps} decode steps");
    assert_eq!((ex.kv_blocks().0, ex.queue_counts()), (0, (1, 1)), "the probe took no user block or slot");
    let (a, b) = within("the requests", async { (a.await.unwrap(), b.await.unwrap()) }).await;
    assert_eq!((a.status, b.status), (200, 200));
    // Same greedy text for both: the probe's KV never mixed with theirs.
    assert_eq!(a.json()["choices"][0]["text"], b.json()["choices"][0]["text"]);
    assert!(dials.probes.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_stuck_behind_a_long_step_is_503_on_health_but_refuses_no_request() {
    // Every step takes 800 ms; the probe may wait 100 ms.
    let (engine, _dials) = need_model!(knob_engine(2, 16, Duration::from_millis(800), Fault::None));
    let limits = Limits { health_ttl: Duration::from_millis(1), health_timeout: Duration::from_millis(100), ..Limits::default() };
    let state = AppState::ready(ServerConfig { limits, ..config() }, engine.clone());
    let app = inflight_server::router(state.clone());
    let busy = tokio::spawn({
        let app = app.clone();
        async move { post(&app, "/v1/completions", &story(3, false)).await }
    });
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 1).await);
    let (s, v) = within("/health", get(&app, "/health")).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["message"].as_str().unwrap().contains("no answer"), "{v}");
    // Busy is not broken: requests are still taken.
    assert!(state.health.failure().is_none());
    let (s, v) = within("a request", post(&app, "/v1/completions", &story(2, false))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(within("the first request", busy).await.unwrap().0, 200);
}

// ---- item 36: faults at decode step N ---------------------------------------------------

/// What a fault test has after the fault: the engine, its dials, the state, its router, the
/// streamed request's events and the non-streamed one's response.
struct AfterFault {
    engine: Arc<Engine>,
    dials: Arc<Dials>,
    state: Arc<AppState>,
    app: axum::Router,
    events: Vec<String>,
    plain: Resp,
}

/// A healthy server (health TTL `ttl`) over an engine that breaks with `fault`, and two
/// requests in flight when it does.
async fn run_into(fault: Fault, ttl: Duration) -> Option<AfterFault> {
    let (engine, dials) = knob_engine(4, 32, Duration::from_millis(20), fault)?;
    let (state, app, addr) = serve(&engine, ttl);
    assert_eq!(get(&app, "/health").await.0, 200);
    let (events, plain) = two_in_flight(addr, &engine, &dials).await;
    Some(AfterFault { engine, dials, state, app, events, plain })
}

/// Two requests in flight (one streamed, one not) when the fault hits, N decode steps after
/// both run: the streamed one's events and the other's response.
async fn two_in_flight(addr: SocketAddr, engine: &Engine, dials: &Dials) -> (Vec<String>, Resp) {
    let mut stream = within("the stream's head", SseClient::open(addr, "/v1/completions", &[], &story(60, true))).await.unwrap();
    assert_eq!(stream.status, 200);
    let plain = tokio::spawn(async move { http(addr, &raw_request("POST", "/v1/chat/completions", &[JSON], json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 60, "ignore_eos": true}).to_string().as_bytes())).await.unwrap() });
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 2).await, "both running");
    dials.armed.store(true, Ordering::SeqCst);
    let events = within("the stream", stream.rest()).await;
    let plain = within("the non-streamed request", plain).await.unwrap();
    (events, plain)
}

/// The stream ended with `finish_reason: "error"`, an error event naming `what`, `[DONE]`.
fn assert_stream_failed(events: &[String], what: &str) {
    let (text, finish, done) = completion_stream_text(events);
    assert!(!text.is_empty(), "tokens came before the fault: {events:?}");
    assert_eq!((finish.as_deref(), done), (Some("error"), true), "{events:?}");
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains(what), "{err}");
}

/// New requests on every inference route get 503.
async fn assert_refused(app: &axum::Router, what: &str) {
    let (s, v) = post(app, "/v1/completions", &story(4, false)).await;
    assert_eq!(s, 503, "{v}");
    assert!(openai_message(&v).contains(what), "{v}");
    let (s, v) = post(app, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})).await;
    assert_eq!(s, 503, "{v}");
    let (s, v) = post(app, "/v2/models/ensemble/generate", &json!({"text_input": "Hello", "max_tokens": 4})).await;
    assert_eq!(s, 503, "{v}");
    assert!(triton_message(&v).contains(what), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_panic_at_decode_step_n_fails_what_runs_and_refuses_what_comes() {
    let AfterFault { engine, app, events, plain, .. } = need_model!(run_into(Fault::PanicAt(5), Duration::from_secs(5)).await);
    assert_stream_failed(&events, "injected panic at decode step 5");
    assert_eq!(plain.status, 500, "{}", String::from_utf8_lossy(&plain.body));
    assert!(openai_message(&plain.json()).contains("injected panic"), "{}", plain.json());
    // The loop is gone: unhealthy, not live, refused — even with a fresh cached probe.
    let (s, v) = get(&app, "/health").await;
    assert_eq!((s, v["status"].as_str()), (503, Some("unhealthy")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("injected panic"), "{v}");
    assert_eq!(get(&app, "/v2/health/ready").await.0, 503);
    assert_eq!(get(&app, "/v2/health/live").await.0, 503);
    assert_refused(&app, "injected panic").await;
    assert!(!engine.executor().is_alive());
    assert_eq!(engine.executor().active_requests(), 0);
    assert_eq!(engine.executor().kv_blocks().1, 0, "every block free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_backend_error_from_step_n_turns_health_503_until_the_backend_heals() {
    let AfterFault { engine, dials, state, app, events, plain } = need_model!(run_into(Fault::ErrorFrom(5), Duration::from_millis(300)).await);
    assert_stream_failed(&events, "injected failure");
    assert_eq!(plain.status, 500, "{}", String::from_utf8_lossy(&plain.body));
    // The failures made the server probe the engine: the probe fails too.
    let (s, v) = within("/health", get(&app, "/health")).await;
    assert_eq!((s, v["status"].as_str()), (503, Some("unhealthy")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("health probe failed"), "{v}");
    assert_eq!(get(&app, "/v2/health/ready").await.0, 503);
    assert_eq!(get(&app, "/v2/health/live").await.0, 200, "the loop itself runs");
    assert_refused(&app, "health probe failed").await;
    assert_eq!(engine.executor().kv_blocks().1, 0, "every block free");
    // The device comes back: the background re-probe finds it, with no outside traffic.
    dials.healed.store(true, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(5), || state.is_ready()).await, "not ready again");
    assert_eq!(get(&app, "/health").await.0, 200);
    let (s, v) = post(&app, "/v1/completions", &story(4, false)).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_engine_loop_makes_the_server_exit_with_the_reason() {
    let (engine, dials) = need_model!(knob_engine(2, 16, Duration::ZERO, Fault::PanicAt(2)));
    dials.armed.store(true, Ordering::SeqCst);
    let state = AppState::ready(config(), engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let run = tokio::spawn(inflight_server::run(listener, state, std::future::pending()));
    let r = within("the request", http(addr, &raw_request("POST", "/v1/completions", &[JSON], story(8, false).to_string().as_bytes()))).await.unwrap();
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    let out = within("run", run).await.unwrap();
    match out {
        Err(e @ inflight_server::ServeError::Engine(_)) => assert!(e.to_string().contains("injected panic at decode step 2"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening");
}
