//! Activation buffers, allocated once for the largest step (`max_num_tokens` rows,
//! `max_batch_size` logits rows) and reused by every step: the residual stream (two buffers
//! the projections' residual epilogues alternate between), the normed input, the fused
//! Q/K/V rows, the attention output, the MLP activation, the gathered logits rows, the
//! logits, their per-row top candidates, and the multi-block decode workspace.

use super::GpuError;
use crate::config::ModelConfig;
use half::bf16;
use host_runtime::kernels::{AttentionWorkspace, TopKBuffers};
use host_runtime::{DeviceBuffer, Gpu};

/// Splits per sequence the decode workspace holds at the largest batch (more at smaller
/// batches: the workspace is sized in elements, see [`AttentionWorkspace::max_splits`]).
const SPLITS_AT_MAX_BATCH: usize = 4;

/// Step-sized device buffers.
pub struct Activations {
    pub max_tokens: usize,
    pub max_logits: usize,
    /// Residual stream `[tokens, hidden]`: layers read one and write the other.
    pub x: [DeviceBuffer<bf16>; 2],
    /// Normed input of a block `[tokens, hidden]`.
    pub h: DeviceBuffer<bf16>,
    /// `[tokens, q + 2·kv]`.
    pub qkv: DeviceBuffer<bf16>,
    /// Attention output `[tokens, q]`.
    pub attn: DeviceBuffer<bf16>,
    /// `silu(gate) * up` `[tokens, inter]`.
    pub mlp: DeviceBuffer<bf16>,
    /// Rows that get logits, gathered and then normed `[logits rows, hidden]`.
    pub gathered: DeviceBuffer<bf16>,
    pub normed: DeviceBuffer<bf16>,
    /// `[logits rows, vocab]`.
    pub logits: DeviceBuffer<bf16>,
    /// Per logits row: the best candidates and the log-sum-exp inputs (`logits_top_k`).
    pub top: TopKBuffers,
    pub workspace: AttentionWorkspace,
}

/// Per-token widths of a model.
pub struct Widths {
    pub hidden: usize,
    pub q: usize,
    pub qkv: usize,
    pub inter: usize,
    pub vocab: usize,
}

impl Widths {
    pub fn of(c: &ModelConfig) -> Self {
        let q = c.heads * c.head_dim;
        Widths { hidden: c.hidden, q, qkv: q + 2 * c.kv_heads * c.head_dim, inter: c.intermediate, vocab: c.vocab_size }
    }
}

/// Elements of the decode workspace.
fn workspace_elements(c: &ModelConfig, max_logits: usize) -> usize {
    AttentionWorkspace::elements(max_logits, c.heads, c.head_dim, SPLITS_AT_MAX_BATCH)
}

/// Device bytes [`Activations::new`] allocates for these limits.
pub fn activation_bytes(c: &ModelConfig, max_tokens: usize, max_batch: usize) -> u64 {
    let w = Widths::of(c);
    let per_token = 3 * w.hidden + w.qkv + w.q + w.inter;
    let per_logit_row = 2 * w.hidden + w.vocab;
    let top = max_batch * (2 * host_runtime::kernels::TOP_K_MAX + 3) * 4;
    ((max_tokens * per_token + max_batch * per_logit_row) * 2 + workspace_elements(c, max_batch).max(4) * 4 + top) as u64
}

impl Activations {
    pub fn new(gpu: &Gpu, c: &ModelConfig, max_tokens: usize, max_batch: usize) -> Result<Self, GpuError> {
        if max_tokens == 0 || max_batch == 0 {
            return Err(GpuError::Invalid(format!("max_num_tokens {max_tokens} and max_batch_size {max_batch} must be at least 1")));
        }
        let w = Widths::of(c);
        let rows = |n: usize| gpu.alloc::<bf16>(max_tokens * n);
        Ok(Activations {
            max_tokens,
            max_logits: max_batch,
            x: [rows(w.hidden)?, rows(w.hidden)?],
            h: rows(w.hidden)?,
            qkv: rows(w.qkv)?,
            attn: rows(w.q)?,
            mlp: rows(w.inter)?,
            gathered: gpu.alloc(max_batch * w.hidden)?,
            normed: gpu.alloc(max_batch * w.hidden)?,
            logits: gpu.alloc(max_batch * w.vocab)?,
            top: TopKBuffers::new(gpu, max_batch)?,
            workspace: AttentionWorkspace::new(gpu, max_batch, c.heads, c.head_dim, SPLITS_AT_MAX_BATCH)?,
        })
    }
}
