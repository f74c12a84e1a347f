//! `inflight`: the command line.
//!
//! `inflight generate` runs a model on the CPU reference backend (the GPU engine is the next
//! milestone). Generated text goes to stdout as it is produced; logs go to stderr.
//! `inflight serve` runs the HTTP server (OpenAI + Triton generate APIs).
//! `inflight bench` writes synthetic datasets and benchmarks static batches or a serving
//! workload (in process or against a server over HTTP).

mod bench;
mod engine_args;
mod generate;
mod serve;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "inflight", version, about = "LLM inference engine: generate text, serve, benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt (or a JSON-lines file of prompts).
    Generate(generate::GenerateArgs),
    /// Serve the model over HTTP: OpenAI (/v1/completions, /v1/chat/completions) and
    /// Triton generate (/v2/models/ensemble/generate[_stream]) APIs.
    Serve(serve::ServeArgs),
    /// Benchmarks: write a synthetic dataset, static batches (latency, tokens/s), or a
    /// serving workload (TTFT, TPOT, ITL, throughput) in process or against a server.
    Bench(bench::BenchArgs),
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`); per-step iteration stats (JSON)
/// are at `RUST_LOG=inflight::iteration=debug`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(true).try_init();
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    let result: Result<()> = match cli.cmd {
        Cmd::Generate(args) => generate::run(args),
        Cmd::Serve(args) => serve::run(args),
        Cmd::Bench(args) => bench::run(args),
    };
    if let Err(e) = result {
        eprintln!("inflight: error: {e:#}");
        std::process::exit(1);
    }
}
