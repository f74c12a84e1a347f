//! Request lifecycles against SmolLM2-135M on the CPU (skipped when the model is not
//! cached): queue limits and 429 (checklist items 19, 20), cancellation when a client
//! disconnects mid-stream, during a non-streaming request or while queued (27–29), abort-all
//! (30), a client that never reads (31), failures after the headers and internal errors
//! (32, 37), loading and readiness (39), and draining shutdown (41).
//!
//! Tests that count KV blocks or requests share one small engine (batch 2, queue 1) and run
//! one at a time (`ISO_LOCK`).

mod common;

use axum::body::Body;
use common::*;
use host_runtime::executor::{Backend, BackendError, BackendItem, Executor, ExecutorConfig};
use host_runtime::kv::{BlockId, KvCacheConfig};
use host_runtime::scheduler::{CapacityPolicy, SchedulerConfig};
use inflight_server::{AppState, Engine, Limits, Phase, ServerConfig};
use models::backend::{CpuBackend, TokenizerDetok};
use models::load::WeightFormat;
use models::LlmConfig;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Batch 2, queue 1: small enough to fill, shared by the tests that count.
fn iso_engine() -> Option<Arc<Engine>> {
    static E: OnceLock<Option<Arc<Engine>>> = OnceLock::new();
    E.get_or_init(|| load_engine(WeightFormat::Native, 2, 1)).clone()
}

static ISO_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh state (own metrics) and server over the shared small engine.
fn iso(limits: Limits) -> Option<(Arc<Engine>, Arc<AppState>, axum::Router, SocketAddr)> {
    let engine = iso_engine()?;
    let state = AppState::ready(ServerConfig { limits, ..config() }, engine.clone());
    let app = inflight_server::router(state.clone());
    let addr = spawn_server(state.clone());
    Some((engine, state, app, addr))
}

/// Waits until the engine is idle: nothing active, no KV block used.
async fn assert_idle(engine: &Engine, within: Duration) {
    let ok = eventually(within, || engine.executor().active_requests() == 0 && engine.executor().kv_blocks().1 == 0).await;
    assert!(ok, "not idle: active {}, kv {:?}", engine.executor().active_requests(), engine.executor().kv_blocks());
}

fn long(max_tokens: usize) -> Value {
    json!({"prompt": "Tell me a long story about a dragon.", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true})
}

/// A non-streaming request on a socket of its own (returns the response when done).
fn background(addr: SocketAddr, path: &'static str, body: Value) -> tokio::task::JoinHandle<Resp> {
    tokio::spawn(async move { http(addr, &raw_request("POST", path, &[JSON], body.to_string().as_bytes())).await.unwrap() })
}

