//! Sizing the GPU backend: the KV blocks that fit the device memory left after the weights
//! (already uploaded) and the activation buffers, through the shared
//! `host_runtime::kv::size_kv_cache` rule (`budget = free × fraction`, capped; a request of
//! `max_seq_len` tokens must fit, else the error names the bytes needed, the bytes available
//! and the longest length that fits).

use super::activations::activation_bytes;
use super::backend::GpuBackendConfig;
use super::weights::GpuWeights;
use super::GpuError;
use crate::config::ModelConfig;
use host_runtime::kv::{size_kv_cache, KvSizing};
use host_runtime::Gpu;

/// What to size for.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuSizing {
    pub tokens_per_block: usize,
    /// The longest request (prompt + output) that must fit.
    pub max_seq_len: usize,
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    /// Share of the free memory (after weights and activations) the KV cache takes.
    pub fraction: f32,
    /// An upper bound on the KV cache's bytes.
    pub cap_bytes: Option<u64>,
    /// Host memory for swapped-out blocks.
    pub host_cache_bytes: u64,
}

impl GpuSizing {
    /// Defaults: 32 tokens per block, batch 64, 8192 tokens per step, 90 % of the free memory,
    /// no host tier.
    pub fn new(max_seq_len: usize) -> Self {
        GpuSizing { tokens_per_block: 32, max_seq_len, max_batch_size: 64, max_num_tokens: 8192, fraction: 0.9, cap_bytes: None, host_cache_bytes: 0 }
    }
}

/// KV bytes per token on the GPU: `layers × 2 × kv_heads × head_dim × 2` (bf16).
pub fn gpu_kv_bytes_per_token(c: &ModelConfig) -> u64 {
    (c.layers * 2 * c.kv_heads * c.head_dim * 2) as u64
}

/// The blocks that fit `free_bytes` once the activations for `s` are taken out.
pub fn kv_blocks_for(c: &ModelConfig, free_bytes: u64, s: &GpuSizing) -> Result<usize, GpuError> {
    let free = free_bytes.saturating_sub(activation_bytes(c, s.max_num_tokens, s.max_batch_size));
    let sizing = KvSizing { bytes_per_token: gpu_kv_bytes_per_token(c), tokens_per_block: s.tokens_per_block, max_seq_len: s.max_seq_len };
    Ok(size_kv_cache(&sizing, free, Some(s.fraction), s.cap_bytes)?)
}

/// The backend configuration for `weights` (already on `gpu`) from the device's free memory.
pub fn size_backend(gpu: &Gpu, weights: &GpuWeights, s: &GpuSizing) -> Result<GpuBackendConfig, GpuError> {
    let (free, _total) = gpu.memory_info()?;
    let num_blocks = kv_blocks_for(&weights.config, free as u64, s)?;
    let block_bytes = gpu_kv_bytes_per_token(&weights.config) * s.tokens_per_block as u64;
    Ok(GpuBackendConfig {
        num_blocks,
        tokens_per_block: s.tokens_per_block,
        host_blocks: (s.host_cache_bytes / block_bytes.max(1)) as usize,
        max_batch_size: s.max_batch_size,
        max_num_tokens: s.max_num_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_8b_on_an_h200_and_a_refusal_that_names_the_numbers() {
        let c = ModelConfig::named("llama-3.1-8b").unwrap();
        assert_eq!(gpu_kv_bytes_per_token(&c), 128 * 1024);
        let s = GpuSizing::new(8192);
        // 120 GiB free after the weights: about 0.9 × (120 GiB - activations) / 4 MiB blocks.
        let blocks = kv_blocks_for(&c, 120 << 30, &s).unwrap();
        let act = activation_bytes(&c, s.max_num_tokens, s.max_batch_size);
        assert_eq!(blocks as u64, (((120u64 << 30) - act) as f64 * 0.9).floor() as u64 / (4 << 20));
        // 1 GiB free cannot hold an 8192-token request (1 GiB + a block) after activations.
        let e = kv_blocks_for(&c, 1 << 30, &GpuSizing { max_num_tokens: 16, max_batch_size: 1, ..s }).unwrap_err().to_string();
        assert!(e.contains("max_seq_len = 8192") && e.contains("largest max_seq_len that fits"), "{e}");
    }
}
