//! Load: N concurrent streaming clients for D seconds over a real socket, mixing the OpenAI
//! completions, OpenAI chat and Triton streaming routes; about one request in five is
//! dropped by its client mid-stream. Among the requests whose client stayed, none may fail;
//! the scheduler's waiting and running counts never exceed their limits; afterwards every KV
//! block is free, read from `/metrics`. (Checklist items 20, 21, 27.)
//!
//! `INFLIGHT_LOAD_CLIENTS` (default 16) and `INFLIGHT_LOAD_SECS` (default 10) size the run.
//! Skipped when SmolLM2 is not cached.

mod common;

use common::*;
use inflight_server::AppState;
use models::load::WeightFormat;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    completed: AtomicUsize,
    disconnected: AtomicUsize,
    failed: AtomicUsize,
    latencies_ms: std::sync::Mutex<Vec<u64>>,
    failures: std::sync::Mutex<Vec<String>>,
}

/// One request; `leave` drops it after two events. Returns an error description on failure.
async fn one(addr: SocketAddr, kind: usize, max_tokens: usize, leave: bool, tally: &Tally) {
    let t0 = Instant::now();
    let (path, body) = match kind {
        0 => ("/v1/completions", json!({"prompt": "Write a short poem about the sea.", "max_tokens": max_tokens, "stream": true, "temperature": 0.7, "seed": max_tokens})),
        1 => ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": max_tokens, "stream": true, "temperature": 0})),
        _ => ("/v2/models/ensemble/generate_stream", json!({"text_input": "What is machine learning?", "max_tokens": max_tokens, "bad_words": "", "stop_words": ""})),
    };
    let fail = |why: String| {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        tally.failures.lock().unwrap().push(format!("{path}: {why}"));
    };
    let mut c = match SseClient::open(addr, path, &[], &body).await {
        Ok(c) => c,
        Err(e) => return fail(format!("connect: {e}")),
    };
    if c.status != 200 {
        let rest = c.rest().await;
        return fail(format!("status {}: {rest:?}", c.status));
    }
    if leave {
        for _ in 0..2 {
            c.next().await;
        }
        drop(c);
        tally.disconnected.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let events = c.rest().await;
    if events.iter().any(|e| e.contains("\"error\"")) {
        return fail(format!("error event: {events:?}"));
    }
    if kind < 2 {
        let (_, finish, done) = completion_stream_text(&events);
        if !done || !matches!(finish.as_deref(), Some("stop" | "length")) {
            return fail(format!("stream did not end with a finish reason and [DONE]: {events:?}"));
        }
    } else if events.is_empty() || events.iter().any(|e| serde_json::from_str::<Value>(e).map(|v| v["text_output"].is_null()).unwrap_or(true)) {
        return fail(format!("bad Triton events: {events:?}"));
    }
    tally.completed.fetch_add(1, Ordering::Relaxed);
    tally.latencies_ms.lock().unwrap().push(t0.elapsed().as_millis() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_with_disconnects() {
    let (max_batch, max_queue) = (16, 64);
    let engine = need_model!(load_engine(WeightFormat::Native, max_batch, max_queue));
    let clients = env("INFLIGHT_LOAD_CLIENTS", 16);
    let secs = env("INFLIGHT_LOAD_SECS", 10);
    let state = AppState::ready(config(), engine.clone());
    let addr = spawn_server(state.clone());
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(secs as u64);

    let stop = Arc::new(AtomicBool::new(false));
    let (e2, stop2) = (engine.clone(), stop.clone());
    let sampler = tokio::spawn(async move {
        let mut worst = (0, 0);
        while !stop2.load(Ordering::Relaxed) {
            let (w, r) = e2.executor().queue_counts();
            worst = (worst.0.max(w), worst.1.max(r));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worst
    });

    let mut handles = Vec::new();
    for i in 0..clients {
        let tally = tally.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let leave = (i + n) % 5 == 4;
                one(addr, (i + n) % 3, 6 + (i + n) % 8, leave, &tally).await;
                n += 1;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (waiting, running) = sampler.await.unwrap();

    // Every block free, read from /metrics over the socket.
    let t0 = Instant::now();
    let page = loop {
        let r = http(addr, &raw_request("GET", "/metrics", &[], b"")).await.unwrap();
        let page = String::from_utf8(r.body).unwrap();
        let used = inflight_server::metrics::sample(&page, "inflight_kv_blocks_used").unwrap();
        let active = inflight_server::metrics::sample(&page, "inflight_running_requests").unwrap() + inflight_server::metrics::sample(&page, "inflight_queue_depth").unwrap();
        if (used == 0.0 && active == 0.0) || t0.elapsed() > Duration::from_secs(5) {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sample = |s: &str| inflight_server::metrics::sample(&page, s).unwrap();
    let mut lat = tally.latencies_ms.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    let (completed, disconnected, failed) = (tally.completed.load(Ordering::Relaxed), tally.disconnected.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    println!(
        "load: {clients} clients x {secs} s: {completed} completed, {disconnected} disconnected, {failed} failed; latency p50 {} ms, p99 {} ms; \
         {} tokens generated; max waiting {waiting}, max running {running}; aborted {}",
        pct(0.5),
        pct(0.99),
        sample("inflight_generation_tokens_total"),
        sample("inflight_requests_finished_total{reason=\"abort\"}"),
    );
    assert_eq!(failed, 0, "failures: {:#?}", tally.failures.lock().unwrap());
    assert!(completed > 0, "nothing completed");
    assert!(disconnected > 0, "no client left mid-stream");
    assert!(waiting <= max_queue && running <= max_batch, "limits exceeded: waiting {waiting}, running {running}");
    assert_eq!(sample("inflight_kv_blocks_used"), 0.0, "KV blocks still used:\n{page}");
    assert_eq!(sample("inflight_running_requests"), 0.0);
    assert_eq!(sample("inflight_queue_depth"), 0.0);
    assert_eq!(sample("inflight_kv_blocks_free"), sample("inflight_kv_blocks_total"));
    let aborted = sample("inflight_requests_finished_total{reason=\"abort\"}") as usize;
    assert!(aborted >= 1 && aborted <= disconnected, "aborted {aborted} of {disconnected} disconnects");
    assert_eq!(sample("inflight_requests_finished_total{reason=\"error\"}"), 0.0);
}
