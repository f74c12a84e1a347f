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

use crate::engine_args::EngineArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use host_runtime::executor::Executor;
use models::{Llm, SyntheticEngine};

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

/// The in-process engine's settings (shared by `static` and `serve`): the engine flags
/// `inflight serve` has too, and the synthetic mode.
#[derive(Args, Debug, Clone)]
pub struct BenchEngineArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Random weights for an architecture (the GPU engine's synthetic mode).
    #[arg(long, value_name = "ARCH")]
    synthetic: Option<String>,
}

impl BenchEngineArgs {
    /// Fails at once for an unknown `--synthetic` architecture (before any work).
    pub fn check(&self) -> Result<()> {
        if let Some(arch) = &self.synthetic {
            if models::config::ModelConfig::named(arch).is_none() {
                bail!("--synthetic {arch}: unknown architecture (known: {})", models::config::NAMED_CONFIGS.join(", "));
            }
        }
        Ok(())
    }

    /// Loads the model, or generates random weights on the GPU for `--synthetic` (not timed
    /// by the benchmarks), with room for `min_batch` requests.
    pub fn load(&self, min_batch: usize, queue: usize) -> Result<BenchEngine> {
        self.check()?;
        let mut cfg = self.engine.llm_config(queue.max(1024));
        cfg.max_batch_size = cfg.max_batch_size.max(min_batch).max(1);
        let t0 = std::time::Instant::now();
        let engine = match &self.synthetic {
            Some(arch) => BenchEngine::Synthetic { name: format!("synthetic {arch}"), engine: SyntheticEngine::new(arch, &cfg, 1).with_context(|| format!("--synthetic {arch}"))? },
            None => {
                let model = &self.engine.model;
                BenchEngine::Model(Box::new(Llm::new(cfg).with_context(|| format!("loading {model}"))?))
            }
        };
        eprintln!("inflight: loaded {} in {:.1} s", engine.name(), t0.elapsed().as_secs_f64());
        Ok(engine)
    }
}

/// The in-process engine a benchmark drives: a loaded model, or random weights of a named
/// architecture on the GPU (`--synthetic`, token ids only).
pub enum BenchEngine {
    Model(Box<Llm>),
    Synthetic { name: String, engine: SyntheticEngine },
}

impl BenchEngine {
    pub fn executor(&self) -> &Executor {
        match self {
            BenchEngine::Model(l) => l.executor(),
            BenchEngine::Synthetic { engine, .. } => engine.executor(),
        }
    }

    /// Token ids a synthetic prompt may use (the model's vocabulary, within the tokenizer's).
    pub fn vocab(&self) -> usize {
        match self {
            BenchEngine::Model(l) => l.model.config().vocab_size.min(l.tokenizer.vocab_size()),
            BenchEngine::Synthetic { engine, .. } => engine.model_config.vocab_size,
        }
    }

    /// The model's vocabulary size (ids at or above it are invalid).
    pub fn model_vocab(&self) -> usize {
        match self {
            BenchEngine::Model(l) => l.model.config().vocab_size,
            BenchEngine::Synthetic { engine, .. } => engine.model_config.vocab_size,
        }
    }

    /// What the reports call it: the model spec, or `synthetic <arch>`.
    pub fn name(&self) -> String {
        match self {
            BenchEngine::Model(l) => format!("{} on {}", l.config.model, l.device),
            BenchEngine::Synthetic { name, .. } => name.clone(),
        }
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
