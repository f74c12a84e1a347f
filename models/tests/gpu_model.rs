//! The GPU backend against the CPU backend on random-weight LLaMA and Qwen2 models, through
//! the `Backend` trait and through the executor; the host tier and block copies; bad steps
//! as errors; a synthetic Llama-3.1-8B on the real shapes.
//!
//! A plain binary (`harness = false`): without a GPU it prints "skipped: no CUDA device" and
//! counts nothing as passed, unless `INFLIGHT_REQUIRE_GPU=1` (the GPU bundle's run script),
//! which makes a missing GPU a failure. An argument filters tests by substring.
//!
//! Tolerance: the GPU stores weights, activations, the residual stream, K/V and logits in
//! bf16 (8 bits of mantissa, relative rounding 2^-9 ≈ 0.2 % per store), the CPU keeps f32.
//! On the 2- and 3-layer random models the logits agree to a relative L2 error of about 1e-2
//! (measured on an H200: 1.0e-2 LLaMA, 8.4e-3 Qwen2, worst row); the tests allow
//! `LOGIT_TOL` = 3e-2 per logits row. SmolLM2 (30 layers) has its own bound (see its test).

use half::bf16;
use host_runtime::executor::{Backend, BackendItem, Executor, ExecutorConfig, NoText, Request};
use host_runtime::kv::KvCacheConfig;
use host_runtime::sampling::SamplingParams;
use host_runtime::scheduler::{CapacityPolicy, SchedulerConfig};
use host_runtime::testing::{open_test_gpu, GpuAvailability};
use host_runtime::Gpu;
use models::arch::layers::WeightData;
use models::arch::{Linear, LlamaLayer, LlamaModel, Model};
use models::backend::CpuBackend;
use models::config::{Activation, Arch, ModelConfig, Norm, Positions, RopeLayout};
use models::gpu::{size_backend, GpuBackend, GpuBackendConfig, GpuSizing, GpuWeights};
use std::sync::Arc;
use std::time::Instant;

const LOGIT_TOL: f32 = 3e-2;
const TPB: usize = 16;

type TestFn = fn(&Arc<Gpu>) -> Result<(), String>;

fn rng_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 33) as f32 / (1u64 << 31) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A small random LLaMA-family (or Qwen2 with `bias`) model.
struct Shape {
    bias: bool,
    tied: bool,
    layout: RopeLayout,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
}

fn tiny_config(s: &Shape) -> ModelConfig {
    ModelConfig {
        arch: if s.bias { Arch::Qwen2 } else { Arch::Llama },
        vocab_size: 1000,
        hidden: s.hidden,
        intermediate: 2 * s.hidden + 64,
        layers: s.layers,
        heads: s.heads,
        kv_heads: s.kv_heads,
        head_dim: s.head_dim,
        rope_theta: 10_000.0,
        rope_layout: s.layout,
        rope_scaling: None,
        norm_eps: 1e-5,
        max_position: 4096,
        tied_embeddings: s.tied,
        qkv_bias: s.bias,
        norm: Norm::Rms,
        activation: Activation::SwiGlu,
        positions: Positions::Rope,
    }
}

fn tiny_model(s: &Shape, seed: u64) -> Model {
    let config = tiny_config(s);
    config.validate().unwrap();
    let mut st = seed;
    let (h, i, q, kv) = (config.hidden, config.intermediate, config.heads * config.head_dim, config.kv_heads * config.head_dim);
    let mut lin = |o: usize, n: usize, bias: bool| Linear::new(o, n, rng_vec(&mut st, o * n, 1.0 / (n as f32).sqrt() * 1.7), bias.then(|| rng_vec(&mut st, o, 0.2)));
    let mut layers = Vec::new();
    for _ in 0..config.layers {
        layers.push(LlamaLayer {
            attn_norm: vec![1.0; h],
            q: lin(q, h, s.bias),
            k: lin(kv, h, s.bias),
            v: lin(kv, h, s.bias),
            o: lin(h, q, false),
            ffn_norm: vec![1.0; h],
            gate: lin(i, h, false),
            up: lin(i, h, false),
            down: lin(h, i, false),
        });
    }
    let lm_head = (!s.tied).then(|| Linear::new(config.vocab_size, h, rng_vec(&mut st, config.vocab_size * h, 0.25), None));
    let embed = rng_vec(&mut st, config.vocab_size * h, 1.0);
    let mut norm_seed = seed ^ 0x55;
    let final_norm = rng_vec(&mut norm_seed, h, 0.2).into_iter().map(|v| 1.0 + v).collect();
    Model::Llama(LlamaModel::new(config, embed, layers, final_norm, lm_head))
}

