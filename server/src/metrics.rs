//! Prometheus metrics (`GET /metrics`, text format 0.0.4).
//!
//! Kept by the server: HTTP responses by endpoint and status, finished requests by reason,
//! prompt and generated tokens, time-to-first-token, inter-token latency and end-to-end
//! latency histograms, requests in flight. Read from the executor at scrape time: queue
//! depth and running requests (`queue_counts`), KV blocks used/free/total (`kv_blocks`),
//! reuse hits, preemptions, steps and scheduled tokens (`metrics`), and the last step's
//! iteration stats. All names start with `inflight_`.

use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A histogram with fixed upper bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

const LATENCY_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0];
const E2E_BOUNDS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(), count: AtomicU64::new(0), sum_us: AtomicU64::new(0) }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Why a request ended, as counted (`abort` = cancelled by the client, an admin or a
/// timeout).
pub const FINISH_REASONS: [&str; 4] = ["stop", "length", "abort", "error"];

/// The server's own counters.
pub struct Metrics {
    http: Mutex<BTreeMap<(String, u16), u64>>,
    finished: [AtomicU64; 4],
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http: Mutex::new(BTreeMap::new()),
            finished: Default::default(),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BOUNDS),
            itl: Histogram::new(LATENCY_BOUNDS),
            e2e: Histogram::new(E2E_BOUNDS),
        }
    }
}

impl Metrics {
    pub fn record_http(&self, endpoint: &str, status: u16) {
        let mut m = self.http.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((endpoint.to_string(), status)).or_default() += 1;
    }

    /// Counts a finished request (`reason` one of [`FINISH_REASONS`]).
    pub fn record_finish(&self, reason: &str) {
        if let Some(i) = FINISH_REASONS.iter().position(|&r| r == reason) {
            self.finished[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn finished(&self, reason: &str) -> u64 {
        FINISH_REASONS.iter().position(|&r| r == reason).map_or(0, |i| self.finished[i].load(Ordering::Relaxed))
    }
}

/// Middleware: counts every response by endpoint (the route pattern, or `unmatched`) and
/// status.
pub async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    state.metrics.record_http(&endpoint, resp.status().as_u16());
    resp
}

/// `GET /metrics`.
pub async fn handler(State(state): State<Arc<AppState>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&state)).into_response()
}

fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

/// The metrics page.
pub fn render(state: &AppState) -> String {
    let m = &state.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP inflight_http_requests_total HTTP responses by endpoint and status.\n# TYPE inflight_http_requests_total counter");
    for ((ep, status), n) in m.http.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "inflight_http_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}", ep.replace('\\', "\\\\").replace('"', "\\\""));
    }
    let _ = writeln!(out, "# HELP inflight_requests_finished_total Generation requests finished, by reason.\n# TYPE inflight_requests_finished_total counter");
    for (i, r) in FINISH_REASONS.iter().enumerate() {
        let _ = writeln!(out, "inflight_requests_finished_total{{reason=\"{r}\"}} {}", m.finished[i].load(Ordering::Relaxed));
    }
    counter(&mut out, "inflight_prompt_tokens_total", "Prompt tokens of accepted requests.", m.prompt_tokens.load(Ordering::Relaxed));
    counter(&mut out, "inflight_generation_tokens_total", "Tokens generated and delivered.", m.generation_tokens.load(Ordering::Relaxed));
    m.ttft.render(&mut out, "inflight_time_to_first_token_seconds", "Time from request arrival to its first generated token.");
    m.itl.render(&mut out, "inflight_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.");
    m.e2e.render(&mut out, "inflight_request_duration_seconds", "Time from request arrival to its last output.");
    gauge(&mut out, "inflight_http_inflight_requests", "Inference requests being handled (streams included).", state.inflight());
    gauge(&mut out, "inflight_model_ready", "1 when the model is loaded and the executor loop is alive.", u8::from(state.is_ready()));
    gauge(&mut out, "inflight_draining", "1 once shutdown began.", u8::from(state.draining()));
    if let Some(engine) = state.engine() {
        let ex = engine.executor();
        let (waiting, running) = ex.queue_counts();
        let (free, used, total) = ex.kv_blocks();
        let em = ex.metrics();
        gauge(&mut out, "inflight_queue_depth", "Requests waiting in the scheduler.", waiting);
        gauge(&mut out, "inflight_running_requests", "Requests admitted by the scheduler (holding KV blocks).", running);
        gauge(&mut out, "inflight_max_queue_size", "Configured limit on waiting requests.", engine.max_queue_size);
        gauge(&mut out, "inflight_max_batch_size", "Configured limit on running requests.", engine.max_batch_size);
        gauge(&mut out, "inflight_kv_blocks_used", "KV blocks in use.", used);
        gauge(&mut out, "inflight_kv_blocks_free", "KV blocks free (cached reusable blocks count as free).", free);
        gauge(&mut out, "inflight_kv_blocks_total", "KV blocks usable.", total);
        counter(&mut out, "inflight_kv_reuse_hits_total", "KV blocks taken from the prefix cache.", em.reused_blocks);
        counter(&mut out, "inflight_preempted_total", "Requests preempted (recomputed later).", em.preempted);
        counter(&mut out, "inflight_steps_total", "Executor steps.", em.steps);
        counter(&mut out, "inflight_scheduled_tokens_total", "Tokens computed by the backend.", em.scheduled_tokens);
        if let Some(stats) = ex.last_stats().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()) {
            if let Some(ms) = stats.get("step_ms").and_then(|v| v.as_f64()) {
                gauge(&mut out, "inflight_last_step_seconds", "Duration of the last executor step.", ms / 1e3);
            }
            if let Some(t) = stats.get("scheduled_tokens").and_then(|v| v.as_u64()) {
                gauge(&mut out, "inflight_last_step_tokens", "Tokens scheduled in the last executor step.", t);
            }
        }
    }
    out
}

/// Reads one sample (`name` or `name{labels}`) from a metrics page: for tests and tools.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}
