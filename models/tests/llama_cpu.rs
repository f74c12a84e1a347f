//! The CPU forward pass is self-consistent on a small random model: incremental decoding
//! gives the logits of a full pass, and a batch gives each sequence what it gets alone.

use models::arch::llama::{LlamaLayer, LlamaModel, SeqStep};
use models::arch::{Model, PagedKv, SeqInput};
use models::arch::Linear;
use models::config::{Activation, Arch, ModelConfig, Norm, Positions, RopeLayout};
use models::generate::{generate_batch, GenParams};

fn rng_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 33) as f32 / (1u64 << 31) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tiny_model(qkv_bias: bool, tied: bool, layout: RopeLayout) -> Model {
    let config = ModelConfig {
        arch: if qkv_bias { Arch::Qwen2 } else { Arch::Llama },
        vocab_size: 97,
        hidden: 48,
        intermediate: 80,
        layers: 2,
        heads: 6,
        kv_heads: 2,
        head_dim: 8,
        rope_theta: 10_000.0,
        rope_layout: layout,
        rope_scaling: None,
        norm_eps: 1e-5,
        max_position: 256,
        tied_embeddings: tied,
        qkv_bias,
        norm: Norm::Rms,
        activation: Activation::SwiGlu,
        positions: Positions::Rope,
    };
    config.validate().unwrap();
    let mut s = 7u64;
    let (h, i, q, kv) = (config.hidden, config.intermediate, config.heads * config.head_dim, config.kv_heads * config.head_dim);
    let mut lin = |o: usize, n: usize, bias: bool| Linear::new(o, n, rng_vec(&mut s, o * n, 0.3), bias.then(|| rng_vec(&mut s, o, 0.1)));
    let layers = (0..config.layers)
        .map(|_| LlamaLayer {
            attn_norm: vec![1.0; h],
            q: lin(q, h, qkv_bias),
            k: lin(kv, h, qkv_bias),
            v: lin(kv, h, qkv_bias),
            o: lin(h, q, false),
            ffn_norm: vec![1.0; h],
            gate: lin(i, h, false),
            up: lin(i, h, false),
            down: lin(h, i, false),
        })
        .collect();
    let lm_head = (!tied).then(|| lin(config.vocab_size, h, false));
    let mut s2 = 99u64;
    let embed = rng_vec(&mut s2, config.vocab_size * h, 1.0);
    Model::Llama(LlamaModel::new(config, embed, layers, vec![1.0; h], lm_head))
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn incremental_decoding_matches_a_full_pass() {
    for (bias, tied, layout) in [(false, true, RopeLayout::Neox), (true, false, RopeLayout::Interleaved)] {
        let m = tiny_model(bias, tied, layout);
        let tokens: Vec<u32> = vec![5, 17, 3, 96, 41, 0, 8, 8, 60];
        let mut full_cache = m.new_cache();
        let full = m.forward(&mut [SeqStep { tokens: &tokens, cache: &mut full_cache }], true).remove(0);
        let mut cache = m.new_cache();
        let mut inc = m.forward(&mut [SeqStep { tokens: &tokens[..4], cache: &mut cache }], true).remove(0);
        for t in &tokens[4..] {
            inc.extend(m.forward(&mut [SeqStep { tokens: std::slice::from_ref(t), cache: &mut cache }], false).remove(0));
        }
        assert_eq!(inc.len(), full.len());
        assert!(max_rel_diff(&inc, &full) < 1e-5, "incremental vs full: {}", max_rel_diff(&inc, &full));
    }
}

#[test]
fn a_batch_gives_each_sequence_its_own_result() {
    let m = tiny_model(true, true, RopeLayout::Neox);
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![50, 40, 30, 20, 10], vec![7]];
    let params = GenParams { max_tokens: 6, temperature: 0.0, seed: 1, stop_ids: vec![] };
    let batch = generate_batch(&m, &prompts, &params, |_, _| {});
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate_batch(&m, std::slice::from_ref(p), &params, |_, _| {});
        assert_eq!(batch[i].token_ids, alone[0].token_ids, "sequence {i}");
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_stop_ids_stop() {
    let m = tiny_model(false, true, RopeLayout::Neox);
    let p = vec![vec![3u32, 4, 5]];
    let params = GenParams { max_tokens: 10, temperature: 0.8, seed: 42, stop_ids: vec![] };
    let a = generate_batch(&m, &p, &params, |_, _| {});
    let b = generate_batch(&m, &p, &params, |_, _| {});
    assert_eq!(a[0].token_ids, b[0].token_ids);
    let greedy = generate_batch(&m, &p, &GenParams { temperature: 0.0, ..params.clone() }, |_, _| {});
    let first = greedy[0].token_ids[0];
    let stopped = generate_batch(&m, &p, &GenParams { temperature: 0.0, stop_ids: vec![first], ..params }, |_, _| {});
    assert!(stopped[0].token_ids.is_empty());
    assert_eq!(stopped[0].finish_reason, models::generate::FinishReason::Stop);
}

#[test]
fn paged_store_with_scattered_blocks_matches_the_contiguous_cache() {
    let m = tiny_model(true, false, RopeLayout::Neox);
    let a: Vec<u32> = (0..23).map(|i| (i * 7 + 3) % 97).collect();
    let b: Vec<u32> = (0..9).map(|i| (i * 5 + 1) % 97).collect();
    // Contiguous reference: each sequence alone, prompt then 3 single-token steps.
    let reference = |p: &[u32]| {
        let mut cache = m.new_cache();
        let mut out = m.forward(&mut [SeqStep { tokens: &p[..p.len() - 3], cache: &mut cache }], true).remove(0);
        for t in &p[p.len() - 3..] {
            out.extend(m.forward(&mut [SeqStep { tokens: std::slice::from_ref(t), cache: &mut cache }], true).remove(0));
        }
        out
    };
    // Paged: 4 tokens per block, tables interleaved and out of order, NaN in every slot first.
    let c = m.config();
    let mut kv = PagedKv::new(16, 4, c.layers, c.kv_heads * c.head_dim);
    for blk in 0..16 {
        kv.block_mut(blk).fill(f32::NAN);
    }
    let ta: Vec<u32> = vec![9, 2, 14, 5, 11, 7];
    let tb: Vec<u32> = vec![3, 15, 1];
    let (na, nb) = (a.len() - 3, b.len() - 3);
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let outs = m.forward_kv(&[SeqInput { tokens: &a[..na], start: 0 }, SeqInput { tokens: &b[..nb], start: 0 }], &mut kv.view(vec![&ta, &tb]), true);
    got_a.extend_from_slice(&outs[0]);
    got_b.extend_from_slice(&outs[1]);
    for s in 0..3 {
        let outs = m.forward_kv(&[SeqInput { tokens: &a[na + s..na + s + 1], start: na + s }, SeqInput { tokens: &b[nb + s..nb + s + 1], start: nb + s }], &mut kv.view(vec![&ta, &tb]), true);
        got_a.extend_from_slice(&outs[0]);
        got_b.extend_from_slice(&outs[1]);
    }
    assert!(got_a.iter().chain(&got_b).all(|v| v.is_finite()));
    assert!(max_rel_diff(&got_a, &reference(&a)) < 1e-5);
    assert!(max_rel_diff(&got_b, &reference(&b)) < 1e-5);
}