/// The same model with every weight rounded to bf16 (what the GPU holds).
fn bf16_rounded(m: &Model) -> Model {
    let Model::Llama(l) = m else { unreachable!() };
    let r = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect::<Vec<f32>>();
    let rl = |lin: &Linear| {
        let WeightData::F32(w) = &lin.weight else { unreachable!() };
        Linear::new(lin.out, lin.inp, r(w), lin.bias.as_deref().map(r))
    };
    let layers = l
        .layers
        .iter()
        .map(|x| LlamaLayer { attn_norm: r(&x.attn_norm), q: rl(&x.q), k: rl(&x.k), v: rl(&x.v), o: rl(&x.o), ffn_norm: r(&x.ffn_norm), gate: rl(&x.gate), up: rl(&x.up), down: rl(&x.down) })
        .collect();
    Model::Llama(LlamaModel::new(l.config.clone(), r(&l.embed), layers, r(&l.final_norm), l.lm_head.as_ref().map(rl)))
}

fn llama_shape() -> Shape {
    Shape { bias: false, tied: false, layout: RopeLayout::Neox, hidden: 256, heads: 8, kv_heads: 2, head_dim: 64, layers: 3 }
}

fn qwen_shape() -> Shape {
    Shape { bias: true, tied: true, layout: RopeLayout::Interleaved, hidden: 256, heads: 4, kv_heads: 2, head_dim: 128, layers: 2 }
}

fn gpu_backend(gpu: &Arc<Gpu>, m: &Model, num_blocks: usize, host_blocks: usize) -> Result<GpuBackend, String> {
    let w = GpuWeights::upload(gpu, m).map_err(|e| e.to_string())?;
    let cfg = GpuBackendConfig { num_blocks, tokens_per_block: TPB, host_blocks, max_batch_size: 16, max_num_tokens: 256 };
    GpuBackend::new(gpu.clone(), w, cfg).map_err(|e| e.to_string())
}

fn rel_l2(got: &[f32], want: &[f32]) -> f32 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    if got.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    (num / den.max(1e-30)).sqrt() as f32
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

/// The gap between the best and second-best logit.
fn top2_gap(v: &[f32]) -> f32 {
    let a = argmax(v) as usize;
    let second = v.iter().enumerate().filter(|(i, _)| *i != a).fold(f32::NEG_INFINITY, |m, (_, &x)| m.max(x));
    v[a] - second
}

fn prompt(len: usize, seed: u64) -> Vec<u32> {
    (0..len as u64).map(|i| ((i * 7919 + seed * 104_729) % 997) as u32).collect()
}

/// One sequence through a backend: the prompt in chunks of `chunk`, then `steps` tokens,
/// greedy on this backend's own logits (`forced`: feed these tokens instead). Returns the
/// logits after the prompt and after each generated token, and the greedy tokens.
fn run_seq(b: &mut dyn Backend, table: &[u32], p: &[u32], chunk: usize, steps: usize, forced: Option<&[u32]>) -> Result<(Vec<Vec<f32>>, Vec<u32>), String> {
    let mut logits = Vec::new();
    let mut at = 0;
    while at < p.len() {
        let n = chunk.min(p.len() - at);
        let last = at + n == p.len();
        let out = b.step(&[BackendItem { tokens: &p[at..at + n], start_pos: at, block_table: table, needs_logits: last }]).map_err(|e| e.to_string())?;
        if last {
            logits.push(out.into_iter().next().ok_or("no logits")?);
        }
        at += n;
    }
    let mut toks = Vec::new();
    for s in 0..steps {
        let t = forced.map_or_else(|| argmax(logits.last().unwrap()), |f| f[s]);
        toks.push(argmax(logits.last().unwrap()));
        let out = b.step(&[BackendItem { tokens: &[t], start_pos: p.len() + s, block_table: table, needs_logits: true }]).map_err(|e| e.to_string())?;
        logits.push(out.into_iter().next().ok_or("no logits")?);
    }
    Ok((logits, toks))
}

