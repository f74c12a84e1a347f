//! CPU forward-pass throughput: prefill and decode tokens/s at batch 1 and 8, on a real model
//! (`cpu_bench <model>`: a path or a known name) or, without one, a random-weight model with
//! SmolLM2-135M's shape, f32 (`cpu_bench --synthetic`) or in the GGUF's Q4_1/Q8_0 blocks
//! (`cpu_bench --synthetic-q4`); then batch-64 decode after 16-token prompts. Optional
//! arguments after the model: the batches (`1,8,64`) and the decode steps.
//! `cpu_bench --matmul`: the matmul kernels alone at the model's shapes.
//!
//! `cargo run --release -p models --example cpu_bench -- smollm2`

use models::arch::llama::{LlamaLayer, LlamaModel, SeqStep};
use models::arch::{Linear, Model};
use models::config::{Activation, Arch, ModelConfig, Norm, Positions, RopeLayout};
use std::time::Instant;

/// Random GGML blocks for an `[n, k]` matrix of type `ty` (moderate scales and mins).
fn random_blocks(ty: quant::GgmlType, n: usize, k: usize, seed: u32) -> Vec<u8> {
    let row_bytes = ty.bytes_for(k as u64).unwrap() as usize;
    let block = row_bytes / (k / 32);
    let mut s = seed | 1;
    let mut bytes: Vec<u8> = (0..n * row_bytes).map(|_| { s ^= s << 13; s ^= s >> 17; s ^= s << 5; s as u8 }).collect();
    for b in bytes.chunks_exact_mut(block) {
        let d = 0.002 + b[2] as f32 * 1e-5;
        b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        if ty == quant::GgmlType::Q4_1 {
            b[2..4].copy_from_slice(&half::f16::from_f32(-7.5 * d).to_le_bytes());
        }
    }
    bytes
}

/// SmolLM2-135M's shape in the real file's formats: Q4_1 layers, a Q8_0 tied head (kept
/// in blocks as `WeightFormat::Native` loads it), random values.
fn synthetic_q4() -> Model {
    let Model::Llama(f) = synthetic() else { unreachable!() };
    let c = f.config.clone();
    let q4 = |out: usize, inp: usize, seed: u32| Linear::ggml(out, inp, quant::GgmlType::Q4_1, random_blocks(quant::GgmlType::Q4_1, out, inp, seed), None).unwrap();
    let (h, i, q, kv) = (c.hidden, c.intermediate, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let layers = (0..c.layers as u32)
        .map(|l| LlamaLayer {
            attn_norm: vec![1.0; h],
            q: q4(q, h, 10 * l + 1),
            k: q4(kv, h, 10 * l + 2),
            v: q4(kv, h, 10 * l + 3),
            o: q4(h, q, 10 * l + 4),
            ffn_norm: vec![1.0; h],
            gate: q4(i, h, 10 * l + 5),
            up: q4(i, h, 10 * l + 6),
            down: q4(h, i, 10 * l + 7),
        })
        .collect();
    let head = Linear::ggml(c.vocab_size, h, quant::GgmlType::Q8_0, random_blocks(quant::GgmlType::Q8_0, c.vocab_size, h, 99), None).unwrap();
    Model::Llama(LlamaModel::new(c, f.embed, layers, vec![1.0; h], Some(head)))
}

fn synthetic() -> Model {
    let c = ModelConfig {
        arch: Arch::Llama,
        vocab_size: 49152,
        hidden: 576,
        intermediate: 1536,
        layers: 30,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        rope_theta: 100_000.0,
        rope_layout: RopeLayout::Interleaved,
        rope_scaling: None,
        norm_eps: 1e-5,
        max_position: 8192,
        tied_embeddings: true,
        qkv_bias: false,
        norm: Norm::Rms,
        activation: Activation::SwiGlu,
        positions: Positions::Rope,
    };
    let mut s = 1u32;
    let mut r = |n: usize| -> Vec<f32> {
        (0..n).map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 9) as f32 / (1u32 << 23) as f32 * 0.1 - 0.05
        }).collect()
    };
    let (h, i, q, kv) = (c.hidden, c.intermediate, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let layers = (0..c.layers)
        .map(|_| LlamaLayer {
            attn_norm: vec![1.0; h],
            q: Linear::new(q, h, r(q * h), None),
            k: Linear::new(kv, h, r(kv * h), None),
            v: Linear::new(kv, h, r(kv * h), None),
            o: Linear::new(h, q, r(h * q), None),
            ffn_norm: vec![1.0; h],
            gate: Linear::new(i, h, r(i * h), None),
            up: Linear::new(i, h, r(i * h), None),
            down: Linear::new(h, i, r(h * i), None),
        })
        .collect();
    let embed = r(c.vocab_size * h);
    Model::Llama(LlamaModel::new(c, embed, layers, vec![1.0; h], None))
}

