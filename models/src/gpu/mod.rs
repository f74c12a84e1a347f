//! The GPU backend: LLaMA-family and Qwen2 models on one CUDA GPU, in bf16, behind the
//! executor's [`host_runtime::executor::Backend`] trait, so the same scheduler, sampling and
//! executor code drive CPU and GPU.
//!
//! ```text
//! let gpu = Arc::new(Gpu::new(0)?);
//! let weights = GpuWeights::upload(&gpu, &model)?;              // or GpuWeights::synthetic(&gpu, &ModelConfig::named("llama-3.1-8b").unwrap(), seed)?
//! let cfg = size_backend(&gpu, &weights, &GpuSizing { max_seq_len, ..GpuSizing::new(max_seq_len) })?;
//! let backend = GpuBackend::new(gpu, weights, cfg)?;             // KvCacheConfig { num_blocks: cfg.num_blocks, tokens_per_block: cfg.tokens_per_block, host_cache_blocks: cfg.host_blocks, .. }
//! let executor = Executor::new(exec_cfg, Box::new(backend), detok)?;  // SchedulerConfig with cfg.max_batch_size / cfg.max_num_tokens
//! ```
//!
//! - [`weights`]: [`GpuWeights::upload`] (any CPU weight format → bf16, Q/K/V and gate/up
//!   fused, one layer at a time; GPT-2 refused with "not on the GPU yet").
//! - [`synthetic`]: [`GpuWeights::synthetic`], random weights generated on the GPU.
//! - [`pack`]: host-side decoding, rounding and fusing.
//! - [`kv`]: per-layer paged pools, host tier (swap out/in), block copies.
//! - [`activations`]: step buffers allocated once for `max_num_tokens` / `max_batch_size`.
//! - [`batch`]: a step's layout (generation items first, then context items).
//! - [`forward`]: the forward pass.
//! - [`backend`]: [`GpuBackend`] and [`GpuBackendConfig`].
//! - [`sizing`]: [`size_backend`], KV blocks from the free device memory.
//!
//! Numerics: weights, activations, the residual stream, K/V and logits are stored in bf16
//! (math in f32 inside the kernels); the CPU backend keeps f32 throughout, so logits agree to
//! bf16 tolerance, not bit for bit.

pub mod activations;
pub mod backend;
pub mod batch;
mod error;
pub mod forward;
pub mod kv;
pub mod pack;
pub mod sizing;
pub mod synthetic;
pub mod weights;

pub use backend::{GpuBackend, GpuBackendConfig};
pub use error::GpuError;
pub use sizing::{gpu_kv_bytes_per_token, kv_blocks_for, size_backend, GpuSizing};
pub use weights::{GpuLayer, GpuWeights};