/// GPU logits within `LOGIT_TOL` of the CPU's (the GPU fed the CPU's tokens), then 32 greedy
/// tokens on each: identical, or (a near-tie flipped by bf16 rounding) identical to the CPU
/// run on bf16-rounded weights.
fn logits_and_greedy(gpu: &Arc<Gpu>, shape: Shape, seed: u64) -> Result<(), String> {
    let m = tiny_model(&shape, seed);
    let table: Vec<u32> = (1..=8).rev().map(|b| b * 3).collect(); // scattered, descending
    let p = prompt(45, seed);
    let steps = 32;
    let mut cpu = CpuBackend::new(Arc::new(m.clone()), 32, TPB, 0);
    let (cpu_logits, cpu_toks) = run_seq(&mut cpu, &table, &p, 32, steps, None)?;
    let mut g = gpu_backend(gpu, &m, 32, 0)?;
    let (gpu_logits, _) = run_seq(&mut g, &table, &p, 32, steps, Some(&cpu_toks))?;
    let worst = gpu_logits.iter().zip(&cpu_logits).map(|(a, b)| rel_l2(a, b)).fold(0f32, f32::max);
    println!("    logits: worst relative L2 over {} rows = {worst:.2e} (tolerance {LOGIT_TOL:.0e})", gpu_logits.len());
    if worst > LOGIT_TOL {
        return Err(format!("GPU logits differ from the CPU's: relative L2 {worst:.3e} > {LOGIT_TOL:.0e}"));
    }
    let mut g2 = gpu_backend(gpu, &m, 32, 0)?;
    let (_, gpu_toks) = run_seq(&mut g2, &table, &p, 45, steps, None)?;
    if gpu_toks == cpu_toks {
        println!("    greedy: {steps} tokens identical to the CPU's");
        return Ok(());
    }
    let i = gpu_toks.iter().zip(&cpu_toks).position(|(a, b)| a != b).unwrap();
    println!("    greedy: token {i} differs (gpu {} vs cpu {}; CPU top-2 gap {:.4}); comparing with bf16-rounded weights", gpu_toks[i], cpu_toks[i], top2_gap(&cpu_logits[i]));
    let mut cpu16 = CpuBackend::new(Arc::new(bf16_rounded(&m)), 32, TPB, 0);
    let (_, toks16) = run_seq(&mut cpu16, &table, &p, 45, steps, None)?;
    if toks16 == gpu_toks {
        println!("    greedy: identical to the CPU run on bf16-rounded weights");
        Ok(())
    } else {
        Err(format!("greedy tokens differ from the CPU's (f32 and bf16 weights):\n gpu {gpu_toks:?}\n cpu {cpu_toks:?}\n c16 {toks16:?}"))
    }
}

fn test_llama_vs_cpu(gpu: &Arc<Gpu>) -> Result<(), String> {
    logits_and_greedy(gpu, llama_shape(), 11)
}

fn test_qwen2_vs_cpu(gpu: &Arc<Gpu>) -> Result<(), String> {
    logits_and_greedy(gpu, qwen_shape(), 12)
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_new_tokens: n, ignore_eos: true, ..Default::default() }
}

fn executor_for(backend: Box<dyn Backend>, num_blocks: usize, max_num_tokens: usize, host_blocks: usize) -> Result<Executor, String> {
    let cfg = ExecutorConfig {
        scheduler: SchedulerConfig { max_batch_size: 16, max_num_tokens, max_queue_size: 64, max_seq_len: 512, policy: CapacityPolicy::MaxUtilization, chunked_context: true },
        kv: KvCacheConfig { tokens_per_block: TPB, num_blocks, enable_reuse: false, host_cache_blocks: host_blocks },
        max_beam_width: 1,
        end_ids: vec![],
    };
    Executor::new(cfg, backend, Arc::new(NoText)).map_err(|e| e.to_string())
}

