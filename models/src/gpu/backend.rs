//! [`GpuBackend`]: the executor's [`Backend`] on one GPU. It owns the weights, the KV pools
//! (allocated once), the activation buffers (allocated once for the largest step) and the
//! host tier; each step is validated on the host, laid out ([`super::batch`]) and run
//! ([`super::forward`]). Every failure is a [`BackendError`] naming the value; nothing panics.

use super::activations::Activations;
use super::batch::plan_step;
use super::forward::forward;
use super::kv::GpuKv;
use super::weights::GpuWeights;
use super::GpuError;
use crate::config::ModelConfig;
use host_runtime::executor::{Backend, BackendError, BackendItem, LogitsRow};
use host_runtime::sampling::LogitsWant;
use host_runtime::kv::BlockId;
use host_runtime::Gpu;
use std::sync::Arc;

/// Sizes of the GPU backend's allocations (see [`super::size_backend`] to derive them from the
/// free device memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuBackendConfig {
    /// KV blocks, the scheduler's null block included (`KvCacheConfig::num_blocks`).
    pub num_blocks: usize,
    /// 16, 32, 64 or 128 (the attention kernels' block sizes).
    pub tokens_per_block: usize,
    /// Host-tier slots (`KvCacheConfig::host_cache_blocks`).
    pub host_blocks: usize,
    /// Most requests in one step (`SchedulerConfig::max_batch_size`).
    pub max_batch_size: usize,
    /// Most tokens in one step (`SchedulerConfig::max_num_tokens`).
    pub max_num_tokens: usize,
}

/// The GPU backend.
pub struct GpuBackend {
    gpu: Arc<Gpu>,
    weights: GpuWeights,
    kv: GpuKv,
    act: Activations,
    cfg: GpuBackendConfig,
}

impl GpuBackend {
    /// Allocates the KV pools and the activation buffers for `weights` on `gpu`.
    pub fn new(gpu: Arc<Gpu>, weights: GpuWeights, cfg: GpuBackendConfig) -> Result<Self, GpuError> {
        let c = &weights.config;
        let kv = GpuKv::new(&gpu, c, cfg.num_blocks, cfg.tokens_per_block, cfg.host_blocks)?;
        let act = Activations::new(&gpu, c, cfg.max_num_tokens, cfg.max_batch_size)?;
        gpu.synchronize()?;
        Ok(GpuBackend { gpu, weights, kv, act, cfg })
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.weights.config
    }

    pub fn config(&self) -> &GpuBackendConfig {
        &self.cfg
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Checks a step against the allocations: batch and token limits, every item's tokens,
    /// table length and block ids.
    fn check_items(&self, items: &[BackendItem]) -> Result<(), GpuError> {
        if items.len() > self.cfg.max_batch_size {
            return Err(GpuError::Invalid(format!("{} items in a step; max_batch_size is {}", items.len(), self.cfg.max_batch_size)));
        }
        let total: usize = items.iter().map(|it| it.tokens.len()).sum();
        if total > self.cfg.max_num_tokens {
            return Err(GpuError::Invalid(format!("{total} tokens in a step; max_num_tokens is {}", self.cfg.max_num_tokens)));
        }
        items.iter().enumerate().try_for_each(|(i, it)| self.check_item(i, it))
    }

    fn check_item(&self, i: usize, it: &BackendItem) -> Result<(), GpuError> {
        if it.tokens.is_empty() {
            return Err(GpuError::Invalid(format!("item {i} has no tokens")));
        }
        let end = it.start_pos + it.tokens.len();
        let need = end.div_ceil(self.cfg.tokens_per_block);
        if it.block_table.len() < need {
            return Err(GpuError::Invalid(format!("item {i}: block table of {} blocks for {end} positions", it.block_table.len())));
        }
        if let Some(&b) = it.block_table[..need].iter().find(|&&b| b as usize >= self.cfg.num_blocks) {
            return Err(GpuError::Invalid(format!("item {i}: block {b} is outside the {} allocated", self.cfg.num_blocks)));
        }
        let vocab = self.weights.config.vocab_size;
        if let Some(&t) = it.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(GpuError::Invalid(format!("item {i}: token id {t} is outside the vocabulary ({vocab})")));
        }
        if end > u32::MAX as usize {
            return Err(GpuError::Invalid(format!("item {i}: position {end} exceeds u32")));
        }
        Ok(())
    }

    /// Runs one step; the logits of the items with `needs_logits`, in item order, whole.
    pub fn run_step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, GpuError> {
        let rows = self.run_step_reduced(items, &[])?;
        Ok(rows.into_iter().map(|r| if let LogitsRow::Full(v) = r { v } else { Vec::new() }).collect())
    }

    /// Runs one step; the logits rows of the items with `needs_logits`, in item order, each
    /// reduced on the device when its want says so (see `Backend::step_reduced`).
    pub fn run_step_reduced(&mut self, items: &[BackendItem], wants: &[LogitsWant]) -> Result<Vec<LogitsRow>, GpuError> {
        self.check_items(items)?;
        let plan = plan_step(items, self.cfg.tokens_per_block);
        forward(&self.gpu, &self.weights, &mut self.kv, &mut self.act, &plan, wants)
    }
}

impl Backend for GpuBackend {
    fn vocab_size(&self) -> usize {
        self.weights.config.vocab_size
    }

    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError> {
        Ok(self.run_step(items)?)
    }

    fn step_reduced(&mut self, items: &[BackendItem], wants: &[LogitsWant]) -> Result<Vec<LogitsRow>, BackendError> {
        Ok(self.run_step_reduced(items, wants)?)
    }

    fn top_candidates(&self) -> usize {
        host_runtime::kernels::TOP_K_MAX
    }

    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError> {
        Ok(self.kv.swap_out(&self.gpu, block, slot)?)
    }

    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError> {
        Ok(self.kv.swap_in(&self.gpu, slot, block)?)
    }

    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError> {
        Ok(self.kv.copy_block(&self.gpu, src, dst)?)
    }
}
