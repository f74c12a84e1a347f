//! `inflight serve`: the HTTP server (OpenAI + Triton generate APIs) over the executor; see
//! the `inflight-server` crate. Binds first, loads the model in the background (inference
//! routes answer 503 meanwhile), prints the URL and a curl line when ready; SIGTERM/Ctrl-C
//! drains and exits 0; a model that fails to load exits 1.

use crate::generate::{Device, Weights};
use anyhow::{bail, Result};
use clap::Args;
use inflight_server::{Limits, ServeConfig, ServerConfig};
use models::load::WeightFormat;
use models::LlmConfig;
use std::path::Path;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A known model name (smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct), a `.gguf`
    /// file, or a Hugging Face checkpoint directory.
    #[arg(long, default_value = models::fetch::DEFAULT_MODEL)]
    model: String,
    /// The name clients use for the model (`model` in OpenAI requests, `/v2/models/<name>`);
    /// default: the known name, or the file/directory name.
    #[arg(long)]
    served_model_name: Option<String>,
    /// Where to run: the CPU backend, the GPU, or the GPU when one is usable.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Weight format on the CPU.
    #[arg(long, value_enum, default_value_t = Weights::Native)]
    weights: Weights,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Require `Authorization: Bearer <key>` on every route but the health routes.
    #[arg(long, env = "INFLIGHT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests running at once (admitted, holding KV blocks).
    #[arg(long, default_value_t = 64)]
    max_batch_size: usize,
    /// Requests waiting beyond those; more are refused with 429 at once.
    #[arg(long, default_value_t = 256)]
    max_queue_size: usize,
    /// Tokens computed in one step.
    #[arg(long, default_value_t = 2048)]
    max_num_tokens: usize,
    /// Longest sequence (prompt + generated); default the model's context.
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Positions per KV-cache block.
    #[arg(long, default_value_t = 32)]
    tokens_per_block: usize,
    /// Upper bound on the KV cache, in MiB.
    #[arg(long, default_value_t = 4096)]
    kv_cache_mb: u64,
    /// Do not reuse cached prompt prefixes.
    #[arg(long)]
    no_kv_reuse: bool,
    /// After SIGTERM, seconds in-flight requests may take before they are aborted.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Seconds a streaming client may read nothing while output waits before its request is
    /// aborted.
    #[arg(long, default_value_t = 30)]
    stream_write_timeout: u64,
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
    match a.device {
        Device::Cpu => {}
        Device::Cuda => bail!("the GPU engine is not available yet (only GPU kernels are built so far); use --device cpu"),
        Device::Auto => eprintln!("inflight: serving on the CPU backend (the GPU engine is not available yet)"),
    }
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key is empty");
    }
    let model_name = a.served_model_name.clone().unwrap_or_else(|| served_name(&a.model));
    let mut server = ServerConfig::new(model_name.clone());
    if model_name != a.model {
        server.aliases.push(a.model.clone());
    }
    server.api_key = a.api_key.clone();
    server.limits = Limits { drain_timeout: Duration::from_secs(a.drain_timeout), write_timeout: Duration::from_secs(a.stream_write_timeout), ..Limits::default() };
    let weights = match a.weights {
        Weights::Native => WeightFormat::Native,
        Weights::F32 => WeightFormat::F32,
    };
    let llm = LlmConfig {
        weights,
        max_batch_size: a.max_batch_size,
        max_queue_size: a.max_queue_size,
        max_num_tokens: a.max_num_tokens,
        max_seq_len: a.max_seq_len,
        tokens_per_block: a.tokens_per_block,
        kv_cache_bytes: Some(a.kv_cache_mb << 20),
        enable_kv_cache_reuse: !a.no_kv_reuse,
        ..LlmConfig::new(a.model.clone())
    };
    let config = ServeConfig { host: a.host, port: a.port, server, llm };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("inflight-http").build()?;
    let result = rt.block_on(inflight_server::serve(config));
    // A model still loading on a blocking thread must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    result?;
    Ok(())
}
