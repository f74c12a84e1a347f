//! `inflight serve`: the HTTP server (OpenAI + Triton generate APIs) over the executor; see
//! the `inflight-server` crate. Binds first, loads the model in the background (inference
//! routes answer 503 meanwhile), prints the URL and a curl line when ready; SIGTERM/Ctrl-C
//! drains and exits 0; a model that fails to load exits 1.

use crate::engine_args::EngineArgs;
use anyhow::{bail, Result};
use clap::Args;
use inflight_server::{Limits, ServeConfig, ServerConfig};
use std::path::Path;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// The name clients use for the model (`model` in OpenAI requests, `/v2/models/<name>`);
    /// default: the known name, or the file/directory name.
    #[arg(long)]
    served_model_name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Require `Authorization: Bearer <key>` on every route but the health routes.
    #[arg(long, env = "INFLIGHT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests waiting beyond the `--max-batch-size` running ones; more are refused with
    /// 429 at once.
    #[arg(long, default_value_t = 256)]
    max_queue_size: usize,
    /// After SIGTERM, seconds in-flight requests may take before they are aborted.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Seconds a streaming client may read nothing while output waits before its request is
    /// aborted.
    #[arg(long, default_value_t = 30)]
    stream_write_timeout: u64,
    /// Seconds a health probe's result (a real one-token generation) is reused by
    /// `/health` and `/v2/health/ready`.
    #[arg(long, default_value_t = 5)]
    health_ttl: u64,
}

/// The served name: the canonical known name, or the file stem / directory name.
fn served_name(spec: &str) -> String {
    if let Some(k) = models::fetch::known(spec) {
        return k.names[0].to_string();
    }
    let p = Path::new(spec);
    let stem = if p.is_dir() { p.file_name() } else { p.file_stem() };
    stem.map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty()).unwrap_or_else(|| spec.to_string())
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key is empty");
    }
    let model = &a.engine.model;
    let model_name = a.served_model_name.clone().unwrap_or_else(|| served_name(model));
    let mut server = ServerConfig::new(model_name.clone());
    if &model_name != model {
        server.aliases.push(model.clone());
    }
    server.api_key = a.api_key.clone();
    server.limits = Limits {
        drain_timeout: Duration::from_secs(a.drain_timeout),
        write_timeout: Duration::from_secs(a.stream_write_timeout),
        health_ttl: Duration::from_secs(a.health_ttl),
        ..Limits::default()
    };
    let llm = a.engine.llm_config(a.max_queue_size);
    let config = ServeConfig { host: a.host, port: a.port, server, llm };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("inflight-http").build()?;
    let result = rt.block_on(inflight_server::serve(config));
    // A model still loading on a blocking thread must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    result?;
    Ok(())
}
