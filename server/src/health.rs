//! The health probe behind `GET /health` and `GET /v2/health/ready`: a real one-token greedy
//! generation through the executor ([`host_runtime::executor::Executor::probe`]) on the KV
//! block the executor keeps for probes, so it never takes user KV, a batch slot or a queue
//! place: a full engine neither refuses it nor delays for it (one forward pass of a couple
//! of tokens between two user steps).
//!
//! Rate limit: one probe runs at a time per server; its result is reused for
//! `Limits::health_ttl` (default 5 s), so any number of probers cost at most one probe per
//! TTL. A probe waits for the step in progress (seconds, for a long prefill on the CPU);
//! one that gets no answer within `Limits::health_timeout` (default 20 s) makes `/health`
//! answer 503 (a stuck loop never hangs the probe), but only a probe that fails outright
//! (a backend error, a non-finite logit, the loop gone) turns new requests away: a busy
//! engine is not refused work for being busy.
//!
//! A failed probe makes the server unready: `/health` answers 503 and new inference
//! requests 503 until a probe succeeds again. After a failure the server re-probes in the
//! background every TTL until one succeeds (recovery without outside traffic) or the loop is
//! found dead (no recovery: liveness `/v2/health/live` turns 503 so an orchestrator restarts
//! the process). A request that ends with a generation error also triggers a probe (unless
//! one is fresh), so a broken backend is noticed before the next outside probe.

use crate::engine::Engine;
use host_runtime::executor::ProbeError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a probe found.
#[derive(Clone, Debug)]
enum Outcome {
    Passed,
    /// No answer in time: the engine is busy or stuck (503 on `/health` only).
    TimedOut(String),
    /// The generation failed or the loop is gone (503 for new requests too).
    Failed(String),
}

impl Outcome {
    fn result(&self) -> Result<(), String> {
        match self {
            Outcome::Passed => Ok(()),
            Outcome::TimedOut(m) | Outcome::Failed(m) => Err(m.clone()),
        }
    }
}

/// The last probe's outcome and the lock that lets one probe run at a time.
#[derive(Default)]
pub struct HealthProbe {
    last: Mutex<Option<(Instant, Outcome)>>,
    running: tokio::sync::Mutex<()>,
    monitoring: AtomicBool,
}

impl HealthProbe {
    /// The last result, if it is younger than `ttl`.
    fn fresh(&self, ttl: Duration) -> Option<Result<(), String>> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref().filter(|(at, _)| at.elapsed() < ttl).map(|(_, o)| o.result())
    }

    /// The last probe's failure, whatever its age (what keeps new requests out); a probe
    /// that timed out is not one.
    pub fn failure(&self) -> Option<String> {
        match &*self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((_, Outcome::Failed(m))) => Some(m.clone()),
            _ => None,
        }
    }

    fn store(&self, o: Outcome) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), o));
    }

    /// The engine's health: a fresh result, or a new probe (one at a time; others wait for
    /// it and share its result).
    pub async fn check(self: &Arc<Self>, engine: &Arc<Engine>, ttl: Duration, timeout: Duration) -> Result<(), String> {
        if let Some(r) = self.fresh(ttl) {
            return r;
        }
        let _one = self.running.lock().await;
        if let Some(r) = self.fresh(ttl) {
            return r;
        }
        let outcome = run_probe(engine, timeout).await;
        self.store(outcome.clone());
        if matches!(outcome, Outcome::Failed(_)) {
            self.monitor(engine.clone(), ttl, timeout);
        }
        outcome.result()
    }

    /// Probes in the background (unless a fresh result exists): after a generation error.
    pub fn suspect(self: &Arc<Self>, engine: &Arc<Engine>, ttl: Duration, timeout: Duration) {
        if self.fresh(ttl).is_some() {
            return;
        }
        let (me, engine) = (self.clone(), engine.clone());
        tokio::spawn(async move {
            let _ = me.check(&engine, ttl, timeout).await;
        });
    }

    /// After a failure: re-probes every `ttl` until a probe succeeds or the loop is dead.
    fn monitor(self: &Arc<Self>, engine: Arc<Engine>, ttl: Duration, timeout: Duration) {
        if self.monitoring.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            while engine.executor().is_alive() {
                tokio::time::sleep(ttl).await;
                if me.check(&engine, ttl, timeout).await.is_ok() {
                    break;
                }
            }
            me.monitoring.store(false, Ordering::Release);
        });
    }
}

/// One probe on a blocking thread: the reserved prompt, one greedy token.
async fn run_probe(engine: &Arc<Engine>, timeout: Duration) -> Outcome {
    let e = engine.clone();
    let r = tokio::task::spawn_blocking(move || e.executor().probe(&e.probe_prompt, timeout)).await;
    match r {
        Ok(Ok(_token)) => Outcome::Passed,
        Ok(Err(e @ ProbeError::TimedOut(_))) => Outcome::TimedOut(format!("the health probe got no answer: {e}")),
        Ok(Err(e)) => Outcome::Failed(format!("the health probe failed: {e}")),
        Err(e) => Outcome::Failed(format!("the health probe task failed: {e}")),
    }
}
