//! `inflight serve`: an HTTP server over the in-flight batching executor, speaking the
//! OpenAI API (`/v1/completions`, `/v1/chat/completions`, `/v1/models`) and Triton's
//! generate extension as the TensorRT-LLM backend serves it
//! (`/v2/models/{ensemble|tensorrt_llm_bls|<name>}/generate[_stream]`), with health,
//! Prometheus metrics, API-key auth, request limits, cancellation on disconnect and a
//! draining shutdown.
//!
//! Modules: [`state`] (config, loading/ready phase, draining, in-flight count), [`engine`]
//! (the executor as the routes use it; jobs cancel on drop), [`auth`], [`error`] (one
//! error type, two shapes), [`limits`] (body, JSON and numeric checks), [`health`] (the
//! health probe: a real one-token generation, cached), [`openai`],
//! [`triton`], [`sse`] (streams), [`metrics`], [`admin`] (health, abort-all, 404).
//!
//! Lifecycle ([`serve`]): bind first; the model loads in the background (inference routes
//! answer 503 "Loading model" meanwhile) and warms up with a one-token generation, then the
//! URL and a curl line are printed. On SIGTERM or Ctrl-C ([`run`]): new requests get 503,
//! requests in flight finish (aborted after the drain timeout, so open streams still get
//! their terminal event), the listener closes, the executor shuts down, and `serve` returns
//! `Ok` (exit 0). A model that fails to load makes `serve` return the error; so does an
//! engine whose loop stopped (a backend panic): its requests in flight have already ended
//! with an error, the server closes and `inflight serve` exits 1, for a supervisor to restart
//! it (the GPU's memory goes with the process).

pub mod admin;
pub mod auth;
pub mod engine;
pub mod error;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod sse;
pub mod state;
pub mod triton;

pub use engine::Engine;
pub use limits::Limits;
pub use state::{AppState, Phase, ServerConfig};

use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use axum::routing::{get, post};
use axum::{middleware, Router};
use models::LlmConfig;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Every route, with auth and metrics layered over all of them (the 404 fallback included).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/health", get(admin::health))
        .route("/metrics", get(metrics::handler))
        .route("/v1/models", get(openai::models))
        .route("/v1/completions", post(openai::completions::handler))
        .route("/v1/chat/completions", post(openai::chat::handler))
        .route("/v2", get(triton::server_metadata))
        .route("/v2/health/ready", get(admin::ready))
        .route("/v2/health/live", get(admin::live))
        .route("/v2/models/{model}", get(triton::metadata))
        .route("/v2/models/{model}/ready", get(triton::model_ready))
        .route("/v2/models/{model}/generate", post(triton::generate))
        .route("/v2/models/{model}/generate_stream", post(triton::generate_stream))
        .route("/admin/abort_all", post(admin::abort_all))
        .fallback(admin::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_api_key))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Everything `inflight serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    pub server: ServerConfig,
    pub llm: LlmConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("the model failed to load: {0}")]
    Load(String),
    #[error("the engine stopped: {0}")]
    Engine(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds, loads the model in the background, serves until SIGTERM/Ctrl-C, drains.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr).await.map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
    let local = listener.local_addr()?;
    eprintln!("inflight: listening on http://{local}; loading {} ...", config.llm.model);
    let state = AppState::loading(config.server);
    spawn_loader(state.clone(), config.llm, Some(local));
    run(listener, state, shutdown_signal()).await
}

/// Loads the engine on a blocking thread and publishes it (or the failure) in `state`;
/// with `announce`, prints the URL and a curl line once ready.
pub fn spawn_loader(state: Arc<AppState>, llm: LlmConfig, announce: Option<SocketAddr>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let name = state.config.model_name.clone();
        let t0 = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || Engine::load(name, llm)).await;
        match loaded {
            Ok(Ok(engine)) => {
                let (max_seq_len, kv) = (engine.max_seq_len, engine.executor().kv_blocks().2);
                state.set_phase(Phase::Ready(Arc::new(engine)));
                if let Some(addr) = announce {
                    announce_ready(&state, addr, t0.elapsed(), max_seq_len, kv);
                }
            }
            Ok(Err(e)) => state.set_phase(Phase::Failed(e.to_string())),
            Err(e) => state.set_phase(Phase::Failed(format!("the loader panicked: {e}"))),
        }
    })
}

fn announce_ready(state: &AppState, addr: SocketAddr, took: Duration, max_seq_len: usize, kv_blocks: usize) {
    use std::io::Write;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let host = if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("[{host}]") } else { host };
    let url = format!("http://{host}:{}", addr.port());
    let model = &state.config.model_name;
    let auth = if state.config.api_key.is_some() { " -H \"Authorization: Bearer $INFLIGHT_API_KEY\"" } else { "" };
    eprintln!("inflight: {model} ready in {:.1} s (context {max_seq_len} tokens, {kv_blocks} KV blocks)", took.as_secs_f64());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Serving {model} at {url}  (OpenAI: {url}/v1, Triton: {url}/v2/models/ensemble/generate)");
    let _ = writeln!(
        out,
        "curl {url}/v1/completions -H 'Content-Type: application/json'{auth} -d '{{\"model\": \"{model}\", \"prompt\": \"The capital of France is\", \"max_tokens\": 16, \"temperature\": 0}}'"
    );
    let _ = out.flush();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Serves `state` on `listener` until `shutdown` resolves (then drains), the model fails
/// to load or the engine loop stops (then returns the error).
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // No Nagle delay: stream events go out as they are produced.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(server.into_future());
    let mut changes = state.phase_changes();
    let failed = async {
        loop {
            if let Phase::Failed(m) = state.phase() {
                return m;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let outcome = tokio::select! {
        _ = shutdown => None,
        m = failed => Some(ServeError::Load(m)),
        m = engine_stopped(&state) => Some(ServeError::Engine(m)),
        r = &mut server => Some(ServeError::Load(format!("the HTTP server stopped: {r:?}"))),
    };
    if outcome.is_none() {
        drain(&state).await;
    }
    state.begin_drain();
    let _ = stop_tx.send(());
    if tokio::time::timeout(Duration::from_secs(5), &mut server).await.is_err() {
        server.abort();
    }
    if let Some(engine) = state.engine() {
        let _ = tokio::task::spawn_blocking(move || engine.executor().shutdown(true)).await;
    }
    match outcome {
        Some(e) => Err(e),
        None => {
            eprintln!("inflight: stopped");
            Ok(())
        }
    }
}

/// Resolves with the reason once a loaded engine's loop has stopped (checked every 200 ms).
async fn engine_stopped(state: &AppState) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(e) = state.engine().filter(|e| !e.executor().is_alive()) {
            return e.unhealthy_reason();
        }
    }
}

/// New requests get 503 from now on; waits for the requests in flight, aborting them after
/// the drain timeout (their streams end with `finish_reason: "abort"`).
pub async fn drain(state: &Arc<AppState>) {
    state.begin_drain();
    eprintln!("inflight: shutting down: {} request(s) in flight", state.inflight());
    if tokio::time::timeout(state.config.limits.drain_timeout, state.wait_idle()).await.is_err() {
        let aborted = state.engine().map_or(0, |e| e.abort_all());
        eprintln!("inflight: drain timeout: aborted {aborted} request(s)");
        let _ = tokio::time::timeout(Duration::from_secs(5), state.wait_idle()).await;
    }
}
