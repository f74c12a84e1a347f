//! The GPU KV cache: one pair of paged pools (K, V) per layer in the layout of
//! `kernel_abi::paged` (`[block][kv_head][slot][head_dim]`, bf16), block ids as the
//! scheduler's block pool numbers them, plus the host tier: slots in host memory that hold a
//! block of every layer's K and V while it is swapped out. A block is contiguous in each
//! pool, so a swap or a copy is one memcpy per pool.

use super::GpuError;
use crate::config::ModelConfig;
use half::bf16;
use host_runtime::kernels::{KvPools, PagedKvShape};
use host_runtime::kv::BlockId;
use host_runtime::Gpu;

/// Per-layer pools and the host tier.
pub struct GpuKv {
    layers: Vec<KvPools<bf16>>,
    shape: PagedKvShape,
    /// Slot `i`: `layers × 2` block images (K then V per layer), or empty before a swap-out.
    host: Vec<Vec<bf16>>,
}

/// Block sizes the attention kernels are built for.
pub const TOKENS_PER_BLOCK: [usize; 4] = [16, 32, 64, 128];

impl GpuKv {
    /// Zero-filled pools of `num_blocks` blocks (block 0, the pool's null block, included)
    /// and `host_blocks` host slots (host memory is taken on first use).
    pub fn new(gpu: &Gpu, c: &ModelConfig, num_blocks: usize, tokens_per_block: usize, host_blocks: usize) -> Result<Self, GpuError> {
        if !TOKENS_PER_BLOCK.contains(&tokens_per_block) {
            return Err(GpuError::Invalid(format!("tokens_per_block {tokens_per_block}: the GPU kernels take {TOKENS_PER_BLOCK:?}")));
        }
        if num_blocks < 2 {
            return Err(GpuError::Invalid(format!("{num_blocks} KV blocks: at least 2 (the null block and one more)")));
        }
        let shape = PagedKvShape { num_blocks, num_kv_heads: c.kv_heads, tokens_per_block, head_dim: c.head_dim };
        let layers = (0..c.layers)
            .map(|_| -> Result<_, GpuError> {
                let n = shape.pool_elements();
                Ok(KvPools::new(shape, gpu.zeros(n)?, gpu.zeros(n)?)?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GpuKv { layers, shape, host: vec![Vec::new(); host_blocks] })
    }

    pub fn shape(&self) -> &PagedKvShape {
        &self.shape
    }

    /// Layer `l`'s pools.
    pub fn layer(&self, l: usize) -> &KvPools<bf16> {
        &self.layers[l]
    }

    pub fn layer_mut(&mut self, l: usize) -> &mut KvPools<bf16> {
        &mut self.layers[l]
    }

    /// Elements of one block in one pool.
    fn block_elems(&self) -> usize {
        self.shape.num_kv_heads * self.shape.tokens_per_block * self.shape.head_dim
    }

    fn check_block(&self, what: &str, b: BlockId) -> Result<usize, GpuError> {
        if b as usize >= self.shape.num_blocks {
            return Err(GpuError::Invalid(format!("{what}: block {b} is outside the {} allocated", self.shape.num_blocks)));
        }
        Ok(b as usize * self.block_elems())
    }

    fn check_slot(&self, slot: usize) -> Result<(), GpuError> {
        if slot >= self.host.len() {
            return Err(GpuError::Invalid(format!("host slot {slot} out of range ({} slots)", self.host.len())));
        }
        Ok(())
    }

    /// Copies block `block` of every layer's K and V into host slot `slot`.
    pub fn swap_out(&mut self, gpu: &Gpu, block: BlockId, slot: usize) -> Result<(), GpuError> {
        let at = self.check_block("swap out", block)?;
        self.check_slot(slot)?;
        let n = self.block_elems();
        let mut image = std::mem::take(&mut self.host[slot]);
        image.resize(n * 2 * self.layers.len(), bf16::ZERO);
        for (pools, dst) in self.layers.iter().zip(image.chunks_exact_mut(2 * n)) {
            let (k, v) = dst.split_at_mut(n);
            gpu.download_range(pools.k(), at, k)?;
            gpu.download_range(pools.v(), at, v)?;
        }
        self.host[slot] = image;
        Ok(())
    }

    /// Copies host slot `slot` back into block `block` of every layer.
    pub fn swap_in(&mut self, gpu: &Gpu, slot: usize, block: BlockId) -> Result<(), GpuError> {
        let at = self.check_block("swap in", block)?;
        self.check_slot(slot)?;
        let n = self.block_elems();
        let image = &self.host[slot];
        if image.len() != n * 2 * self.layers.len() {
            return Err(GpuError::Invalid(format!("host slot {slot} holds no block")));
        }
        for (pools, src) in self.layers.iter_mut().zip(image.chunks_exact(2 * n)) {
            let (k, v) = pools.pools_mut();
            gpu.upload_range(k, at, &src[..n])?;
            gpu.upload_range(v, at, &src[n..])?;
        }
        Ok(())
    }

    /// Copies block `src` into block `dst`, every layer, K and V (device to device).
    pub fn copy_block(&mut self, gpu: &Gpu, src: BlockId, dst: BlockId) -> Result<(), GpuError> {
        let from = self.check_block("block copy", src)?;
        let to = self.check_block("block copy", dst)?;
        let n = self.block_elems();
        for pools in &mut self.layers {
            let (k, v) = pools.pools_mut();
            gpu.copy_within(k, from, to, n)?;
            gpu.copy_within(v, from, to, n)?;
        }
        Ok(())
    }
}
