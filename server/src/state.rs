//! Shared server state ([`AppState`]): the configuration, the engine's lifecycle
//! ([`Phase`]: loading → ready, or failed), draining after SIGTERM, the count of inference
//! requests in flight (what a drain waits for), and the metrics.
//!
//! Every inference route starts with [`AppState::ready_engine`]: 503 "Loading model" until
//! the model is loaded and warmed up, 503 once draining began, when the executor loop is
//! gone, or while the last health probe failed. [`AppState::check_health`] is the readiness
//! `/health` reports (it runs the probe, see [`crate::health`]); [`AppState::is_ready`] the
//! same without running one.

use crate::engine::Engine;
use crate::error::ApiError;
use crate::health::HealthProbe;
use crate::limits::Limits;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{watch, Notify};

/// What the routes need to know besides the engine.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The served model name (`model` in OpenAI requests, `/v2/models/<name>`).
    pub model_name: String,
    /// Other names accepted for the model (e.g. the path it was loaded from).
    pub aliases: Vec<String>,
    /// `Some(key)`: every route but the health routes needs `Authorization: Bearer key`.
    pub api_key: Option<String>,
    pub limits: Limits,
}

impl ServerConfig {
    pub fn new(model_name: impl Into<String>) -> Self {
        ServerConfig { model_name: model_name.into(), aliases: Vec::new(), api_key: None, limits: Limits::default() }
    }

    /// Whether `name` names the served model.
    pub fn serves(&self, name: &str) -> bool {
        name == self.model_name || self.aliases.iter().any(|a| a == name)
    }
}

/// The engine's lifecycle.
#[derive(Clone)]
pub enum Phase {
    Loading,
    Ready(Arc<Engine>),
    Failed(String),
}

pub struct AppState {
    pub config: ServerConfig,
    phase: RwLock<Phase>,
    phase_tx: watch::Sender<u8>,
    draining: AtomicBool,
    inflight: AtomicUsize,
    idle: Notify,
    pub metrics: Metrics,
    pub health: Arc<HealthProbe>,
}

/// Counts one inference request in flight while it lives (held by the handler, and by the
/// SSE stream for streaming responses).
pub struct InflightToken(Arc<AppState>);

impl Drop for InflightToken {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl AppState {
    /// A state whose model is still loading.
    pub fn loading(config: ServerConfig) -> Arc<AppState> {
        Arc::new(AppState {
            config,
            phase: RwLock::new(Phase::Loading),
            phase_tx: watch::channel(0).0,
            draining: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            metrics: Metrics::default(),
            health: Arc::default(),
        })
    }

    /// A state over an engine already loaded.
    pub fn ready(config: ServerConfig, engine: Arc<Engine>) -> Arc<AppState> {
        let s = Self::loading(config);
        s.set_phase(Phase::Ready(engine));
        s
    }

    pub fn set_phase(&self, phase: Phase) {
        *self.phase.write().unwrap_or_else(|e| e.into_inner()) = phase;
        self.phase_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn phase(&self) -> Phase {
        self.phase.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notified whenever the phase changes.
    pub fn phase_changes(&self) -> watch::Receiver<u8> {
        self.phase_tx.subscribe()
    }

    /// The engine when loaded (also while draining).
    pub fn engine(&self) -> Option<Arc<Engine>> {
        match self.phase() {
            Phase::Ready(e) => Some(e),
            _ => None,
        }
    }

    /// The engine for a new inference request, or the 503 to answer.
    pub fn ready_engine(&self) -> Result<Arc<Engine>, ApiError> {
        let engine = self.running_engine()?;
        match self.health.failure() {
            Some(m) => Err(ApiError::unavailable(m)),
            None => Ok(engine),
        }
    }

    /// The engine when loaded, its loop running and the server not draining (whatever the
    /// last health probe said), or the 503 to answer.
    fn running_engine(&self) -> Result<Arc<Engine>, ApiError> {
        if self.draining() {
            return Err(ApiError::shutting_down());
        }
        match self.phase() {
            Phase::Loading => Err(ApiError::loading()),
            Phase::Failed(m) => Err(ApiError::unavailable(format!("the model failed to load: {m}"))),
            Phase::Ready(e) if !e.is_healthy() => Err(ApiError::unavailable(e.unhealthy_reason())),
            Phase::Ready(e) => Ok(e),
        }
    }

    /// Readiness without probing: loaded, warmed up, executor loop alive, not draining,
    /// and the last health probe (if any) succeeded.
    pub fn is_ready(&self) -> bool {
        !self.draining() && matches!(self.phase(), Phase::Ready(e) if e.is_healthy()) && self.health.failure().is_none()
    }

    /// Readiness with a health probe (a cached result when one is fresh): `Err` says why
    /// the server is not ready.
    pub async fn check_health(&self) -> Result<(), String> {
        let engine = self.running_engine().map_err(|e| e.message)?;
        let l = &self.config.limits;
        self.health.check(&engine, l.health_ttl, l.health_timeout).await
    }

    /// After a generation error: probe the engine in the background (unless a fresh result
    /// exists), so that a broken backend turns the server unready.
    pub fn suspect_engine(&self, engine: &Arc<Engine>) {
        let l = &self.config.limits;
        self.health.suspect(engine, l.health_ttl, l.health_timeout);
    }

    /// Liveness: false only when a loaded engine's loop died or loading failed.
    pub fn is_live(&self) -> bool {
        match self.phase() {
            Phase::Loading => true,
            Phase::Failed(_) => false,
            Phase::Ready(e) => e.executor().is_alive(),
        }
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn inflight_token(self: &Arc<Self>) -> InflightToken {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightToken(self.clone())
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Returns once no inference request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// 404 unless `name` is the served model.
    pub fn check_model(&self, name: &str) -> Result<(), ApiError> {
        if self.config.serves(name) {
            Ok(())
        } else {
            Err(ApiError::model_not_found(&self.config.model_name))
        }
    }
}
