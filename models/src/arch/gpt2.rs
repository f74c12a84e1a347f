//! The GPT-2 decoder on the CPU reference backend: token plus learned position embedding,
//! pre-LayerNorm blocks (fused Q/K/V with bias → causal multi-head attention → projection;
//! LayerNorm → `c_fc` → GELU → `c_proj`), a final LayerNorm and an LM head (usually the
//! token embedding). Same batch and [`KvStore`] contract as [`super::LlamaModel`], so the
//! paged backend and the executor run it unchanged.

use super::kv::{KvCache, KvStore};
use super::layers::{add_assign, attend, flatten, logit_rows, split_logits, HeadShape, Linear};
use super::{forward_contiguous, SeqInput, SeqStep};
use crate::config::{Activation, ModelConfig};
use host_runtime::cpu;

/// LayerNorm's weight and bias, `[hidden]` each.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LayerNorm {
    /// Normalises each `weight.len()`-wide row of `x`.
    pub fn forward(&self, x: &[f32], eps: f32) -> Vec<f32> {
        cpu::layer_norm(x, &self.weight, Some(&self.bias), self.weight.len(), eps)
    }
}

/// One transformer block's weights (every linear layer `[out, in]` with a bias).
#[derive(Clone, Debug)]
pub struct Gpt2Layer {
    pub ln_1: LayerNorm,
    /// Fused `[3 × hidden, hidden]`: output rows are Q, then K, then V (`c_attn`).
    pub qkv: Linear,
    /// `[hidden, hidden]` (`attn.c_proj`).
    pub attn_out: Linear,
    pub ln_2: LayerNorm,
    /// `[intermediate, hidden]` (`mlp.c_fc`).
    pub fc: Linear,
    /// `[hidden, intermediate]` (`mlp.c_proj`).
    pub proj: Linear,
}

/// A loaded GPT-2 model.
#[derive(Clone, Debug)]
pub struct Gpt2Model {
    pub config: ModelConfig,
    /// Token embedding `[vocab, hidden]` (`wte`).
    pub wte: Vec<f32>,
    /// Position embedding `[max_position, hidden]` (`wpe`).
    pub wpe: Vec<f32>,
    pub layers: Vec<Gpt2Layer>,
    pub ln_f: LayerNorm,
    /// `None` when tied to `wte`.
    pub lm_head: Option<Linear>,
}

impl Gpt2Model {
    /// A fresh KV cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.layers)
    }

    /// Runs the tokens of every sequence through the model, appending to their caches.
    /// Returns, per sequence, the logits of every new token (`all_logits`) or of its last.
    pub fn forward(&self, seqs: &mut [SeqStep], all_logits: bool) -> Vec<Vec<f32>> {
        forward_contiguous(seqs, self.config.hidden, |inputs, kv| self.forward_kv(inputs, kv, all_logits))
    }

    /// Runs every sequence's tokens through the model, writing their K/V into `kv` (see
    /// [`super::Model::forward_kv`]).
    pub fn forward_kv(&self, seqs: &[SeqInput], kv: &mut dyn KvStore, all_logits: bool) -> Vec<Vec<f32>> {
        let (tokens, positions) = flatten(seqs);
        let mut x = self.embed(&tokens, &positions);
        for (li, layer) in self.layers.iter().enumerate() {
            self.attention(li, layer, &mut x, seqs, kv);
            self.mlp(layer, &mut x);
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
        self.logits(&x, &lens, all_logits)
    }

    /// `wte[token] + wpe[position]`. A token id outside the vocabulary or a position at or
    /// past `max_position` contributes a zero row (callers keep both in range; this only
    /// keeps a bad input from indexing out of bounds).
    fn embed(&self, tokens: &[u32], positions: &[u32]) -> Vec<f32> {
        let hd = self.config.hidden;
        let mut x = cpu::embedding(&self.wte, hd, tokens);
        add_assign(&mut x, &cpu::embedding(&self.wpe, hd, positions));
        x
    }

    /// `x += c_proj(attention(q, k, v))` with `q, k, v = c_attn(ln_1(x))`, for layer `li`.
    fn attention(&self, li: usize, layer: &Gpt2Layer, x: &mut [f32], seqs: &[SeqInput], kv: &mut dyn KvStore) {
        let c = &self.config;
        let total = x.len() / c.hidden;
        let h = layer.ln_1.forward(x, c.norm_eps);
        let (q, k, v) = split_qkv(&layer.qkv.forward(&h, total), c.hidden);
        let shape = HeadShape { heads: c.heads, kv_heads: c.heads, head_dim: c.head_dim };
        let attn = attend(seqs, li, &q, &k, &v, shape, kv);
        add_assign(x, &layer.attn_out.forward(&attn, total));
    }

    /// `x += proj(gelu(fc(ln_2(x))))`.
    fn mlp(&self, layer: &Gpt2Layer, x: &mut [f32]) {
        let c = &self.config;
        let total = x.len() / c.hidden;
        let h = layer.ln_2.forward(x, c.norm_eps);
        let up = layer.fc.forward(&h, total);
        // The config was validated: GPT-2 uses one of the two GELUs.
        let act = match c.activation {
            Activation::GeluErf => cpu::gelu_erf(&up),
            _ => cpu::gelu_tanh(&up),
        };
        add_assign(x, &layer.proj.forward(&act, total));
    }

    /// `ln_f` and the LM head over the rows asked for.
    fn logits(&self, x: &[f32], lens: &[usize], all_logits: bool) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (sel, rows) = logit_rows(x, c.hidden, lens, all_logits);
        let normed = self.ln_f.forward(&sel, c.norm_eps);
        let logits = match &self.lm_head {
            Some(head) => head.forward(&normed, rows),
            None => cpu::matmul_nt(&normed, &self.wte, None, rows, c.hidden, c.vocab_size),
        };
        split_logits(&logits, c.vocab_size, lens, all_logits)
    }
}

/// Splits fused `[t, 3 × hidden]` rows into Q, K and V, `[t, hidden]` each.
fn split_qkv(qkv: &[f32], hidden: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let t = qkv.len() / (3 * hidden);
    let (mut q, mut k, mut v) = (Vec::with_capacity(t * hidden), Vec::with_capacity(t * hidden), Vec::with_capacity(t * hidden));
    for row in qkv.chunks_exact(3 * hidden) {
        q.extend_from_slice(&row[..hidden]);
        k.extend_from_slice(&row[hidden..2 * hidden]);
        v.extend_from_slice(&row[2 * hidden..]);
    }
    (q, k, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_qkv_takes_thirds_of_each_row() {
        let qkv: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let (q, k, v) = split_qkv(&qkv, 2);
        assert_eq!((q, k, v), (vec![0., 1., 6., 7.], vec![2., 3., 8., 9.], vec![4., 5., 10., 11.]));
    }
}
