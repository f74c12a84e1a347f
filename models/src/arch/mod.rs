//! Architecture definitions on the CPU reference backend. One definition per architecture,
//! whatever the weight format the checkpoint came in: loaders convert to these weights.
//! [`Model`] is the loaded model of any architecture.

pub mod gpt2;
pub mod kv;
pub mod layers;
pub mod llama;

pub use gpt2::{Gpt2Layer, Gpt2Model, LayerNorm};
pub use kv::{KvCache, KvStore, PagedKv};
pub use layers::Linear;
pub use llama::{LlamaLayer, LlamaModel};

use crate::config::ModelConfig;
use kv::ContiguousKv;

/// One sequence's part of a batched forward pass over a [`KvStore`].
#[derive(Clone, Copy, Debug)]
pub struct SeqInput<'a> {
    /// Tokens to compute (a prompt chunk, or the last sampled token).
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; positions before it are already in the store.
    pub start: usize,
}

/// One sequence's part of a batched forward pass over contiguous caches.
pub struct SeqStep<'a> {
    /// Tokens to append (a prompt chunk, or the last sampled token).
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// Runs `forward_kv` over the steps' contiguous caches (K/V rows of `row` values) and
/// advances each cache by its tokens.
pub(crate) fn forward_contiguous(seqs: &mut [SeqStep], row: usize, forward_kv: impl FnOnce(&[SeqInput], &mut dyn KvStore) -> Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    let inputs: Vec<SeqInput> = seqs.iter().map(|s| SeqInput { tokens: s.tokens, start: s.cache.len }).collect();
    let lens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
    let mut caches: Vec<&mut KvCache> = seqs.iter_mut().map(|s| &mut *s.cache).collect();
    let out = forward_kv(&inputs, &mut ContiguousKv { caches: &mut caches, row });
    for (c, n) in caches.iter_mut().zip(lens) {
        c.len += n;
    }
    out
}

/// A loaded model of any supported architecture.
#[derive(Clone, Debug)]
pub enum Model {
    Llama(LlamaModel),
    Gpt2(Gpt2Model),
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Llama(m) => &m.config,
            Model::Gpt2(m) => &m.config,
        }
    }

    /// Runs every sequence's tokens through the model, writing their K/V into `kv`.
    /// Returns, per sequence, the logits of every new token (`all_logits`) or of its last
    /// (none for a sequence with no tokens).
    pub fn forward_kv(&self, seqs: &[SeqInput], kv: &mut dyn KvStore, all_logits: bool) -> Vec<Vec<f32>> {
        match self {
            Model::Llama(m) => m.forward_kv(seqs, kv, all_logits),
            Model::Gpt2(m) => m.forward_kv(seqs, kv, all_logits),
        }
    }

    /// A fresh contiguous KV cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config().layers)
    }

    /// Forward over contiguous per-sequence caches (each advanced by its tokens).
    pub fn forward(&self, seqs: &mut [SeqStep], all_logits: bool) -> Vec<Vec<f32>> {
        forward_contiguous(seqs, self.kv_row(), |inputs, kv| self.forward_kv(inputs, kv, all_logits))
    }

    /// Values of one position's K (or V) row: `kv_heads × head_dim`.
    pub fn kv_row(&self) -> usize {
        let c = self.config();
        c.kv_heads * c.head_dim
    }
}