// ---- items 19, 20 ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_429_at_once_and_nothing_accepted_is_lost() {
    let _g = ISO_LOCK.lock().await;
    let (engine, state, app, addr) = need_model!(iso(Limits::default()));
    assert_idle(&engine, Duration::from_secs(5)).await;
    // Item 20: sample the scheduler's counts the whole time.
    let sampler_engine = engine.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut worst = (0, 0);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let (w, r) = sampler_engine.executor().queue_counts();
            worst = (worst.0.max(w), worst.1.max(r));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        worst
    });
    // One at a time: the queue limit counts requests not yet admitted, and admission happens
    // at the next step.
    let a = background(addr, "/v1/completions", long(80));
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 1).await, "one running");
    let b = background(addr, "/v1/completions", long(80));
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 2).await, "two running");
    let c = background(addr, "/v1/completions", long(8));
    assert!(eventually(Duration::from_secs(5), || engine.executor().queue_counts().0 == 1).await, "one queued");
    // Full: refused at once, OpenAI and Triton shapes.
    let t0 = Instant::now();
    let (s, v) = post(&app, "/v1/completions", &long(4)).await;
    assert!(t0.elapsed() < Duration::from_millis(500), "429 took {:?}", t0.elapsed());
    assert_eq!(s, 429, "{v}");
    assert!(openai_message(&v).contains("queue full"), "{v}");
    assert_eq!(v["error"]["code"], "queue_full");
    let (s, h, b2) = call(&app, "POST", "/v2/models/ensemble/generate", &[], json!({"text_input": "hi", "max_tokens": 2}).to_string()).await;
    assert_eq!(s, 429);
    assert!(triton_message(&parse(&b2)).contains("queue full"));
    assert_eq!(h.get("retry-after").unwrap(), "1");
    // n = 2 with no room: refused whole, nothing left behind.
    let (s, v) = post(&app, "/v1/completions", &json!({"prompt": "hi", "max_tokens": 2, "n": 2, "temperature": 1.0})).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(engine.executor().queue_counts(), (1, 2));
    assert_eq!(engine.executor().active_requests(), 3);
    // Every accepted request completes in full.
    for (h, n) in [(a, 80), (b, 80), (c, 8)] {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!((v["usage"]["completion_tokens"].clone(), v["choices"][0]["finish_reason"].clone()), (json!(n), json!("length")), "{v}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (waiting, running) = sampler.await.unwrap();
    assert!(waiting <= 1 && running <= 2, "limits exceeded: waiting {waiting}, running {running}");
    assert_idle(&engine, Duration::from_secs(2)).await;
    assert!(metric(&app, "inflight_http_requests_total{endpoint=\"/v1/completions\",status=\"429\"}").await >= 2.0);
    drop(state);
}

// ---- item 27 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_stream_cancels_within_a_step_and_spares_others() {
    let _g = ISO_LOCK.lock().await;
    let (engine, state, app, addr) = need_model!(iso(Limits::default()));
    assert_idle(&engine, Duration::from_secs(5)).await;
    let mut a_body = long(200);
    a_body["stream"] = json!(true);
    let b_body = json!({"messages": [{"role": "user", "content": "Count from one to fifty."}], "max_tokens": 30, "temperature": 0, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}});
    let mut a = SseClient::open(addr, "/v1/completions", &[], &a_body).await.unwrap();
    for _ in 0..3 {
        assert!(a.next().await.is_some());
    }
    let mut b = SseClient::open(addr, "/v1/chat/completions", &[], &b_body).await.unwrap();
    assert_eq!((a.status, b.status), (200, 200));
    // B's role chunk, then its first content: B is running too.
    for _ in 0..2 {
        assert!(b.next().await.is_some());
    }
    assert_eq!(engine.executor().queue_counts(), (0, 2));
    let used_with_both = engine.executor().kv_blocks().1;
    let t0 = Instant::now();
    drop(a);
    let cancelled = eventually(Duration::from_secs(1), || engine.executor().active_requests() == 1).await;
    assert!(cancelled, "A still running {:?} after the disconnect", t0.elapsed());
    // Cancelled = out of the scheduler, its blocks back in the pool.
    assert_eq!(engine.executor().queue_counts(), (0, 1), "A still admitted");
    assert!(used_with_both > 0);
    assert!(eventually(Duration::from_secs(1), || state.metrics.finished("abort") == 1).await);
    // B goes on to the end, untouched.
    let rest = b.rest().await;
    let (_, finish, done) = completion_stream_text(&rest);
    assert_eq!((finish.as_deref(), done), (Some("length"), true), "{rest:?}");
    let usage: Value = serde_json::from_str(&rest[rest.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 30, "{usage}");
    assert_idle(&engine, Duration::from_secs(2)).await;
    assert_eq!(metric(&app, "inflight_kv_blocks_used").await, 0.0);
}

// ---- item 28 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_during_a_non_streaming_request_cancels_it() {
    let _g = ISO_LOCK.lock().await;
    let (engine, state, _app, addr) = need_model!(iso(Limits::default()));
    assert_idle(&engine, Duration::from_secs(5)).await;
    for (path, body) in [("/v1/completions", long(200)), ("/v2/models/ensemble/generate", json!({"text_input": "Tell me a long story.", "max_tokens": 200, "end_id": 0}))] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&raw_request("POST", path, &[JSON], body.to_string().as_bytes())).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || engine.executor().kv_blocks().1 > 0).await, "{path} started");
        let aborted = state.metrics.finished("abort");
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s);
        let t0 = Instant::now();
        assert!(eventually(Duration::from_secs(1), || engine.executor().active_requests() == 0 && engine.executor().kv_blocks().1 == 0).await, "{path}: still running {:?} after the disconnect", t0.elapsed());
        assert!(eventually(Duration::from_secs(1), || state.metrics.finished("abort") == aborted + 1).await);
    }
}

