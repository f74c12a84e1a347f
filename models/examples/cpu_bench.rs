//! CPU forward-pass throughput: prefill and decode tokens/s at batch 1 and 8, on a real model
//! (`cpu_bench <model>`: a path or a known name) or, without one, a random-weight model with
//! SmolLM2-135M's shape (`cpu_bench --synthetic`).
//!
//! `cargo run --release -p models --example cpu_bench -- smollm2`

use models::arch::llama::{LlamaLayer, LlamaModel, SeqStep};
use models::arch::{Linear, Model};
use models::config::{Arch, ModelConfig, RopeLayout};
use std::time::Instant;

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
        rms_eps: 1e-5,
        max_position: 8192,
        tied_embeddings: true,
        qkv_bias: false,
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

fn bench(model: &Model, batch: usize, prompt_len: usize, decode: usize) {
    let prompts: Vec<Vec<u32>> = (0..batch).map(|b| (0..prompt_len).map(|t| ((t * 31 + b * 7) % 1000) as u32 + 10).collect()).collect();
    let mut caches: Vec<_> = (0..batch).map(|_| model.new_cache()).collect();
    let t0 = Instant::now();
    {
        let mut steps: Vec<SeqStep> = caches.iter_mut().zip(&prompts).map(|(cache, p)| SeqStep { tokens: p, cache }).collect();
        model.forward(&mut steps, false);
    }
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for step in 0..decode {
        let toks: Vec<[u32; 1]> = (0..batch).map(|b| [(step * 13 + b) as u32 % 1000 + 5]).collect();
        let mut steps: Vec<SeqStep> = caches.iter_mut().zip(&toks).map(|(cache, t)| SeqStep { tokens: t, cache }).collect();
        model.forward(&mut steps, false);
    }
    let dec = t1.elapsed().as_secs_f64();
    println!(
        "batch {batch}: prefill {prompt_len} tok/seq: {:.1} tok/s ({:.3} s) | decode {decode} steps: {:.1} tok/s ({:.1} ms/step)",
        (batch * prompt_len) as f64 / prefill,
        prefill,
        (batch * decode) as f64 / dec,
        dec * 1e3 / decode as f64
    );
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "--synthetic".into());
    let model = if arg == "--synthetic" {
        synthetic()
    } else {
        models::Llm::load(&arg).unwrap_or_else(|e| panic!("{e}")).model
    };
    println!("threads: {}", rayon::current_num_threads());
    for batch in [1, 8] {
        bench(&model, batch, 128, 32);
    }
}
