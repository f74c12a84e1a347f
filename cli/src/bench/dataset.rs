//! Synthetic workloads: `inflight bench dataset` (like TensorRT-LLM's `prepare_dataset.py
//! token-norm-dist`) and the loader `bench serve --dataset` reads them back with.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A small deterministic generator (SplitMix64): lengths, token ids and arrival times.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Exponential with the given rate (Poisson inter-arrival times).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.uniform()).ln() / rate
    }

    /// `n` random token ids below `vocab`.
    pub fn tokens(&mut self, n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(vocab as u64) as u32).collect()
    }
}

/// A length drawn from N(mean, stdev²), rounded, at least 1 (stdev 0: exactly `mean`).
pub fn norm_len(rng: &mut Rng, mean: usize, stdev: f64) -> usize {
    if stdev == 0.0 {
        return mean.max(1);
    }
    let x = (mean as f64 + stdev * rng.normal()).round();
    if x < 1.0 { 1 } else { x as usize }
}

#[derive(Args, Debug)]
pub struct DatasetArgs {
    /// Number of requests (samples).
    #[arg(long)]
    num_requests: usize,
    /// Mean prompt length, tokens.
    #[arg(long)]
    input_mean: usize,
    /// Standard deviation of the prompt length (0 = every prompt `input-mean` tokens).
    #[arg(long, default_value_t = 0.0)]
    input_stdev: f64,
    /// Mean output length, tokens.
    #[arg(long)]
    output_mean: usize,
    /// Standard deviation of the output length (0 = fixed).
    #[arg(long, default_value_t = 0.0)]
    output_stdev: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Token ids are drawn below this (default 32000).
    #[arg(long, conflicts_with = "model")]
    vocab_size: Option<usize>,
    /// Take the vocabulary size from this model's tokenizer (a known name, `.gguf` or
    /// Hugging Face directory).
    #[arg(long)]
    model: Option<String>,
    /// Where to write the dataset JSON.
    #[arg(short = 'o', long)]
    output: PathBuf,
}

#[derive(Serialize)]
struct Metadata {
    workload_type: &'static str,
    input_mean: usize,
    input_stdev: f64,
    output_mean: usize,
    output_stdev: f64,
    num_requests: usize,
    tokenize_vocabsize: usize,
    max_input_len: usize,
    max_output_len: usize,
    workload_name: String,
}

#[derive(Serialize)]
struct SampleOut<'a> {
    input_len: usize,
    input_ids: &'a [u32],
    output_len: usize,
    task_id: i64,
}

fn check_stdev(name: &str, v: f64) -> Result<()> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a finite number ≥ 0 (got {v})");
    }
    Ok(())
}

pub fn run(a: DatasetArgs) -> Result<()> {
    if a.num_requests == 0 {
        bail!("--num-requests must be at least 1");
    }
    if a.input_mean == 0 || a.output_mean == 0 {
        bail!("--input-mean and --output-mean must be at least 1");
    }
    check_stdev("input-stdev", a.input_stdev)?;
    check_stdev("output-stdev", a.output_stdev)?;
    let vocab = match (&a.model, a.vocab_size) {
        (Some(m), _) => {
            let path = models::fetch::resolve(m)?;
            let (_, tok) = models::load::load_path(&path, models::load::WeightFormat::Native).with_context(|| format!("loading {m}"))?;
            tok.vocab_size()
        }
        (None, Some(v)) => v,
        (None, None) => 32000,
    };
    if vocab == 0 || vocab > u32::MAX as usize {
        bail!("--vocab-size must be in 1..={}", u32::MAX);
    }
    let mut rng = Rng::new(a.seed);
    let mut samples = Vec::with_capacity(a.num_requests);
    for _ in 0..a.num_requests {
        let input_len = norm_len(&mut rng, a.input_mean, a.input_stdev);
        let output_len = norm_len(&mut rng, a.output_mean, a.output_stdev);
        samples.push((rng.tokens(input_len, vocab), output_len));
    }
    let metadata = Metadata {
        workload_type: "token-norm-dist",
        input_mean: a.input_mean,
        input_stdev: a.input_stdev,
        output_mean: a.output_mean,
        output_stdev: a.output_stdev,
        num_requests: a.num_requests,
        tokenize_vocabsize: vocab,
        max_input_len: samples.iter().map(|s| s.0.len()).max().unwrap_or(0),
        max_output_len: samples.iter().map(|s| s.1).max().unwrap_or(0),
        workload_name: format!(
            "workload_type:token-norm-dist__input_mean:{}__input_stdev:{}__output_mean:{}__output_stdev:{}__num_requests:{}",
            a.input_mean, a.input_stdev, a.output_mean, a.output_stdev, a.num_requests
        ),
    };
    let out: Vec<SampleOut> = samples.iter().map(|(ids, o)| SampleOut { input_len: ids.len(), input_ids: ids, output_len: *o, task_id: -1 }).collect();
    let json = serde_json::json!({ "metadata": metadata, "samples": out });
    let text = serde_json::to_string(&json)?;
    std::fs::write(&a.output, text).with_context(|| format!("cannot write {}", a.output.display()))?;
    let lens = |f: fn(&(Vec<u32>, usize)) -> usize| crate::bench::stats::mean_stdev(&samples.iter().map(|s| f(s) as f64).collect::<Vec<_>>());
    let ((im, is), (om, os)) = (lens(|s| s.0.len()), lens(|s| s.1));
    eprintln!(
        "inflight: wrote {} requests to {} (input mean {im:.1} stdev {is:.1}, output mean {om:.1} stdev {os:.1}, vocab {vocab})",
        a.num_requests,
        a.output.display()
    );
    Ok(())
}