fn generate(ex: &Executor, prompts: &[Vec<u32>], n: usize) -> Result<Vec<Vec<u32>>, String> {
    let handles = prompts.iter().map(|p| ex.submit(Request { prompt: p.clone(), sampling: greedy(n) }).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
    handles
        .into_iter()
        .map(|h| {
            let o = h.wait();
            match o.finish {
                Some(host_runtime::executor::FinishReason::Length) => Ok(o.token_ids),
                other => Err(format!("request ended with {other:?}")),
            }
        })
        .collect()
}

/// Greedy outputs of `prompts` (one request each) with the top-2 log-probs of every step.
fn generate_scored(ex: &Executor, prompts: &[Vec<u32>], n: usize) -> Result<Vec<host_runtime::executor::Output>, String> {
    let sampling = SamplingParams { logprobs: Some(2), ..greedy(n) };
    let handles = prompts.iter().map(|p| ex.submit(Request { prompt: p.clone(), sampling: sampling.clone() }).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
    Ok(handles.into_iter().map(|h| h.wait()).collect())
}

/// Largest gap (nats) between the best two log-probs at which a batched run may pick the
/// runner-up: bf16 logits of the tiny model carry ~1e-2 of rounding, and in a batch a token's
/// rows can take a different GEMM path (skinny for ≤ 16 rows in the step, tiled above),
/// which sums `k` in another order.
const NEAR_TIE: f32 = 0.05;

/// `None` when `batched` equals `alone`; `Some(step)` when they agree up to `step`, where
/// `alone`'s best two tokens were within [`NEAR_TIE`] and `batched` took the other one;
/// an error otherwise.
fn same_up_to_near_tie(batched: &[u32], alone: &host_runtime::executor::Output) -> Result<Option<(usize, f32)>, String> {
    let Some(j) = batched.iter().zip(&alone.token_ids).position(|(a, b)| a != b) else {
        return if batched.len() == alone.token_ids.len() { Ok(None) } else { Err(format!("lengths {} vs {}", batched.len(), alone.token_ids.len())) };
    };
    let top = &alone.logprobs.get(j).ok_or("no log-probs")?.top;
    let (Some(a), Some(b)) = (top.first(), top.get(1)) else { return Err(format!("step {j}: fewer than 2 top log-probs")) };
    let gap = a.logprob - b.logprob;
    if gap <= NEAR_TIE && [a.id, b.id].contains(&batched[j]) {
        Ok(Some((j, gap)))
    } else {
        Err(format!("step {j}: batched took {} where alone's best two were {} ({:.4}) and {} ({:.4})", batched[j], a.id, a.logprob, b.id, b.logprob))
    }
}

/// Mixed requests (lengths 1 to 150, prompts longer than a step chunked) in one executor give
/// each request the tokens it gets alone, up to a near-tie ([`same_up_to_near_tie`]); also
/// reported: agreement with the CPU executor.
fn test_executor_batch(gpu: &Arc<Gpu>) -> Result<(), String> {
    let m = tiny_model(&llama_shape(), 21);
    let prompts: Vec<Vec<u32>> = [3usize, 150, 17, 1, 70, 33].iter().enumerate().map(|(i, &l)| prompt(l, 100 + i as u64)).collect();
    let n = 24;
    let ex = executor_for(Box::new(gpu_backend(gpu, &m, 128, 0)?), 128, 64, 0)?;
    let together: Vec<Vec<u32>> = generate_scored(&ex, &prompts, n)?.into_iter().map(|o| o.token_ids).collect();
    let mut ties = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate_scored(&ex, std::slice::from_ref(p), n)?.remove(0);
        match same_up_to_near_tie(&together[i], &alone) {
            Ok(None) => {}
            Ok(Some((step, gap))) => ties.push(format!("request {i} at step {step} (gap {gap:.4})")),
            Err(e) => return Err(format!("request {i} (prompt {}): {e}; batched {:?} vs alone {:?}", p.len(), together[i], alone.token_ids)),
        }
    }
    println!("    {} requests: batched tokens identical to each alone except near-ties: {ties:?}", prompts.len());
    let cpu = executor_for(Box::new(CpuBackend::new(Arc::new(m), 128, TPB, 0)), 128, 64, 0)?;
    let cpu_out = generate(&cpu, &prompts, n)?;
    let same = cpu_out.iter().zip(&together).filter(|(a, b)| a == b).count();
    println!("    GPU vs CPU executor: {same}/{} requests with identical tokens (bf16 vs f32: near-ties may flip)", prompts.len());
    Ok(())
}

/// The GPU backend with its device-side row reduction hidden: whole rows only.
struct WholeRows(GpuBackend);

impl Backend for WholeRows {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, host_runtime::executor::BackendError> {
        self.0.step(items)
    }
    fn swap_out(&mut self, block: u32, slot: usize) -> Result<(), host_runtime::executor::BackendError> {
        self.0.swap_out(block, slot)
    }
    fn swap_in(&mut self, slot: usize, block: u32) -> Result<(), host_runtime::executor::BackendError> {
        self.0.swap_in(slot, block)
    }
    fn copy_block(&mut self, src: u32, dst: u32) -> Result<(), host_runtime::executor::BackendError> {
        self.0.copy_block(src, dst)
    }
}

/// Greedy and top-k requests (with log-probs) sampled from rows reduced on the GPU
/// (`logits_top_k`) give the same tokens as from whole rows sampled on the host, and log-probs
/// within 1e-3 (f32 against f64 log-sum-exp); a top-p request (whole rows either way) too.
fn test_device_sampling(gpu: &Arc<Gpu>) -> Result<(), String> {
    let m = tiny_model(&llama_shape(), 22);
    let reduced = executor_for(Box::new(gpu_backend(gpu, &m, 128, 0)?), 128, 64, 0)?;
    let whole = executor_for(Box::new(WholeRows(gpu_backend(gpu, &m, 128, 0)?)), 128, 64, 0)?;
    let base = SamplingParams { max_new_tokens: 20, ignore_eos: true, ..Default::default() };
    let params = [
        SamplingParams { temperature: 0.0, logprobs: Some(5), ..base.clone() },
        SamplingParams { temperature: 0.8, top_k: 20, seed: Some(7), logprobs: Some(3), ..base.clone() },
        SamplingParams { temperature: 1.2, top_k: 32, top_p: 0.8, min_p: 0.05, seed: Some(8), ..base.clone() },
        SamplingParams { temperature: 1.0, top_p: 0.9, seed: Some(9), ..base.clone() },
    ];
    for (i, p) in params.iter().enumerate() {
        let prompts: Vec<Vec<u32>> = (0..6).map(|j| prompt(5 + 13 * j, 300 + j as u64)).collect();
        let run = |ex: &Executor| -> Result<Vec<host_runtime::executor::Output>, String> {
            let hs = prompts.iter().map(|q| ex.submit(Request { prompt: q.clone(), sampling: p.clone() }).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
            Ok(hs.into_iter().map(|h| h.wait()).collect())
        };
        let (a, b) = (run(&reduced)?, run(&whole)?);
        for (j, (x, y)) in a.iter().zip(&b).enumerate() {
            if x.token_ids != y.token_ids {
                return Err(format!("params {i}, prompt {j}: device-reduced {:?} vs whole rows {:?}", x.token_ids, y.token_ids));
            }
            for (u, v) in x.logprobs.iter().zip(&y.logprobs) {
                let close = |a: f32, b: f32| a == b || (a - b).abs() <= 1e-3;
                if !close(u.logprob, v.logprob) || u.top.len() != v.top.len() || u.top.iter().zip(&v.top).any(|(s, t)| s.id != t.id || !close(s.logprob, t.logprob)) {
                    return Err(format!("params {i}, prompt {j}: log-probs {u:?} vs {v:?}"));
                }
            }
        }
    }
    println!("    {} parameter sets x 6 prompts: device-reduced rows sample exactly as whole rows", params.len());
    Ok(())
}

/// A copied block and a block swapped out, overwritten and swapped back hold the same K/V:
/// the next token's logits are bit-identical to the reference's.
fn test_swap_and_copy(gpu: &Arc<Gpu>) -> Result<(), String> {
    let m = tiny_model(&qwen_shape(), 31);
    let mut b = gpu_backend(gpu, &m, 32, 4)?;
    let p = prompt(40, 5);
    let step = |b: &mut GpuBackend, toks: &[u32], start: usize, table: &[u32]| -> Result<Vec<f32>, String> {
        let out = b.step(&[BackendItem { tokens: toks, start_pos: start, block_table: table, needs_logits: true }]).map_err(|e| e.to_string())?;
        Ok(out.into_iter().next().unwrap())
    };
    let (t1, t2) = ([1u32, 2, 3], [4u32, 5, 6]);
    step(&mut b, &p, 0, &t1)?;
    let want = step(&mut b, &[7], 40, &t1)?;
    // Copies: blocks 1..3 -> 4..6, then the same next token over the copies.
    for (s, d) in t1.iter().zip(&t2) {
        b.copy_block(*s, *d).map_err(|e| e.to_string())?;
    }
    let got = step(&mut b, &[7], 40, &t2)?;
    if got != want {
        return Err(format!("after copy_block: relative L2 {:.3e}", rel_l2(&got, &want)));
    }
    // Swap blocks 1..3 out, overwrite them with another sequence, swap back.
    for (slot, blk) in t1.iter().enumerate() {
        b.swap_out(*blk, slot).map_err(|e| e.to_string())?;
    }
    step(&mut b, &prompt(41, 9), 0, &t1)?;
    for (slot, blk) in t1.iter().enumerate() {
        b.swap_in(slot, *blk).map_err(|e| e.to_string())?;
    }
    let got = step(&mut b, &[7], 40, &t1)?;
    if got != want {
        return Err(format!("after swap out/in: relative L2 {:.3e}", rel_l2(&got, &want)));
    }
    println!("    copy_block and swap_out/swap_in: next-token logits bit-identical");
    Ok(())
}

/// Bad steps and unsupported models are errors naming the problem, never panics.
fn test_rejects(gpu: &Arc<Gpu>) -> Result<(), String> {
    let m = tiny_model(&llama_shape(), 41);
    let mut b = gpu_backend(gpu, &m, 8, 1)?;
    let t = [1u32, 2];
    let cases: Vec<(&str, Vec<BackendItem>)> = vec![
        ("vocabulary", vec![BackendItem { tokens: &[5000], start_pos: 0, block_table: &t, needs_logits: true }]),
        ("outside the 8", vec![BackendItem { tokens: &[1], start_pos: 0, block_table: &[9], needs_logits: true }]),
        ("block table", vec![BackendItem { tokens: &[1; 20], start_pos: 0, block_table: &[1], needs_logits: true }]),
        ("max_num_tokens", vec![BackendItem { tokens: &[1; 300], start_pos: 0, block_table: &[1; 19], needs_logits: true }]),
        ("no tokens", vec![BackendItem { tokens: &[], start_pos: 0, block_table: &t, needs_logits: true }]),
    ];
    for (want, items) in cases {
        match b.step(&items) {
            Err(e) if e.to_string().contains(want) => {}
            other => return Err(format!("expected an error naming '{want}', got {other:?}")),
        }
    }
    for (what, r) in [("swap_out", b.swap_out(1, 5)), ("swap_in", b.swap_in(0, 1)), ("copy_block", b.copy_block(1, 99))] {
        if r.is_ok() {
            return Err(format!("{what} with a bad slot/block succeeded"));
        }
    }
    let mut gpt2 = tiny_config(&llama_shape());
    (gpt2.arch, gpt2.norm, gpt2.activation, gpt2.positions, gpt2.kv_heads, gpt2.heads, gpt2.head_dim) = (Arch::Gpt2, Norm::Layer, Activation::GeluTanh, Positions::Learned, 4, 4, 64);
    match GpuWeights::synthetic(gpu, &gpt2, 1) {
        Err(e) if e.to_string().contains("not on the GPU yet") => {}
        Err(e) => return Err(format!("GPT-2 refused with an unclear message: {e}")),
        Ok(_) => return Err("GPT-2 was accepted".into()),
    }
    println!("    bad items, bad slots/blocks and GPT-2 are errors");
    Ok(())
}

/// Llama-3.1-8B shapes with synthetic weights: sized from free memory, a batch of 8 prompts
/// of 512 tokens, then 32 decode steps; logits finite; times printed.
fn test_synthetic_8b(gpu: &Arc<Gpu>) -> Result<(), String> {
    let c = ModelConfig::named("llama-3.1-8b").unwrap();
    let t0 = Instant::now();
    let w = GpuWeights::synthetic(gpu, &c, 7).map_err(|e| e.to_string())?;
    println!("    synthetic weights: {:.1} GB in {:.2} s", w.bytes() as f64 / 1e9, t0.elapsed().as_secs_f64());
    let sizing = GpuSizing { max_num_tokens: 4096, max_batch_size: 64, ..GpuSizing::new(8192) };
    let cfg = size_backend(gpu, &w, &sizing).map_err(|e| e.to_string())?;
    println!("    sized: {} KV blocks of {} tokens ({:.1} GB)", cfg.num_blocks, cfg.tokens_per_block, (cfg.num_blocks * cfg.tokens_per_block) as f64 * 131072.0 / 1e9);
    let mut b = GpuBackend::new(gpu.clone(), w, cfg).map_err(|e| e.to_string())?;
    let (batch, plen, steps) = (8usize, 512usize, 32usize);
    let bpr = (plen + steps).div_ceil(cfg.tokens_per_block);
    let tables: Vec<Vec<u32>> = (0..batch).map(|i| (0..bpr).map(|j| (1 + i * bpr + j) as u32).collect()).collect();
    let prompts: Vec<Vec<u32>> = (0..batch).map(|i| prompt(plen, i as u64)).collect();
    let items: Vec<BackendItem> = (0..batch).map(|i| BackendItem { tokens: &prompts[i], start_pos: 0, block_table: &tables[i], needs_logits: true }).collect();
    let t1 = Instant::now();
    let mut last = b.step(&items).map_err(|e| e.to_string())?;
    let prefill = t1.elapsed().as_secs_f64();
    let mut toks: Vec<[u32; 1]> = last.iter().map(|l| [argmax(l)]).collect();
    let t2 = Instant::now();
    for s in 0..steps {
        let items: Vec<BackendItem> = (0..batch).map(|i| BackendItem { tokens: &toks[i], start_pos: plen + s, block_table: &tables[i], needs_logits: true }).collect();
        last = b.step(&items).map_err(|e| e.to_string())?;
        toks = last.iter().map(|l| [argmax(l)]).collect();
    }
    let decode = t2.elapsed().as_secs_f64() / steps as f64;
    if last.iter().flatten().any(|v| !v.is_finite()) {
        return Err("non-finite logits".into());
    }
    let spread = last[0].iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("    prefill {batch}x{plen}: {:.1} ms ({:.0} tok/s); decode batch {batch}: {:.2} ms/step ({:.0} tok/s); max |logit| {spread:.2}", prefill * 1e3, (batch * plen) as f64 / prefill, decode * 1e3, batch as f64 / decode);
    Ok(())
}

/// The real SmolLM2-135M (Q4_1 GGUF, decoded to f32 on the host; bf16 on the GPU): GPU
/// logits against the CPU's on a prompt and 24 teacher-forced steps. The file comes from
/// `INFLIGHT_SMOLLM2_GGUF` or the model cache; without it the test says so and is not
/// counted (a failure under `INFLIGHT_REQUIRE_MODEL=1`).
///
/// Tolerance: 30 layers of bf16 storage (residual stream included) against f32 end to end:
/// worst row relative L2 `SMOL_TOL` = 8e-2; the teacher-forced argmax may differ from the
/// CPU's greedy token only where the CPU's top-2 gap is under a tenth of its logits' standard
/// deviation (a near-tie), at most 2 of 24 steps. Printed for scale: the CPU on
/// bf16-rounded weights against the CPU on f32 weights, and the GPU with the prompt fed one
/// token at a time (decode attention only) against the CPU.
fn test_smollm2(gpu: &Arc<Gpu>) -> Result<(), String> {
    const SMOL_TOL: f32 = 8e-2;
    let path = std::env::var_os("INFLIGHT_SMOLLM2_GGUF").map(std::path::PathBuf::from).unwrap_or_else(|| models::fetch::cache_dir().join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !path.exists() {
        if std::env::var_os("INFLIGHT_REQUIRE_MODEL").is_some_and(|v| v == "1") {
            return Err(format!("{} not found", path.display()));
        }
        println!("    skipped: {} not found (set INFLIGHT_SMOLLM2_GGUF)", path.display());
        return Err("SKIP".into());
    }
    let (m, tok) = models::load::load_path(&path, models::load::WeightFormat::F32).map_err(|e| e.to_string())?;
    let p = tok.encode("The capital of France is Paris. The capital of Germany is", true).map_err(|e| e.to_string())?;
    let table: Vec<u32> = (1..=8).collect();
    let steps = 24;
    let mut cpu = CpuBackend::new(Arc::new(m.clone()), 16, TPB, 0);
    let (cpu_logits, cpu_toks) = run_seq(&mut cpu, &table, &p, 64, steps, None)?;
    let rows = |got: &[Vec<f32>]| -> Vec<f32> { got.iter().zip(&cpu_logits).map(|(a, b)| rel_l2(a, b)).collect() };
    let summary = |e: &[f32]| {
        let mut s = e.to_vec();
        s.sort_by(f32::total_cmp);
        format!("prompt row {:.2e}, median {:.2e}, worst {:.2e}", e[0], s[s.len() / 2], s[s.len() - 1])
    };
    let mut g = gpu_backend(gpu, &m, 16, 0)?;
    let (gpu_logits, gpu_toks) = run_seq(&mut g, &table, &p, 64, steps, Some(&cpu_toks))?;
    let err = rows(&gpu_logits);
    println!("    SmolLM2 GPU vs CPU relative L2: {} ({} prompt tokens)", summary(&err), p.len());
    let mut g1 = gpu_backend(gpu, &m, 16, 0)?;
    let (one_logits, _) = run_seq(&mut g1, &table, &p, 1, steps, Some(&cpu_toks))?;
    println!("    GPU, prompt one token at a time: {}", summary(&rows(&one_logits)));
    let mut cpu16 = CpuBackend::new(Arc::new(bf16_rounded(&m)), 16, TPB, 0);
    let (c16_logits, _) = run_seq(&mut cpu16, &table, &p, 64, steps, Some(&cpu_toks))?;
    println!("    CPU on bf16-rounded weights vs CPU: {}", summary(&rows(&c16_logits)));
    println!("    CPU text: {:?}", tok.decode(&cpu_toks, true).unwrap_or_default());
    let mut flips = Vec::new();
    for (s, (gt, ct)) in gpu_toks.iter().zip(&cpu_toks).enumerate() {
        if gt != ct {
            let l = &cpu_logits[s];
            let mean = l.iter().sum::<f32>() / l.len() as f32;
            let std = (l.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / l.len() as f32).sqrt();
            let gap = top2_gap(l);
            println!("    step {s}: GPU argmax {gt} vs CPU {ct}; CPU top-2 gap {gap:.4} (logits std {std:.3})");
            flips.push(gap < 0.1 * std);
        }
    }
    let worst = err.iter().cloned().fold(0f32, f32::max);
    if worst > SMOL_TOL {
        return Err(format!("relative L2 {worst:.3e} > {SMOL_TOL:.0e}"));
    }
    if flips.len() > 2 || flips.iter().any(|near_tie| !near_tie) {
        return Err(format!("{} argmax differences, not all near-ties", flips.len()));
    }
    Ok(())
}

fn all_tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("llama_logits_and_greedy_vs_cpu", test_llama_vs_cpu),
        ("qwen2_logits_and_greedy_vs_cpu", test_qwen2_vs_cpu),
        ("executor_batch_matches_alone", test_executor_batch),
        ("device_sampling_matches_host", test_device_sampling),
        ("swap_and_copy_blocks", test_swap_and_copy),
        ("rejects_bad_input", test_rejects),
        ("synthetic_llama_3_1_8b", test_synthetic_8b),
        ("smollm2_vs_cpu", test_smollm2),
    ]
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tests: Vec<_> = all_tests().into_iter().filter(|(n, _)| filter.as_deref().is_none_or(|f| n.contains(f))).collect();
    let gpu = match open_test_gpu() {
        GpuAvailability::Ready(g) => Arc::new(*g),
        GpuAvailability::NoDevice(e) => {
            println!("skipped: no CUDA device ({e})");
            println!("gpu_model: 0 passed, 0 failed, {} skipped", tests.len());
            if std::env::var_os("INFLIGHT_REQUIRE_GPU").is_some_and(|v| v == "1") {
                eprintln!("INFLIGHT_REQUIRE_GPU=1: a GPU was required");
                std::process::exit(1);
            }
            return;
        }
        GpuAvailability::Broken(e) => {
            println!("gpu_model: cannot run the GPU tests: {e}");
            println!("gpu_model: 0 passed, {} failed", tests.len());
            std::process::exit(1);
        }
    };
    println!("gpu_model on {} (sm_{} PTX)", gpu.info().name, gpu.info().ptx_arch);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, f) in tests {
        let t0 = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&gpu)));
        let dt = t0.elapsed().as_secs_f64();
        match r {
            Ok(Ok(())) => {
                passed += 1;
                println!("ok   {name} ({dt:.2} s)");
            }
            Ok(Err(e)) if e == "SKIP" => {
                skipped += 1;
                println!("skip {name}");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("FAIL {name} ({dt:.2} s): {e}");
            }
            Err(_) => {
                failed += 1;
                println!("FAIL {name} ({dt:.2} s): panicked");
            }
        }
    }
    println!("gpu_model: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
}
