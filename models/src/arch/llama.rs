//! The LLaMA-family decoder (Llama 2/3, Mistral, SmolLM2, and Qwen2 with its Q/K/V biases)
//! on the CPU reference backend: a forward pass over a batch of sequences, each with its own
//! KV cache, returning logits.

use super::kv::{KvCache, KvStore};
use super::layers::{add_assign, attend, flatten, logit_rows, split_logits, HeadShape, Linear};
pub use super::SeqStep;
use super::{forward_contiguous, SeqInput};
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
        let row = self.config.kv_heads * self.config.head_dim;
        forward_contiguous(seqs, row, |inputs, kv| self.forward_kv(inputs, kv, all_logits))
    }

    /// Runs every sequence's tokens through the model, writing their K/V into `kv` (see
    /// [`super::Model::forward_kv`]).
    pub fn forward_kv(&self, seqs: &[SeqInput], kv: &mut dyn KvStore, all_logits: bool) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (tokens, positions) = flatten(seqs);
        let mut x = cpu::embedding(&self.embed, c.hidden, &tokens);
        for (li, layer) in self.layers.iter().enumerate() {
            self.attention(li, layer, &mut x, &positions, seqs, kv);
            self.mlp(layer, &mut x);
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
        self.logits(&x, &lens, all_logits)
    }

    /// `x += o(attention(rope(q), rope(k), v))` of `attn_norm(x)` for layer `li`.
    fn attention(&self, li: usize, layer: &LlamaLayer, x: &mut [f32], positions: &[u32], seqs: &[SeqInput], kv: &mut dyn KvStore) {
        let c = &self.config;
        let total = positions.len();
        let neox = c.rope_layout == RopeLayout::Neox;
        let h = cpu::rms_norm(x, &layer.attn_norm, c.hidden, c.norm_eps);
        let mut q = layer.q.forward(&h, total);
        let mut k = layer.k.forward(&h, total);
        let v = layer.v.forward(&h, total);
        cpu::rope(&mut q, positions, &self.inv_freq, c.heads, c.head_dim, c.head_dim, c.heads * c.head_dim, neox);
        cpu::rope(&mut k, positions, &self.inv_freq, c.kv_heads, c.head_dim, c.head_dim, c.kv_heads * c.head_dim, neox);
        let shape = HeadShape { heads: c.heads, kv_heads: c.kv_heads, head_dim: c.head_dim };
        let attn = attend(seqs, li, &q, &k, &v, shape, kv);
        add_assign(x, &layer.o.forward(&attn, total));
    }

    /// `x += down(silu(gate(h)) * up(h))` with `h = ffn_norm(x)`.
    fn mlp(&self, layer: &LlamaLayer, x: &mut [f32]) {
        let c = &self.config;
        let total = x.len() / c.hidden;
        let h = cpu::rms_norm(x, &layer.ffn_norm, c.hidden, c.norm_eps);
        let act = cpu::silu_mul(&layer.gate.forward(&h, total), &layer.up.forward(&h, total));
        add_assign(x, &layer.down.forward(&act, total));
    }

    /// Final norm and LM head over the rows asked for: every row (`all_logits`) or each
    /// sequence's last.
    fn logits(&self, x: &[f32], lens: &[usize], all_logits: bool) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (sel, rows) = logit_rows(x, c.hidden, lens, all_logits);
        let normed = cpu::rms_norm(&sel, &self.final_norm, c.hidden, c.norm_eps);
        let logits = match &self.lm_head {
            Some(head) => head.forward(&normed, rows),
            None => cpu::matmul_nt(&normed, &self.embed, None, rows, c.hidden, c.vocab_size),
        };
        split_logits(&logits, c.vocab_size, lens, all_logits)
    }
}
