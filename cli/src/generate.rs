//! `inflight generate`: one prompt streamed to stdout, or a JSON-lines file of prompts run
//! through the executor as one in-flight batch.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use host_runtime::executor::{FinishReason, Handle};
use host_runtime::sampling::SamplingParams;
use models::load::WeightFormat;
use models::{Llm, LlmConfig};
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
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: i64,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Penalise tokens already in the prompt or output (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Stop when this text appears (repeatable); it is not part of the output.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Seed of the sampler (same seed, same output).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most requests in one batch.
    #[arg(long, default_value_t = 64)]
    max_batch_size: usize,
    /// Positions per KV-cache block.
    #[arg(long, default_value_t = 32)]
    tokens_per_block: usize,
    /// Do not reuse cached prompt prefixes.
    #[arg(long)]
    no_kv_reuse: bool,
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

impl From<Device> for models::Device {
    fn from(d: Device) -> Self {
        match d {
            Device::Cpu => models::Device::Cpu,
            Device::Cuda => models::Device::Cuda,
            Device::Auto => models::Device::Auto,
        }
    }
}

fn sampling(a: &GenerateArgs) -> SamplingParams {
    SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        seed: Some(a.seed),
        stop_strings: a.stop.clone(),
        ignore_eos: a.ignore_eos,
        max_new_tokens: a.max_tokens,
        ..SamplingParams::default()
    }
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let prompts = match (&a.prompt, &a.prompts_file) {
        (Some(p), None) => vec![p.clone()],
        (None, Some(f)) => read_prompts(f)?,
        _ => bail!("give --prompt TEXT or --prompts-file FILE"),
    };
    let weights = match a.weights {
        Weights::Native => WeightFormat::Native,
        Weights::F32 => WeightFormat::F32,
    };
    let t0 = std::time::Instant::now();
    let config = LlmConfig { weights, device: a.device.into(), max_batch_size: a.max_batch_size, tokens_per_block: a.tokens_per_block, enable_kv_cache_reuse: !a.no_kv_reuse, ..LlmConfig::new(a.model.clone()) };
    let llm = Llm::new(config)?;
    let c = llm.model.config();
    eprintln!("inflight: loaded {} ({} layers, hidden {}, vocab {}) on {} in {:.1} s", llm.path.display(), c.layers, c.hidden, c.vocab_size, llm.device, t0.elapsed().as_secs_f64());
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| llm.prompt_ids(p, a.chat)).collect::<Result<_, _>>()?;
    let params = sampling(&a);
    let t1 = std::time::Instant::now();
    // Every prompt goes into the executor at once: one in-flight batch.
    let handles: Vec<Handle> = ids.into_iter().map(|p| llm.submit(p, &params)).collect::<Result<_, _>>()?;
    let mut stdout = std::io::stdout().lock();
    let mut generated = 0;
    if prompts.len() == 1 && !a.json {
        // A single prompt streams its text as it is generated.
        let h = handles.into_iter().next().expect("one handle");
        for out in h.outputs.iter() {
            stdout.write_all(out.text.as_bytes())?;
            stdout.flush()?;
            generated = out.generated_tokens;
            if let Some(f) = out.finish {
                if let FinishReason::Error(e) = f {
                    bail!("generation failed: {e}");
                }
                break;
            }
        }
        writeln!(stdout)?;
    } else {
        for (i, h) in handles.into_iter().enumerate() {
            let out = h.wait();
            generated += out.token_ids.len();
            let finish = out.finish.unwrap_or(FinishReason::Length);
            if a.json {
                let line = serde_json::json!({"index": i, "text": out.text, "token_ids": out.token_ids, "finish_reason": finish.as_str()});
                writeln!(stdout, "{line}")?;
            } else {
                writeln!(stdout, "{}", out.text)?;
            }
            if let FinishReason::Error(e) = finish {
                eprintln!("inflight: prompt {i} failed: {e}");
            }
        }
    }
    let secs = t1.elapsed().as_secs_f64();
    eprintln!("inflight: {generated} tokens for {} prompt(s) in {secs:.2} s ({:.1} tok/s)", prompts.len(), generated as f64 / secs.max(1e-9));
    Ok(())
}
