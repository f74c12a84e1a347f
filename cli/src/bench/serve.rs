//! `inflight bench serve`: a workload (a dataset file or synthetic fixed lengths) sent with
//! Poisson arrivals at `--request-rate` (or all at once) under a `--concurrency` cap, to the
//! in-process executor or to a running server over HTTP (streaming `/v1/completions` with
//! token-id prompts); reports throughput and TTFT / TPOT / ITL / latency percentiles (like
//! gptManagerBenchmark and vLLM's benchmark_serving).

use super::dataset::{self, Rng, Sample};
use super::runner::{self, RequestResult};
use super::stats::Summary;
use super::{http, write_json, BenchEngineArgs};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    engine: BenchEngineArgs,
    /// Benchmark a running server (`http://HOST:PORT`) instead of an in-process engine.
    #[arg(long)]
    url: Option<String>,
    /// The `model` field sent to the server (default: none, i.e. the served model).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Bearer token for the server.
    #[arg(long, env = "INFLIGHT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A dataset written by `inflight bench dataset` (or prepare_dataset.py).
    #[arg(long, conflicts_with_all = ["input_len", "output_len"])]
    dataset: Option<PathBuf>,
    /// Synthetic workload: number of requests (with a dataset: use only the first N).
    #[arg(long)]
    num_requests: Option<usize>,
    /// Synthetic workload: prompt length, tokens.
    #[arg(long, default_value_t = 128)]
    input_len: usize,
    /// Synthetic workload: output length, tokens.
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    /// Synthetic prompts over a server: token ids are drawn below this (in process: the
    /// model's vocabulary).
    #[arg(long, default_value_t = 32000)]
    vocab_size: usize,
    /// Requests per second, Poisson arrivals; `inf` sends them all at once.
    #[arg(long, default_value = "inf", value_parser = parse_rate, allow_hyphen_values = true)]
    request_rate: f64,
    /// Most requests in flight at once (default: no cap).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seed of the synthetic prompts and the arrival times.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seconds a request over HTTP may take.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Also write the report as JSON to this file (`-` = stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `inf` (or `infinity`) or a finite rate > 0.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "inf" || t == "infinity" {
        return Ok(f64::INFINITY);
    }
    match t.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a request rate: give requests per second > 0, or `inf`")),
    }
}

/// Arrival offsets: all zero for an infinite rate, else cumulative exponential gaps.
pub fn arrivals(n: usize, rate: f64, rng: &mut Rng) -> Vec<Duration> {
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            if rate.is_finite() && i > 0 {
                t += rng.exponential(rate);
            }
            Duration::from_secs_f64(t)
        })
        .collect()
}

/// The numbers `bench serve` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub request_rate: String,
    pub concurrency: Option<usize>,
    pub completed: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Generated tokens per second.
    pub output_throughput: f64,
    /// Prompt and generated tokens per second.
    pub total_token_throughput: f64,
    pub ttft_ms: Summary,
    /// Per request: (latency − TTFT) / (output tokens − 1).
    pub tpot_ms: Summary,
    /// Gaps between successive streamed pieces.
    pub itl_ms: Summary,
    pub e2e_latency_ms: Summary,
    /// The first few distinct failure messages.
    pub errors: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Aggregates per-request results (only completed requests count toward tokens and times).
