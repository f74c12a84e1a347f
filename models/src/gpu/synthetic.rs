//! Synthetic weights for performance work: the exact architecture of a [`ModelConfig`] (e.g.
//! `ModelConfig::named("llama-3.1-8b")`) with random values generated on the GPU by
//! `kernels::fill_uniform`, so an 8B model needs no file and no host copy. Scales keep the
//! activations sane: projections uniform in `±1/sqrt(k)` (k the input width), norms
//! `1 ± 0.05`, the embedding `±1`, biases `±0.1`.

use super::weights::{check_supported, GpuLayer, GpuWeights};
use super::GpuError;
use crate::config::ModelConfig;
use half::bf16;
use host_runtime::{kernels, DeviceBuffer, Gpu};

/// Allocates and fills tensors, each from its own seed.
struct Filler<'a> {
    gpu: &'a Gpu,
    seed: u64,
    next: u64,
}

impl Filler<'_> {
    fn fill(&mut self, n: usize, center: f32, half_width: f32) -> Result<DeviceBuffer<bf16>, GpuError> {
        let mut buf = self.gpu.alloc(n)?;
        self.next += 1;
        let seed = kernel_seed(self.seed, self.next);
        kernels::fill_uniform(self.gpu, &mut buf, seed, center, half_width)?;
        Ok(buf)
    }

    /// A `[out, k]` projection, uniform in `±1/sqrt(k)`.
    fn proj(&mut self, out: usize, k: usize) -> Result<DeviceBuffer<bf16>, GpuError> {
        self.fill(out * k, 0.0, 1.0 / (k as f32).sqrt())
    }

    fn norm(&mut self, n: usize) -> Result<DeviceBuffer<bf16>, GpuError> {
        self.fill(n, 1.0, 0.05)
    }
}

/// The seed of tensor `index` of a model seeded with `seed`.
fn kernel_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)
}

impl GpuWeights {
    /// Random weights of `config`'s exact shapes, generated on the GPU (LLaMA family and
    /// Qwen2; Q/K/V biases when `config.qkv_bias`).
    pub fn synthetic(gpu: &Gpu, config: &ModelConfig, seed: u64) -> Result<Self, GpuError> {
        check_supported(config)?;
        let c = config;
        let (h, q, kv, inter) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim, c.intermediate);
        let mut f = Filler { gpu, seed, next: 0 };
        let mut layers = Vec::with_capacity(c.layers);
        for _ in 0..c.layers {
            layers.push(GpuLayer {
                attn_norm: f.norm(h)?,
                qkv: f.proj(q + 2 * kv, h)?,
                qkv_bias: if c.qkv_bias { Some(f.fill(q + 2 * kv, 0.0, 0.1)?) } else { None },
                o: f.proj(h, q)?,
                o_bias: None,
                ffn_norm: f.norm(h)?,
                gate_up: f.proj(2 * inter, h)?,
                down: f.proj(h, inter)?,
                down_bias: None,
            });
        }
        let embed = f.fill(c.vocab_size * h, 0.0, 1.0)?;
        let lm_head = if c.tied_embeddings { None } else { Some(f.proj(c.vocab_size, h)?) };
        let final_norm = f.norm(h)?;
        gpu.synchronize()?;
        Ok(GpuWeights { config: c.clone(), embed, layers, final_norm, lm_head, inv_freq: gpu.upload(&c.rope_inv_freq())? })
    }
}
