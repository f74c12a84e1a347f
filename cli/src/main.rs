//! `inflight`: the command line.
//!
//! `inflight generate` runs a model on the CPU reference backend (the GPU engine is the next
//! milestone). Generated text goes to stdout as it is produced; logs go to stderr.

mod generate;

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
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.cmd {
        Cmd::Generate(args) => generate::run(args),
    };
    if let Err(e) = result {
        eprintln!("inflight: error: {e:#}");
        std::process::exit(1);
    }
}
