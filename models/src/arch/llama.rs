//! The LLaMA-family decoder (Llama 2/3, Mistral, SmolLM2, and Qwen2 with its Q/K/V biases)
//! on the CPU reference backend: a forward pass over a batch of sequences, each with its own
//! KV cache, returning logits.

use super::kv::{ContiguousKv, KvCache, KvStore};
use super::layers::{causal_attention, HeadShape, Linear};
use super::SeqInput;
use crate::config::{ModelConfig, RopeLayout};
use host_runtime::cpu;

/// One transformer block's weights.
#[derive(Clone, Debug)]
pub struct LlamaLayer {
    pub attn_norm: Vec<f32>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Vec<f32>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// A loaded model: configuration and f32 weights.
#[derive(Clone, Debug)]
pub struct LlamaModel {
    pub config: ModelConfig,
    /// `[vocab, hidden]`.
    pub embed: Vec<f32>,
    pub layers: Vec<LlamaLayer>,
    pub final_norm: Vec<f32>,
    /// `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    inv_freq: Vec<f32>,
}

/// One sequence's part of a batched forward pass.
pub struct SeqStep<'a> {
    /// Tokens to append (a prompt chunk, or the last sampled token).
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

impl LlamaModel {
    pub fn new(config: ModelConfig, embed: Vec<f32>, layers: Vec<LlamaLayer>, final_norm: Vec<f32>, lm_head: Option<Linear>) -> Self {
        let inv_freq = config.rope_inv_freq();
        LlamaModel { config, embed, layers, final_norm, lm_head, inv_freq }
    }

    /// A fresh KV cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.layers)
    }

    /// Runs the tokens of every sequence through the model, appending to their caches.
    /// Returns, per sequence, the logits of every new token (`all_logits`) or of its last.
    pub fn forward(&self, seqs: &mut [SeqStep], all_logits: bool) -> Vec<Vec<f32>> {
        let inputs: Vec<SeqInput> = seqs.iter().map(|s| SeqInput { tokens: s.tokens, start: s.cache.len }).collect();
        let lens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
        let mut caches: Vec<&mut KvCache> = seqs.iter_mut().map(|s| &mut *s.cache).collect();
        let row = self.config.kv_heads * self.config.head_dim;
        let out = self.forward_kv(&inputs, &mut ContiguousKv { caches: &mut caches, row }, all_logits);
        for (c, n) in caches.iter_mut().zip(lens) {
            c.len += n;
        }
        out
    }

    /// Runs every sequence's tokens through the model, writing their K/V into `kv` (see
    /// [`super::Model::forward_kv`]).
    pub fn forward_kv(&self, seqs: &[SeqInput], kv: &mut dyn KvStore, all_logits: bool) -> Vec<Vec<f32>> {
        let c = &self.config;
        let hd = c.hidden;
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let total = tokens.len();
        let mut positions = Vec::with_capacity(total);
        for s in seqs {
            positions.extend((s.start..s.start + s.tokens.len()).map(|p| p as u32));
        }
        let mut x = cpu::embedding(&self.embed, hd, &tokens);
        let shape = HeadShape { heads: c.heads, kv_heads: c.kv_heads, head_dim: c.head_dim };
        let neox = c.rope_layout == RopeLayout::Neox;
        let kv_row = c.kv_heads * c.head_dim;
        let q_row = c.heads * c.head_dim;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = cpu::rms_norm(&x, &layer.attn_norm, hd, c.rms_eps);
            let mut q = layer.q.forward(&h, total);
            let mut k = layer.k.forward(&h, total);
            let v = layer.v.forward(&h, total);
            cpu::rope(&mut q, &positions, &self.inv_freq, c.heads, c.head_dim, c.head_dim, q_row, neox);
            cpu::rope(&mut k, &positions, &self.inv_freq, c.kv_heads, c.head_dim, c.head_dim, kv_row, neox);
            let mut attn = Vec::with_capacity(total * q_row);
            let mut at = 0;
            for (si, s) in seqs.iter().enumerate() {
                let t = s.tokens.len();
                kv.write(si, li, s.start, &k[at * kv_row..(at + t) * kv_row], &v[at * kv_row..(at + t) * kv_row]);
                let (ks, vs) = kv.read(si, li, s.start + t);
                attn.extend(causal_attention(&q[at * q_row..(at + t) * q_row], &ks, &vs, s.start, t, shape));
                at += t;
            }
            let o = layer.o.forward(&attn, total);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = cpu::rms_norm(&x, &layer.ffn_norm, hd, c.rms_eps);
            let act = cpu::silu_mul(&layer.gate.forward(&h, total), &layer.up.forward(&h, total));
            let down = layer.down.forward(&act, total);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
        self.logits(&x, &lens, all_logits)
    }

    /// Final norm and LM head over the rows asked for: every row (`all_logits`) or each
    /// sequence's last.
    fn logits(&self, x: &[f32], lens: &[usize], all_logits: bool) -> Vec<Vec<f32>> {
        let c = &self.config;
        let hd = c.hidden;
        let mut rows = Vec::new();
        let mut at = 0;
        for &t in lens {
            if all_logits {
                rows.extend(at..at + t);
            } else if t > 0 {
                rows.push(at + t - 1);
            }
            at += t;
        }
        let sel: Vec<f32> = rows.iter().flat_map(|&r| x[r * hd..(r + 1) * hd].iter().copied()).collect();
        let normed = cpu::rms_norm(&sel, &self.final_norm, hd, c.rms_eps);
        let logits = match &self.lm_head {
            Some(head) => head.forward(&normed, rows.len()),
            None => cpu::matmul_nt(&normed, &self.embed, None, rows.len(), hd, c.vocab_size),
        };
        let mut out = Vec::with_capacity(lens.len());
        let mut r = 0;
        for &t in lens {
            let n = if all_logits { t } else { usize::from(t > 0) };
            out.push(logits[r * c.vocab_size..(r + n) * c.vocab_size].to_vec());
            r += n;
        }
        out
    }
}
