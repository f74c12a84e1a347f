//! `inflight bench`: the benchmark tools (as TensorRT-LLM's `prepare_dataset.py`,
//! `gptSessionBenchmark` and `gptManagerBenchmark`).
//!
//! - `bench dataset`: a synthetic workload file (normally distributed lengths, random ids).
//! - `bench static`: fixed batches of fixed-length requests, all submitted at once.
//! - `bench serve`: a workload with Poisson arrivals and a concurrency cap, in process or
//!   against a running server over HTTP (OpenAI `/v1/completions`, streaming).

mod dataset;
mod http;
mod runner;
mod serve;
mod static_batch;
pub mod stats;

use crate::generate::Weights;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use models::load::WeightFormat;
use models::{Llm, LlmConfig};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Write a synthetic dataset (like prepare_dataset.py token-norm-dist).
    Dataset(dataset::DatasetArgs),
    /// Static batches: latency, first-token latency and tokens/s per batch size and
    /// input/output length (like gptSessionBenchmark).
    Static(static_batch::StaticArgs),
    /// A serving workload: arrivals at a request rate, a concurrency cap; TTFT, TPOT, ITL
    /// and throughput (like gptManagerBenchmark).
    Serve(serve::ServeBenchArgs),
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.cmd {
        BenchCmd::Dataset(a) => dataset::run(a),
        BenchCmd::Static(a) => static_batch::run(a),
        BenchCmd::Serve(a) => serve::run(a),
    }
}

/// The in-process engine's settings (shared by `static` and `serve`).
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// A known model name, a `.gguf` file or a Hugging Face checkpoint directory.
    #[arg(long, default_value = models::fetch::DEFAULT_MODEL)]
    model: String,
    /// Random weights for an architecture (the GPU engine's synthetic mode).
    #[arg(long, value_name = "ARCH")]
    synthetic: Option<String>,
    /// Weight format on the CPU.
    #[arg(long, value_enum, default_value_t = Weights::Native)]
    weights: Weights,
    /// Requests running at once in the engine (at least the largest batch).
    #[arg(long, default_value_t = 64)]
    max_batch_size: usize,
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
}

impl EngineArgs {
    /// Fails at once for what this build cannot run (`--synthetic`).
    pub fn check(&self) -> Result<()> {
        if let Some(arch) = &self.synthetic {
            bail!("--synthetic {arch}: the random-weight (synthetic) mode needs the GPU engine, which is not built yet; benchmark a real checkpoint with --model on the CPU backend meanwhile");
        }
        Ok(())
    }

    /// Loads the model (not timed by the benchmarks) with room for `min_batch` requests.
    pub fn load(&self, min_batch: usize, queue: usize) -> Result<Llm> {
        self.check()?;
        let cfg = LlmConfig {
            weights: match self.weights {
                Weights::Native => WeightFormat::Native,
                Weights::F32 => WeightFormat::F32,
            },
            max_batch_size: self.max_batch_size.max(min_batch).max(1),
            max_queue_size: queue.max(1024),
            max_num_tokens: self.max_num_tokens,
            max_seq_len: self.max_seq_len,
            tokens_per_block: self.tokens_per_block,
            kv_cache_bytes: Some(self.kv_cache_mb << 20),
            enable_kv_cache_reuse: !self.no_kv_reuse,
            ..LlmConfig::new(self.model.clone())
        };
        let t0 = std::time::Instant::now();
        let llm = Llm::new(cfg).with_context(|| format!("loading {}", self.model))?;
        eprintln!("inflight: loaded {} in {:.1} s", self.model, t0.elapsed().as_secs_f64());
        Ok(llm)
    }
}

/// Writes `value` as pretty JSON to `path` (`-` = stdout).
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path.as_os_str() == "-" {
        println!("{text}");
    } else {
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