/// On-CPU seconds of every thread of this process so far (Linux; 0 elsewhere): with other
/// load on the machine, tokens per CPU-second vary less than tokens per second.
fn cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        / 1e9
}

fn bench(model: &Model, batch: usize, prompt_len: usize, decode: usize) {
    let prompts: Vec<Vec<u32>> = (0..batch).map(|b| (0..prompt_len).map(|t| ((t * 31 + b * 7) % 1000) as u32 + 10).collect()).collect();
    let mut caches: Vec<_> = (0..batch).map(|_| model.new_cache()).collect();
    let (t0, c0) = (Instant::now(), cpu_secs());
    {
        let mut steps: Vec<SeqStep> = caches.iter_mut().zip(&prompts).map(|(cache, p)| SeqStep { tokens: p, cache }).collect();
        model.forward(&mut steps, false);
    }
    let (prefill, prefill_cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0);
    let (t1, c1) = (Instant::now(), cpu_secs());
    for step in 0..decode {
        let toks: Vec<[u32; 1]> = (0..batch).map(|b| [(step * 13 + b) as u32 % 1000 + 5]).collect();
        let mut steps: Vec<SeqStep> = caches.iter_mut().zip(&toks).map(|(cache, t)| SeqStep { tokens: t, cache }).collect();
        model.forward(&mut steps, false);
    }
    let (dec, dec_cpu) = (t1.elapsed().as_secs_f64(), cpu_secs() - c1);
    println!(
        "batch {batch}: prefill {prompt_len} tok/seq: {:.1} tok/s ({:.3} s) | decode {decode} steps: {:.1} tok/s ({:.1} ms/step) | per CPU-s: prefill {:.0}, decode {:.0} tok",
        (batch * prompt_len) as f64 / prefill,
        prefill,
        (batch * decode) as f64 / dec,
        dec * 1e3 / decode as f64,
        (batch * prompt_len) as f64 / prefill_cpu,
        (batch * decode) as f64 / dec_cpu,
    );
}

/// GFLOP/s of `cpu::matmul_nt` (f32 weights) at SmolLM2-135M's projection shapes.
fn bench_matmul() {
    use host_runtime::cpu;
    for (m, k, n) in [(4, 256, 24), (128, 256, 24), (128, 576, 24), (128, 576, 576), (128, 576, 192), (128, 576, 1536), (1024, 576, 1536), (128, 1536, 576), (8, 576, 1536), (1, 576, 49152)] {
        let x: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let (t, c) = (Instant::now(), cpu_secs());
            let reps = (2e8 / (m * k * n) as f64).ceil() as usize;
            for _ in 0..reps {
                std::hint::black_box(cpu::matmul_nt(&x, &w, None, m, k, n));
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            best_cpu = best_cpu.min((cpu_secs() - c) / reps as f64);
        }
        // The previous scheme, for comparison: one `cpu::dot` per output, rayon over columns.
        let mut best_dot = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let reps = (1e8 / (m * k * n) as f64).ceil() as usize;
            for _ in 0..reps {
                use rayon::prelude::*;
                let yt: Vec<f32> = (0..n).into_par_iter().with_min_len(64).flat_map_iter(|j| (0..m).map(move |i| (i, j))).map(|(i, j)| cpu::dot(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k])).collect();
                std::hint::black_box(yt);
            }
            best_dot = best_dot.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let gf = |s: f64| 2.0 * (m * k * n) as f64 / s / 1e9;
        println!("matmul m {m:4} k {k:5} n {n:6}: {:7.1} GFLOP/s ({:.3} ms, {:.3} CPU-ms); dot per output {:7.1} GFLOP/s", gf(best), best * 1e3, best_cpu * 1e3, gf(best_dot));
    }
}