/// One request of a workload.
#[derive(Clone, Debug)]
pub struct Sample {
    pub input_ids: Vec<u32>,
    pub output_len: usize,
}

/// Reads a dataset written by `bench dataset` (or `prepare_dataset.py`); every problem is an
/// error naming the file and the field.
pub fn load(path: &Path) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the dataset {}", path.display()))?;
    parse(&text).with_context(|| format!("dataset {}", path.display()))
}

fn parse(text: &str) -> Result<Vec<Sample>> {
    let v: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?;
    let Some(samples) = v.get("samples") else {
        bail!("no \"samples\" field (expected {{\"metadata\": {{...}}, \"samples\": [...]}})");
    };
    let Some(samples) = samples.as_array() else {
        bail!("\"samples\" must be an array");
    };
    if samples.is_empty() {
        bail!("\"samples\" is empty (zero requests)");
    }
    let mut out = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let Some(obj) = s.as_object() else { bail!("samples[{i}] must be an object") };
        let ids = match obj.get("input_ids") {
            None => bail!("samples[{i}].input_ids is missing"),
            Some(Value::Array(a)) => a,
            Some(_) => bail!("samples[{i}].input_ids must be an array of token ids"),
        };
        if ids.is_empty() {
            bail!("samples[{i}].input_ids is empty");
        }
        let mut input_ids = Vec::with_capacity(ids.len());
        for (j, t) in ids.iter().enumerate() {
            match t.as_u64() {
                Some(t) if t <= u32::MAX as u64 => input_ids.push(t as u32),
                _ => bail!("samples[{i}].input_ids[{j}] must be a non-negative integer token id (got {t})"),
            }
        }
        let output_len = match obj.get("output_len") {
            None => bail!("samples[{i}].output_len is missing"),
            Some(o) => match o.as_u64() {
                Some(n) if n >= 1 => n as usize,
                _ => bail!("samples[{i}].output_len must be a positive integer (got {o})"),
            },
        };
        if let Some(l) = obj.get("input_len")
            && l.as_u64() != Some(input_ids.len() as u64)
        {
            bail!("samples[{i}].input_len is {l} but input_ids has {} tokens", input_ids.len());
        }
        out.push(Sample { input_ids, output_len });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_bad_field() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(err("{").contains("not valid JSON"));
        assert!(err("{}").contains("no \"samples\""));
        assert!(err(r#"{"samples": []}"#).contains("empty"));
        assert!(err(r#"{"samples": [{"input_ids": [1], "output_len": 0}]}"#).contains("samples[0].output_len"));
        assert!(err(r#"{"samples": [{"input_ids": [1], "output_len": 2}, {"output_len": 2}]}"#).contains("samples[1].input_ids is missing"));
        assert!(err(r#"{"samples": [{"input_ids": [1, -3], "output_len": 2}]}"#).contains("samples[0].input_ids[1]"));
        assert!(err(r#"{"samples": [{"input_ids": [1], "input_len": 2, "output_len": 2}]}"#).contains("samples[0].input_len"));
        let ok = parse(r#"{"metadata": {}, "samples": [{"input_len": 2, "input_ids": [5, 6], "output_len": 3, "task_id": -1}]}"#).unwrap();
        assert_eq!(ok[0].input_ids, vec![5, 6]);
        assert_eq!(ok[0].output_len, 3);
    }

    #[test]
    fn rng_is_deterministic_and_normal_is_centred() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        assert_eq!(a.next_u64(), b.next_u64());
        let xs: Vec<f64> = (0..20000).map(|_| a.normal()).collect();
        let (m, s) = crate::bench::stats::mean_stdev(&xs);
        assert!(m.abs() < 0.05 && (s - 1.0).abs() < 0.05, "{m} {s}");
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert_eq!(norm_len(&mut a, 5, 0.0), 5);
        assert!((0..1000).all(|_| norm_len(&mut a, 1, 100.0) >= 1));
    }
}
