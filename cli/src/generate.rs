//! `inflight generate`: one prompt streamed to stdout, or a JSON-lines file of prompts run as
//! one batch.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use models::generate::{generate_batch, GenParams};
use models::load::WeightFormat;
use models::Llm;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// Keep the checkpoint's block format (GGUF), decoded inside the matmul.
    Native,
    /// Dequantise everything to f32 at load.
    F32,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A known model name (smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct), a `.gguf`
    /// file, or a Hugging Face checkpoint directory.
    #[arg(long, default_value = models::fetch::DEFAULT_MODEL)]
    model: String,
    /// The prompt.
    #[arg(long, conflicts_with = "prompts_file")]
    prompt: Option<String>,
    /// A JSON-lines file of `{"prompt": "..."}` objects, generated as one batch.
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// Tokens to generate at most, per prompt.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Seed of the sampler (same seed, same output).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Render the prompt with the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// Where to run: the CPU backend, the GPU, or the GPU when one is usable.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Weight format on the CPU.
    #[arg(long, value_enum, default_value_t = Weights::Native)]
    weights: Weights,
    /// Print one JSON object per prompt: {"index", "text", "token_ids", "finish_reason"}.
    #[arg(long)]
    json: bool,
}

/// The prompts of a JSON-lines file, with the line of any bad entry named.
fn read_prompts(path: &PathBuf) -> Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}: not valid UTF-8 text", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
        let Some(p) = v.get("prompt").and_then(|p| p.as_str()) else {
            bail!("{}: line {}: expected an object with a string field \"prompt\"", path.display(), i + 1);
        };
        prompts.push(p.to_owned());
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(prompts)
}

fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda => bail!("the GPU engine is not available yet (only GPU kernels are built so far); use --device cpu"),
        Device::Auto => {
            eprintln!("inflight: running on the CPU backend (the GPU engine is not available yet)");
            Ok(())
        }
    }
}

pub fn run(a: GenerateArgs) -> Result<()> {
    check_device(a.device)?;
    let prompts = match (&a.prompt, &a.prompts_file) {
        (Some(p), None) => vec![p.clone()],
        (None, Some(f)) => read_prompts(f)?,
        _ => bail!("give --prompt TEXT or --prompts-file FILE"),
    };
    let format = match a.weights {
        Weights::Native => WeightFormat::Native,
        Weights::F32 => WeightFormat::F32,
    };
    let t0 = std::time::Instant::now();
    let llm = Llm::load_with(&a.model, format)?;
    let c = llm.model.config();
    eprintln!("inflight: loaded {} ({} layers, hidden {}, vocab {}) in {:.1} s", llm.path.display(), c.layers, c.hidden, c.vocab_size, t0.elapsed().as_secs_f64());
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| llm.prompt_ids(p, a.chat)).collect::<Result<_, _>>()?;
    let params = GenParams { max_tokens: a.max_tokens, temperature: a.temperature, seed: a.seed, stop_ids: llm.stop_ids() };
    params.validate().map_err(|m| anyhow::anyhow!("invalid --temperature: {m}"))?;

    // A single prompt streams its text as it is generated; a batch prints when done.
    let stream = prompts.len() == 1 && !a.json;
    let mut decoders: Vec<_> = (0..prompts.len()).map(|_| llm.tokenizer.stream_decoder(true)).collect();
    let mut stdout = std::io::stdout().lock();
    let mut stream_err = None;
    let t1 = std::time::Instant::now();
    let outs = generate_batch(&llm.model, &ids, &params, |i, tok| {
        if stream && stream_err.is_none() {
            match decoders[i].push(&llm.tokenizer, tok) {
                Ok(Some(text)) => {
                    let _ = stdout.write_all(text.as_bytes());
                    let _ = stdout.flush();
                }
                Ok(None) => {}
                Err(e) => stream_err = Some(e),
            }
        }
    });
    if let Some(e) = stream_err {
        bail!("decoding the output: {e}");
    }
    let generated: usize = outs.iter().map(|o| o.token_ids.len()).sum();
    for (i, out) in outs.iter().enumerate() {
        if stream {
            let rest = decoders[i].finish(&llm.tokenizer)?;
            writeln!(stdout, "{rest}")?;
        } else {
            let text = llm.tokenizer.decode(&out.token_ids, true)?;
            if a.json {
                let line = serde_json::json!({"index": i, "text": text, "token_ids": out.token_ids, "finish_reason": out.finish_reason.as_str()});
                writeln!(stdout, "{line}")?;
            } else {
                writeln!(stdout, "{text}")?;
            }
        }
    }
    let secs = t1.elapsed().as_secs_f64();
    eprintln!("inflight: {generated} tokens for {} prompt(s) in {secs:.2} s ({:.1} tok/s)", prompts.len(), generated as f64 / secs.max(1e-9));
    Ok(())
}
