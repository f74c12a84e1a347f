//! `inflight bench static`: for each batch size × (input, output) length, `batch` requests of
//! exactly `input` random tokens, `max_new_tokens = output`, `ignore_eos`, greedy, submitted
//! all at once; latency (all done), first-token latency (mean and slowest request) and
//! generated tokens per second, averaged over the timed runs (like gptSessionBenchmark).

use super::dataset::Rng;
use super::{runner, write_json, BenchEngineArgs};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct StaticArgs {
    #[command(flatten)]
    engine: BenchEngineArgs,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch_sizes: Vec<usize>,
    /// (input, output) length pairs: `IN,OUT` separated by `;`.
    #[arg(long, default_value = "128,128", value_parser = parse_lens)]
    input_output_lens: LenPairs,
    /// Untimed runs before the timed ones, per configuration.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs per configuration (the report is their mean).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed of the random prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the results as JSON to this file (`-` = stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct LenPairs(Vec<(usize, usize)>);

/// `128,128;512,32` → [(128, 128), (512, 32)]; lengths must be ≥ 1.
pub fn parse_lens(s: &str) -> Result<LenPairs, String> {
    let mut v = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((i, o)) = part.split_once(',') else {
            return Err(format!("`{part}`: expected INPUT,OUTPUT (e.g. 128,128;512,32)"));
        };
        let num = |x: &str| x.trim().parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| format!("`{part}`: `{}` is not a length ≥ 1", x.trim()));
        v.push((num(i)?, num(o)?));
    }
    if v.is_empty() {
        return Err("no INPUT,OUTPUT pairs".into());
    }
    Ok(LenPairs(v))
}

/// One configuration's results (means over the timed runs).
#[derive(Clone, Debug, Serialize)]
pub struct StaticResult {
    pub batch_size: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub runs: usize,
    /// Submission to the last request's end.
    pub latency_ms: f64,
    /// Submission to each request's first token, averaged over the batch.
    pub first_token_mean_ms: f64,
    /// Submission to the first token of the slowest request.
    pub first_token_max_ms: f64,
    /// Generated tokens per second over the whole batch.
    pub tokens_per_sec: f64,
    pub generated_tokens: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(a: StaticArgs) -> Result<()> {
    a.engine.check()?;
    if a.batch_sizes.is_empty() || a.batch_sizes.contains(&0) {
        bail!("--batch-sizes must be a comma-separated list of sizes ≥ 1");
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let max_batch = *a.batch_sizes.iter().max().unwrap_or(&1);
    let engine = a.engine.load(max_batch, max_batch)?;
    let vocab = engine.vocab().max(1);
    let mut rng = Rng::new(a.seed);
    let mut results = Vec::new();
    for &batch in &a.batch_sizes {
        for &(input, output) in &a.input_output_lens.0 {
            let (mut lat, mut ft_mean, mut ft_max, mut toks) = (0.0, 0.0, 0.0, 0usize);
            for run in 0..a.warmup + a.runs {
                // Fresh prompts every run: no prefix-cache hits across runs.
                let reqs: Vec<(Vec<u32>, usize)> = (0..batch).map(|_| (rng.tokens(input, vocab), output)).collect();
                let (res, took) = runner::run(engine.executor(), &reqs, &vec![Duration::ZERO; batch], None);
                if let Some(e) = res.iter().find_map(|r| r.error.as_ref()) {
                    bail!("batch {batch}, input {input}, output {output}: a request failed: {e}");
                }
                if run < a.warmup {
                    continue;
                }
                let ttfts: Vec<f64> = res.iter().map(|r| r.ttft.map(ms).unwrap_or(0.0)).collect();
                lat += ms(took);
                ft_mean += ttfts.iter().sum::<f64>() / ttfts.len() as f64;
                ft_max += ttfts.iter().copied().fold(0.0, f64::max);
                toks += res.iter().map(|r| r.output_tokens).sum::<usize>();
            }
            let n = a.runs as f64;
            let latency_ms = lat / n;
            let r = StaticResult {
                batch_size: batch,
                input_len: input,
                output_len: output,
                runs: a.runs,
                latency_ms,
                first_token_mean_ms: ft_mean / n,
                first_token_max_ms: ft_max / n,
                tokens_per_sec: if latency_ms > 0.0 { toks as f64 / n / (latency_ms / 1e3) } else { 0.0 },
                generated_tokens: toks / a.runs,
            };
            eprintln!("inflight: batch {batch} input {input} output {output}: {:.1} ms", r.latency_ms);
            results.push(r);
        }
    }
    println!("{}", table(&engine.name(), &results));
    if let Some(p) = &a.json {
        write_json(p, &serde_json::json!({ "model": engine.name(), "results": results }))?;
    }
    Ok(())
}

fn table(model: &str, rs: &[StaticResult]) -> String {
    let mut s = format!("Static batching benchmark: {model} (greedy, ignore_eos; mean of the timed runs)\n");
    s += &format!("{:>6} {:>6} {:>7} {:>12} {:>15} {:>14} {:>10}\n", "batch", "input", "output", "latency(ms)", "1st-tok mean", "1st-tok max", "tokens/s");
    for r in rs {
        s += &format!(
            "{:>6} {:>6} {:>7} {:>12.1} {:>15.1} {:>14.1} {:>10.1}\n",
            r.batch_size, r.input_len, r.output_len, r.latency_ms, r.first_token_mean_ms, r.first_token_max_ms, r.tokens_per_sec
        );
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lens_parse() {
        assert_eq!(parse_lens("128,128;512,32").unwrap().0, vec![(128, 128), (512, 32)]);
        assert_eq!(parse_lens(" 4 , 2 ;").unwrap().0, vec![(4, 2)]);
        assert!(parse_lens("128").unwrap_err().contains("INPUT,OUTPUT"));
        assert!(parse_lens("0,4").unwrap_err().contains("≥ 1"));
        assert!(parse_lens("").is_err());
    }
}