// ---- item 29 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_that_leaves_is_dropped_before_prefill() {
    let _g = ISO_LOCK.lock().await;
    let (engine, state, _app, addr) = need_model!(iso(Limits::default()));
    assert_idle(&engine, Duration::from_secs(5)).await;
    let before = engine.executor().metrics().scheduled_tokens;
    let short = json!({"prompt": "Hi", "max_tokens": 40, "temperature": 0, "ignore_eos": true});
    let a = background(addr, "/v1/completions", short.clone());
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 1).await);
    let b = background(addr, "/v1/completions", short.clone());
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 2).await);
    // C: a 200-token prompt, queued behind A and B, then gone.
    let c_body = json!({"prompt": vec![1000; 200], "max_tokens": 10});
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(&raw_request("POST", "/v1/completions", &[JSON], c_body.to_string().as_bytes())).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || engine.executor().queue_counts().0 == 1).await, "C queued");
    drop(c);
    assert!(eventually(Duration::from_secs(1), || engine.executor().queue_counts().0 == 0).await, "C left the queue");
    assert_eq!(engine.executor().queue_counts().1, 2, "A and B still running");
    assert!(eventually(Duration::from_secs(1), || state.metrics.finished("abort") == 1).await);
    for h in [a, b] {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_idle(&engine, Duration::from_secs(2)).await;
    let computed = engine.executor().metrics().scheduled_tokens - before;
    assert!(computed < 200, "{computed} tokens computed: C's 200-token prompt was prefilled");
}

// ---- item 30 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_all_ends_running_and_queued_requests_with_abort() {
    let _g = ISO_LOCK.lock().await;
    let (engine, _state, app, addr) = need_model!(iso(Limits::default()));
    assert_idle(&engine, Duration::from_secs(5)).await;
    let mut a_body = long(200);
    a_body["stream"] = json!(true);
    let mut a = SseClient::open(addr, "/v1/completions", &[], &a_body).await.unwrap();
    assert!(a.next().await.is_some());
    let b = background(addr, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 200, "temperature": 0, "ignore_eos": true}));
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 2).await);
    let c = background(addr, "/v2/models/ensemble/generate", json!({"text_input": "queued", "max_tokens": 20}));
    assert!(eventually(Duration::from_secs(5), || engine.executor().queue_counts().0 == 1).await);
    let (s, _, body) = call(&app, "POST", "/admin/abort_all", &[], Body::empty()).await;
    assert_eq!((s.as_u16(), parse(&body)["aborted"].clone()), (200, json!(3)));
    let rest = a.rest().await;
    let (_, finish, done) = completion_stream_text(&rest);
    assert_eq!((finish.as_deref(), done), (Some("abort"), true), "{rest:?}");
    let v = b.await.unwrap().json();
    assert_eq!(v["choices"][0]["finish_reason"], "abort", "{v}");
    let r = c.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_idle(&engine, Duration::from_secs(1)).await;
}

// ---- item 31 -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_aborted_after_the_write_timeout() {
    let _g = ISO_LOCK.lock().await;
    let limits = Limits { write_timeout: Duration::from_millis(300), ..Limits::default() };
    let (engine, state, app, _addr) = need_model!(iso(limits));
    assert_idle(&engine, Duration::from_secs(5)).await;
    let mut body = long(200);
    body["stream"] = json!(true);
    let req = axum::http::Request::post("/v1/completions").header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    use tower::ServiceExt;
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The body is held and never polled: nothing is read.
    assert!(eventually(Duration::from_secs(1), || engine.executor().active_requests() == 1).await);
    let t0 = Instant::now();
    assert!(eventually(Duration::from_secs(10), || engine.executor().active_requests() == 0).await, "not aborted");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    assert_idle(&engine, Duration::from_secs(1)).await;
    // Reading now: what was buffered, then the terminal error, [DONE].
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let events = sse_data(&bytes);
    let (_, finish, done) = completion_stream_text(&events);
    assert_eq!((finish.as_deref(), done), (Some("error"), true), "{events:?}");
    assert!(events.iter().any(|e| e.contains("\"error\"") && e.contains("read nothing")), "{events:?}");
    assert!(events.len() < 200, "buffering was bounded by the abort: {} events", events.len());
    drop(state);
}

// ---- items 32, 37: failures ----------------------------------------------------------

/// Fails every step that reaches position 12: requests get a few tokens, then an error.
struct Faulty(CpuBackend);

impl Backend for Faulty {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError> {
        if items.iter().any(|i| i.start_pos + i.tokens.len() > 12) {
            return Err(BackendError("injected failure at position 12".into()));
        }
        self.0.step(items)
    }
    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError> {
        self.0.swap_out(block, slot)
    }
    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError> {
        self.0.swap_in(slot, block)
    }
    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError> {
        self.0.copy_block(src, dst)
    }
}