pub fn report(target: String, rate: f64, concurrency: Option<usize>, results: &[RequestResult], duration: Duration) -> Report {
    let ok: Vec<&RequestResult> = results.iter().filter(|r| r.error.is_none()).collect();
    let mut errors: Vec<String> = Vec::new();
    for e in results.iter().filter_map(|r| r.error.clone()) {
        if errors.len() < 5 && !errors.contains(&e) {
            errors.push(e);
        }
    }
    let secs = duration.as_secs_f64();
    let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    let input: usize = ok.iter().map(|r| r.prompt_tokens).sum();
    let output: usize = ok.iter().map(|r| r.output_tokens).sum();
    let ttft: Vec<f64> = ok.iter().filter_map(|r| r.ttft.map(ms)).collect();
    let tpot: Vec<f64> = ok.iter().filter(|r| r.output_tokens > 1).filter_map(|r| r.ttft.map(|t| ms(r.latency.saturating_sub(t)) / (r.output_tokens - 1) as f64)).collect();
    let itl: Vec<f64> = ok.iter().flat_map(|r| r.itl.iter().copied().map(ms)).collect();
    let e2e: Vec<f64> = ok.iter().map(|r| ms(r.latency)).collect();
    Report {
        target,
        request_rate: if rate.is_finite() { format!("{rate}") } else { "inf".into() },
        concurrency,
        completed: ok.len(),
        failed: results.len() - ok.len(),
        duration_s: secs,
        total_input_tokens: input,
        total_output_tokens: output,
        request_throughput: per_sec(ok.len() as f64),
        output_throughput: per_sec(output as f64),
        total_token_throughput: per_sec((input + output) as f64),
        ttft_ms: Summary::of(&ttft),
        tpot_ms: Summary::of(&tpot),
        itl_ms: Summary::of(&itl),
        e2e_latency_ms: Summary::of(&e2e),
        errors,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conc = self.concurrency.map(|c| c.to_string()).unwrap_or_else(|| "none".into());
        writeln!(f, "============ Serving benchmark: {} ============", self.target)?;
        writeln!(f, "{:<36} {}", "Request rate (req/s):", self.request_rate)?;
        writeln!(f, "{:<36} {}", "Concurrency cap:", conc)?;
        writeln!(f, "{:<36} {}", "Completed requests:", self.completed)?;
        writeln!(f, "{:<36} {}", "Failed requests:", self.failed)?;
        writeln!(f, "{:<36} {:.2}", "Duration (s):", self.duration_s)?;
        writeln!(f, "{:<36} {}", "Total input tokens:", self.total_input_tokens)?;
        writeln!(f, "{:<36} {}", "Total generated tokens:", self.total_output_tokens)?;
        writeln!(f, "{:<36} {:.2}", "Request throughput (req/s):", self.request_throughput)?;
        writeln!(f, "{:<36} {:.2}", "Output token throughput (tok/s):", self.output_throughput)?;
        writeln!(f, "{:<36} {:.2}", "Total token throughput (tok/s):", self.total_token_throughput)?;
        writeln!(f, "{:<20} {:>10} {:>10} {:>10} {:>10}", "(ms)", "mean", "p50", "p90", "p99")?;
        for (name, s) in [("TTFT", &self.ttft_ms), ("TPOT", &self.tpot_ms), ("ITL", &self.itl_ms), ("E2E latency", &self.e2e_latency_ms)] {
            writeln!(f, "{:<20} {:>10.2} {:>10.2} {:>10.2} {:>10.2}", name, s.mean, s.p50, s.p90, s.p99)?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        write!(f, "==================================================")
    }
}

pub fn run(a: ServeBenchArgs) -> Result<()> {
    a.engine.check()?;
    if a.num_requests == Some(0) {
        bail!("--num-requests must be at least 1");
    }
    if a.concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    if a.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let url = a.url.as_deref().map(http::parse_url).transpose()?;
    let mut rng = Rng::new(a.seed);
    // The workload (synthetic prompts need the vocabulary: the model's in process).
    // A bad dataset fails before the model loads.
    let from_file = match &a.dataset {
        Some(p) => {
            let mut s = dataset::load(p)?;
            if let Some(n) = a.num_requests {
                s.truncate(n);
            }
            Some(s)
        }
        None => None,
    };
    let llm = match url {
        None => {
            let n = from_file.as_ref().map(Vec::len).unwrap_or(a.num_requests.unwrap_or(100));
            Some(a.engine.load(1, n)?)
        }
        Some(_) => None,
    };
    let samples: Vec<Sample> = match from_file {
        Some(s) => s,
        None => {
            if a.input_len == 0 || a.output_len == 0 {
                bail!("--input-len and --output-len must be at least 1");
            }
            let vocab = match &llm {
                Some(l) => l.vocab(),
                None => a.vocab_size,
            };
            if vocab == 0 {
                bail!("--vocab-size must be at least 1");
            }
            (0..a.num_requests.unwrap_or(100)).map(|_| Sample { input_ids: rng.tokens(a.input_len, vocab), output_len: a.output_len }).collect()
        }
    };
    if let Some(l) = &llm {
        let vocab = l.model_vocab();
        if let Some((i, t)) = samples.iter().enumerate().find_map(|(i, s)| s.input_ids.iter().find(|&&t| t as usize >= vocab).map(|&t| (i, t))) {
            bail!("request {i} has token id {t}, outside {}'s vocabulary (size {vocab}); regenerate the dataset for this model", l.name());
        }
    }
    let times = arrivals(samples.len(), a.request_rate, &mut rng);
    let (target, results, duration) = match (&llm, &url) {
        (Some(l), _) => {
            let reqs: Vec<(Vec<u32>, usize)> = samples.iter().map(|s| (s.input_ids.clone(), s.output_len)).collect();
            eprintln!("inflight: sending {} requests in process ...", reqs.len());
            let (res, d) = runner::run(l.executor(), &reqs, &times, a.concurrency);
            (format!("{} (in process)", l.name()), res, d)
        }
        (None, Some(u)) => {
            eprintln!("inflight: sending {} requests to {} ...", samples.len(), a.url.as_deref().unwrap_or(""));
            let (res, d) = run_http(u, &a, &samples, &times)?;
            (a.url.clone().unwrap_or_default(), res, d)
        }
        (None, None) => unreachable!("a target is chosen above"),
    };
    let rep = report(target, a.request_rate, a.concurrency, &results, duration);
    println!("{rep}");
    if let Some(p) = &a.json {
        write_json(p, &serde_json::to_value(&rep)?)?;
    }
    if rep.completed == 0 {
        bail!("all {} requests failed: {}", rep.failed, rep.errors.first().map(String::as_str).unwrap_or("unknown error"));
    }
    Ok(())
}

fn run_http(url: &http::Url, a: &ServeBenchArgs, samples: &[Sample], times: &[Duration]) -> Result<(Vec<RequestResult>, Duration)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cap = a.concurrency.unwrap_or(tokio::sync::Semaphore::MAX_PERMITS).min(tokio::sync::Semaphore::MAX_PERMITS);
    let timeout = Duration::from_secs(a.timeout);
    let out = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(cap));
        let t0 = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(samples.len());
        for (s, &at) in samples.iter().zip(times) {
            tokio::time::sleep_until(t0 + at).await;
            let permit = sem.clone().acquire_owned().await.expect("the semaphore is never closed");
            let body = http::completion_body(a.served_model_name.as_deref(), &s.input_ids, s.output_len);
            let (url, key, n) = (url.clone(), a.api_key.clone(), s.input_ids.len());
            tasks.push(tokio::spawn(async move {
                let r = http::stream_completion(&url, key.as_deref(), body, n, timeout).await;
                drop(permit);
                (r, tokio::time::Instant::now())
            }));
        }
        let mut results = Vec::with_capacity(tasks.len());
        let mut end = t0;
        for t in tasks {
            match t.await {
                Ok((r, at)) => {
                    end = end.max(at);
                    results.push(r);
                }
                Err(e) => results.push(RequestResult { error: Some(format!("the request task failed: {e}")), ..Default::default() }),
            }
        }
        (results, end - t0)
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("inf"), Ok(f64::INFINITY));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1", "nan", "abc", ""] {
            assert!(parse_rate(bad).unwrap_err().contains("request rate"), "{bad}");
        }
    }

    #[test]
    fn poisson_arrivals() {
        let mut rng = Rng::new(1);
        assert!(arrivals(5, f64::INFINITY, &mut rng).iter().all(|d| d.is_zero()));
        let t = arrivals(4001, 10.0, &mut rng);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // 4000 gaps of mean 0.1 s.
        let total = t.last().unwrap().as_secs_f64();
        assert!((total / 4000.0 - 0.1).abs() < 0.01, "{total}");
    }

    #[test]
    fn report_counts_only_completed() {
        let ok = RequestResult {
            error: None,
            prompt_tokens: 10,
            output_tokens: 5,
            ttft: Some(Duration::from_millis(100)),
            latency: Duration::from_millis(500),
            itl: vec![Duration::from_millis(100); 4],
        };
        let bad = RequestResult { error: Some("boom".into()), ..Default::default() };
        let r = report("t".into(), f64::INFINITY, None, &[ok.clone(), ok, bad.clone(), bad], Duration::from_secs(2));
        assert_eq!((r.completed, r.failed), (2, 2));
        assert_eq!((r.total_input_tokens, r.total_output_tokens), (20, 10));
        assert_eq!(r.request_throughput, 1.0);
        assert_eq!(r.output_throughput, 5.0);
        assert_eq!(r.total_token_throughput, 15.0);
        assert!((r.tpot_ms.mean - 100.0).abs() < 1e-9);
        assert_eq!(r.itl_ms.count, 8);
        assert_eq!(r.errors, vec!["boom".to_string()]);
        assert_eq!(r.request_rate, "inf");
    }
}