/// Time per call of a block-format `Linear` (random blocks with moderate scales) at the
/// model's shapes: the fused dots (m <= 4) and decode-then-tile (above).
fn bench_ggml() {
    for (ty, m, k, n) in [
        (quant::GgmlType::Q4_1, 1, 576, 1536),
        (quant::GgmlType::Q4_1, 4, 576, 1536),
        (quant::GgmlType::Q4_1, 8, 576, 1536),
        (quant::GgmlType::Q4_1, 128, 576, 1536),
        (quant::GgmlType::Q8_0, 1, 576, 49152),
        (quant::GgmlType::Q8_0, 8, 576, 49152),
    ] {
        let row_bytes = ty.bytes_for(k as u64).unwrap() as usize;
        let bytes = random_blocks(ty, n, k, 7);
        if m == 1 && ty == quant::GgmlType::Q4_1 {
            // The kernel alone, one thread, no dispatch.
            let x: Vec<f32> = (0..k).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect();
            let sums = host_runtime::cpu::qdot::block_sums(&x);
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..20 {
                    for r in bytes.chunks_exact(row_bytes) {
                        std::hint::black_box(host_runtime::cpu::qdot::dot_q4_1(&x, &sums, r));
                    }
                }
                best = best.min(t.elapsed().as_secs_f64() / 20.0);
            }
            println!("  kernel alone: {:.3} ms, {:.2} ns/block", best * 1e3, best * 1e9 / (n * k / 32) as f64);
        }
        let lin = Linear::ggml(n, k, ty, bytes, None).unwrap();
        let x: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect();
        let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let reps = (1e8 / (m.max(8) * k * n) as f64).ceil() as usize;
            let (t, c) = (Instant::now(), cpu_secs());
            for _ in 0..reps {
                std::hint::black_box(lin.forward(&x, m));
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            best_cpu = best_cpu.min((cpu_secs() - c) / reps as f64);
        }
        println!(
            "{} m {m:4} k {k:5} n {n:6}: {:.3} ms ({:.3} CPU-ms), {:6.1} GFLOP/s, weights {:5.1} GB/s",
            ty.name(),
            best * 1e3,
            best_cpu * 1e3,
            2.0 * (m * k * n) as f64 / best / 1e9,
            (n * row_bytes) as f64 / best / 1e9
        );
    }
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "--synthetic".into());
    if arg == "--matmul" {
        bench_ggml();
        return bench_matmul();
    }
    let model: std::sync::Arc<Model> = if arg == "--synthetic" {
        synthetic().into()
    } else if arg == "--synthetic-q4" {
        synthetic_q4().into()
    } else {
        models::Llm::load(&arg).unwrap_or_else(|e| panic!("{e}")).model
    };
    // Optional: which batches to run (comma-separated, default 1,8,64), and decode steps.
    let batches: Vec<usize> = std::env::args().nth(2).map_or(vec![1, 8, 64], |s| s.split(',').map(|b| b.parse().expect("batch")).collect());
    let steps: Option<usize> = std::env::args().nth(3).map(|s| s.parse().expect("decode steps"));
    println!("threads: {}", rayon::current_num_threads());
    for batch in batches {
        if batch == 64 {
            // In-flight batching's decode: 64 sequences (short prompts, to keep the run short).
            bench(&model, 64, 16, steps.unwrap_or(16));
        } else {
            bench(&model, batch, 128, steps.unwrap_or(32));
        }
    }
}