fn faulty_app() -> Option<axum::Router> {
    static E: OnceLock<Option<Arc<Engine>>> = OnceLock::new();
    let engine = E
        .get_or_init(|| {
            let path = model_path()?;
            let (model, tok) = models::load::load_path(std::path::Path::new(&path), WeightFormat::Native).unwrap();
            let (model, tok) = (Arc::new(model), Arc::new(tok));
            let vocab = model.config().vocab_size;
            let backend = Faulty(CpuBackend::new(model, 65, 16, 0));
            let cfg = ExecutorConfig {
                scheduler: SchedulerConfig { max_batch_size: 8, max_num_tokens: 512, max_queue_size: 16, max_seq_len: 256, policy: CapacityPolicy::GuaranteedNoEvict, chunked_context: true },
                kv: KvCacheConfig { tokens_per_block: 16, num_blocks: 65, enable_reuse: false, host_cache_blocks: 0 },
                max_beam_width: 1,
                end_ids: tok.stop_ids().to_vec(),
            };
            let ex = Executor::new(cfg, Box::new(backend), Arc::new(TokenizerDetok(tok.clone()))).unwrap();
            Some(Arc::new(Engine::from_parts(MODEL.into(), tok, ex, 256, vocab, 8, 16)))
        })
        .clone()?;
    Some(inflight_server::router(AppState::ready(config(), engine)))
}

#[tokio::test]
async fn generation_failures_are_500_before_headers() {
    let app = need_model!(faulty_app());
    let (s, v) = post(&app, "/v1/completions", &long(30)).await;
    assert_eq!(s, 500, "{v}");
    assert!(openai_message(&v).contains("injected failure"), "{v}");
    assert_eq!(v["error"]["type"], "internal_error");
    let (s, v) = post(&app, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30, "ignore_eos": true})).await;
    assert_eq!(s, 500, "{v}");
    let (s, v) = post(&app, "/v2/models/ensemble/generate", &json!({"text_input": "Hello", "max_tokens": 30, "end_id": 0})).await;
    assert_eq!(s, 500, "{v}");
    assert!(triton_message(&v).contains("injected failure"), "{v}");
    // The executor survives a failed step: health stays up.
    let (s, _, _) = call(&app, "GET", "/health", &[], Body::empty()).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn failures_after_the_headers_end_the_stream_with_an_error_event() {
    let app = need_model!(faulty_app());
    let mut body = long(30);
    body["stream"] = json!(true);
    let (s, _, b) = call(&app, "POST", "/v1/completions", &[JSON], body.to_string()).await;
    assert_eq!(s, 200);
    let events = sse_data(&b);
    let (text, finish, done) = completion_stream_text(&events);
    assert!(!text.is_empty(), "some text came first: {events:?}");
    assert_eq!((finish.as_deref(), done), (Some("error"), true), "{events:?}");
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("injected failure"), "{err}");
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30, "ignore_eos": true, "stream": true});
    let (_, _, b) = call(&app, "POST", "/v1/chat/completions", &[JSON], chat.to_string()).await;
    let events = sse_data(&b);
    let (_, finish, done) = completion_stream_text(&events);
    assert_eq!((finish.as_deref(), done), (Some("error"), true), "{events:?}");
    let (_, _, b) = call(&app, "POST", "/v2/models/ensemble/generate_stream", &[], json!({"text_input": "Hello", "max_tokens": 30, "end_id": 0}).to_string()).await;
    let events = sse_data(&b);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"].as_str().unwrap().contains("injected failure"), "{events:?}");
    assert!(events.len() >= 2, "text before the error: {events:?}");
}

// ---- item 39: loading → ready; a model that fails to load ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_503_until_the_model_is_loaded() {
    let path = need_model!(model_path());
    let state = AppState::loading(config());
    let app = inflight_server::router(state.clone());
    let llm = LlmConfig { max_seq_len: Some(256), kv_cache_bytes: Some(16 << 20), ..LlmConfig::new(path) };
    let loader = inflight_server::spawn_loader(state.clone(), llm, None);
    let mut saw_loading = false;
    loop {
        let (s, v) = post(&app, "/v1/completions", &json!({"prompt": "hi", "max_tokens": 1})).await;
        let (hs, _, _) = call(&app, "GET", "/health", &[], Body::empty()).await;
        if s == 200 {
            break;
        }
        assert_eq!((s.as_u16(), hs.as_u16()), (503, 503), "{v}");
        assert!(openai_message(&v).contains("Loading model"), "{v}");
        saw_loading = true;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_loading, "the model loaded before the first request");
    loader.await.unwrap();
    assert!(matches!(state.phase(), Phase::Ready(_)));
    assert_eq!(call(&app, "GET", "/health", &[], Body::empty()).await.0, 200);
}

