//! Architecture definitions on the CPU reference backend. One definition per architecture,
//! whatever the weight format the checkpoint came in: loaders convert to these weights.
//! [`Model`] is the loaded model of any architecture.

pub mod kv;
pub mod layers;
pub mod llama;

pub use kv::{KvCache, KvStore, PagedKv};
pub use layers::Linear;
pub use llama::{LlamaLayer, LlamaModel};

use crate::config::ModelConfig;

/// One sequence's part of a batched forward pass over a [`KvStore`].
#[derive(Clone, Copy, Debug)]
pub struct SeqInput<'a> {
    /// Tokens to compute (a prompt chunk, or the last sampled token).
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; positions before it are already in the store.
    pub start: usize,
}

/// A loaded model of any supported architecture.
#[derive(Clone, Debug)]
pub enum Model {
    Llama(LlamaModel),
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Llama(m) => &m.config,
        }
    }

    /// Runs every sequence's tokens through the model, writing their K/V into `kv`.
    /// Returns, per sequence, the logits of every new token (`all_logits`) or of its last
    /// (none for a sequence with no tokens).
    pub fn forward_kv(&self, seqs: &[SeqInput], kv: &mut dyn KvStore, all_logits: bool) -> Vec<Vec<f32>> {
        match self {
            Model::Llama(m) => m.forward_kv(seqs, kv, all_logits),
        }
    }

    /// A fresh contiguous KV cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config().layers)
    }

    /// Forward over contiguous per-sequence caches (each advanced by its tokens).
    pub fn forward(&self, seqs: &mut [llama::SeqStep], all_logits: bool) -> Vec<Vec<f32>> {
        match self {
            Model::Llama(m) => m.forward(seqs, all_logits),
        }
    }

    /// Values of one position's K (or V) row: `kv_heads × head_dim`.
    pub fn kv_row(&self) -> usize {
        let c = self.config();
        c.kv_heads * c.head_dim
    }
}
