//! In-flight batching vs one request at a time on the CPU backend (issue: batching
//! benchmark): N prompts of P tokens → G new tokens each, all submitted at once, then the
//! same requests one after another; prints total output throughput and the ratio.
//!
//! `cargo run --release -p models --example batch_bench -- [model] [N] [P] [G]`
//! (defaults: smollm2 64 128 64); a fifth argument `inflight` skips the one-at-a-time run.

use host_runtime::sampling::SamplingParams;
use models::{Llm, LlmConfig};
use std::time::Instant;

fn main() -> Result<(), models::LlmError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().cloned().unwrap_or_else(|| "smollm2".into());
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (n, p, g) = (num(1, 64), num(2, 128), num(3, 64));
    let llm = Llm::new(LlmConfig { max_batch_size: n, enable_kv_cache_reuse: false, ..LlmConfig::new(model) })?;
    let vocab = llm.model.config().vocab_size as u64;
    // Distinct pseudo-random prompts of exactly p tokens (no shared prefix).
    let prompts: Vec<Vec<u32>> = (0..n as u64).map(|r| (0..p as u64).map(|t| ((r * 7919 + t * 104729 + 17) * 2654435761 % (vocab - 300) + 100) as u32).collect()).collect();
    let sampling = SamplingParams { temperature: 0.0, max_new_tokens: g, ignore_eos: true, ..Default::default() };

    let t0 = Instant::now();
    let handles: Vec<_> = prompts.iter().map(|p| llm.submit(p.clone(), &sampling)).collect::<Result<_, _>>()?;
    let batched_tokens: usize = handles.into_iter().map(|h| h.wait().token_ids.len()).sum();
    let batched = t0.elapsed().as_secs_f64();
    let m = llm.executor().metrics();
    println!("in-flight: {n} requests x ({p} prompt + {g} new): {batched_tokens} tokens in {batched:.2} s = {:.1} output tok/s ({} steps)", batched_tokens as f64 / batched, m.steps);

    if args.get(4).is_some_and(|a| a == "inflight") {
        return Ok(());
    }
    let t1 = Instant::now();
    let mut single_tokens = 0;
    for p in &prompts {
        single_tokens += llm.submit(p.clone(), &sampling)?.wait().token_ids.len();
    }
    let single = t1.elapsed().as_secs_f64();
    println!("one at a time: {single_tokens} tokens in {single:.2} s = {:.1} output tok/s", single_tokens as f64 / single);
    println!("ratio (in-flight / one at a time throughput): {:.2}x", (batched_tokens as f64 / batched) / (single_tokens as f64 / single));
    Ok(())
}