#[tokio::test]
async fn a_model_that_fails_to_load_stops_the_server_with_the_error() {
    let state = AppState::loading(config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    inflight_server::spawn_loader(state.clone(), LlmConfig::new("/nonexistent/model.gguf"), None);
    let r = tokio::time::timeout(Duration::from_secs(20), inflight_server::run(listener, state.clone(), std::future::pending())).await.expect("run returns");
    let e = r.expect_err("a load failure is an error");
    assert!(e.to_string().contains("failed to load"), "{e}");
    let app = inflight_server::router(state);
    let (s, _, b) = call(&app, "GET", "/health", &[], Body::empty()).await;
    assert_eq!((s.as_u16(), parse(&b)["status"].clone()), (503, json!("failed")));
    let (s, _, _) = call(&app, "GET", "/v2/health/live", &[], Body::empty()).await;
    assert_eq!(s, 503);
}

// ---- item 41: draining shutdown ------------------------------------------------------

async fn serve_own(limits: Limits) -> Option<(Arc<AppState>, SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), inflight_server::ServeError>>)> {
    let engine = load_engine(WeightFormat::Native, 4, 4)?;
    let state = AppState::ready(ServerConfig { limits, ..config() }, engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(inflight_server::run(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Some((state, addr, tx, run))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_requests_and_finishes_those_in_flight() {
    let (state, addr, stop, run) = need_model!(serve_own(Limits::default()).await);
    let engine = state.engine().unwrap();
    let mut a_body = long(40);
    a_body["stream"] = json!(true);
    let mut a = SseClient::open(addr, "/v1/completions", &[], &a_body).await.unwrap();
    assert!(a.next().await.is_some());
    let b = background(addr, "/v2/models/ensemble/generate", json!({"text_input": "Tell me a story.", "max_tokens": 40, "end_id": 0}));
    assert!(eventually(Duration::from_secs(10), || engine.executor().queue_counts().1 == 2).await);
    stop.send(()).unwrap();
    assert!(eventually(Duration::from_secs(1), || state.draining()).await);
    // New requests: 503; health: 503.
    let r = http(addr, &raw_request("POST", "/v1/completions", &[JSON], long(2).to_string().as_bytes())).await.unwrap();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(openai_message(&r.json()).contains("shutting down"));
    let r = http(addr, &raw_request("GET", "/health", &[], b"")).await.unwrap();
    assert_eq!((r.status, r.json()["status"].clone()), (503, json!("draining")));
    // In flight: finished in full.
    let rest = a.rest().await;
    let (_, finish, done) = completion_stream_text(&rest);
    assert_eq!((finish.as_deref(), done), (Some("length"), true), "{rest:?}");
    let r = b.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Then the server stops (Ok = exit 0), the listener is closed and the executor shut down.
    tokio::time::timeout(Duration::from_secs(10), run).await.expect("run returns").unwrap().expect("Ok");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening");
    assert!(engine.executor().is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_what_outlasts_the_drain_timeout_with_a_terminal_event() {
    let limits = Limits { drain_timeout: Duration::from_millis(300), ..Limits::default() };
    let (state, addr, stop, run) = need_model!(serve_own(limits).await);
    let body = json!({"messages": [{"role": "user", "content": "Tell me a very long story."}], "max_tokens": 200, "ignore_eos": true, "stream": true});
    let mut a = SseClient::open(addr, "/v1/chat/completions", &[], &body).await.unwrap();
    assert!(a.next().await.is_some());
    stop.send(()).unwrap();
    let rest = a.rest().await;
    let (_, finish, done) = completion_stream_text(&rest);
    assert_eq!((finish.as_deref(), done), (Some("abort"), true), "{rest:?}");
    tokio::time::timeout(Duration::from_secs(10), run).await.expect("run returns").unwrap().expect("Ok");
    assert!(state.draining());
}
