//! Parameter structs, one per kernel family. Each is `#[repr(C)]`, `Copy`, and holds only
//! [`DevPtr`]s, integers and `f32`s, laid out without implicit padding (explicit `_pad`
//! fields), so its bytes are the same on the host and in PTX.

use crate::DevPtr;

/// `cast_<src>_<dst>`: `dst[i] = convert(src[i])` for `i < n` (round to nearest even).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CastParams {
    pub src: DevPtr,
    pub dst: DevPtr,
    pub n: u64,
}

/// `copy_bytes`: `dst[i] = src[i]` for `n` bytes; the kernel-side copy-bandwidth probe.
/// Both addresses and `n` must be multiples of 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyParams {
    pub src: DevPtr,
    pub dst: DevPtr,
    pub n_bytes: u64,
}

/// `embedding_<t>`: `out[t, :] = table[ids[t], :]`, `ids` are `u32`. An id `>= vocab`
/// writes zeros (the host rejects such ids before launching).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbeddingParams {
    pub table: DevPtr,
    pub ids: DevPtr,
    pub out: DevPtr,
    pub num_tokens: u32,
    pub hidden: u32,
    pub vocab: u32,
    pub _pad: u32,
}

/// `rms_norm_<t>` and `layer_norm_<t>`, one row of `cols` per thread block, rows contiguous.
///
/// With `residual` non-null the kernels first form `h = input + residual` and, when
/// `residual_out` is non-null, store `h` there (it may alias `residual` or `input`: each
/// element is read before it is written by the same thread). Then
/// `out = norm(h) * weight (+ bias)`; `bias` is read by `layer_norm` only and may be null.
/// RMSNorm: `h / sqrt(mean(h²) + eps)`; LayerNorm: `(h - mean) / sqrt(var + eps)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NormParams {
    pub input: DevPtr,
    pub residual: DevPtr,
    pub residual_out: DevPtr,
    pub weight: DevPtr,
    pub bias: DevPtr,
    pub out: DevPtr,
    pub rows: u32,
    pub cols: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// Rotary embedding styles.
pub mod rope_style {
    /// GPT-NeoX / Llama (Hugging Face): element `i` pairs with `i + rot_dim/2`.
    pub const NEOX: u32 = 0;
    /// GPT-J / llama.cpp interleaved: element `2i` pairs with `2i + 1`.
    pub const GPTJ: u32 = 1;
}

/// `rope_<t>`: rotate, in place, the first `rot_dim` elements of every head of `q`
/// (`num_q_heads` heads) and `k` (`num_k_heads` heads, `k` may be null) of each token.
///
/// Layout: token `t`, head `h`, element `e` lives at `t * token_stride + h * head_dim + e`.
/// Pair `j` (`0 <= j < rot_dim/2`) is rotated by the angle `positions[t] * inv_freq[j]`
/// (`positions` is `u32`, `inv_freq` is `f32` of length `rot_dim/2`, computed on the host
/// from θ and any RoPE scaling). `style` is one of [`rope_style`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RopeParams {
    pub q: DevPtr,
    pub k: DevPtr,
    pub positions: DevPtr,
    pub inv_freq: DevPtr,
    pub num_tokens: u32,
    pub num_q_heads: u32,
    pub num_k_heads: u32,
    pub head_dim: u32,
    pub rot_dim: u32,
    pub q_token_stride: u32,
    pub k_token_stride: u32,
    pub style: u32,
}

/// `silu_mul_<t>`: `out[r, c] = silu(gate[r, c]) * up[r, c]` for `rows × cols`, each operand
/// with its own row stride in elements (gate and up may be the two halves of one buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GatedActParams {
    pub gate: DevPtr,
    pub up: DevPtr,
    pub out: DevPtr,
    pub rows: u32,
    pub cols: u32,
    pub gate_row_stride: u32,
    pub up_row_stride: u32,
    pub out_row_stride: u32,
    pub _pad: u32,
}

/// `gelu_tanh_<t>`, `gelu_erf_<t>`: `out[i] = gelu(input[i])` for `i < n`; may be in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UnaryParams {
    pub input: DevPtr,
    pub out: DevPtr,
    pub n: u64,
}

/// `softmax_<t>`: per row, `out = softmax(scale * input)` over `cols`, f32 math, one thread
/// block per row; may be in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SoftmaxParams {
    pub input: DevPtr,
    pub out: DevPtr,
    pub rows: u32,
    pub cols: u32,
    pub in_row_stride: u32,
    pub out_row_stride: u32,
    pub scale: f32,
    pub _pad: u32,
}

/// `kv_append_<t>` (t = f16, bf16): writes new K and V rows into their pages of one layer's
/// paged pools (layout: [`crate::paged`]).
///
/// Token `t` (`t < num_tokens`) belongs to sequence `seq_idx[t]` at position `positions[t]`
/// (both `u32`); its rows `k[t * k_token_stride + h * head_dim ..][..head_dim]` (and the same
/// for `v`) for each KV head `h` go to slot `positions[t] % tokens_per_block` of block
/// `block_tables[seq_idx[t] * max_blocks_per_seq + positions[t] / tokens_per_block]`.
/// A token whose sequence is `>= batch`, whose page index is `>= max_blocks_per_seq` or whose
/// block id is `>= num_blocks` is not written (see [`crate::paged`], "Invalid input").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvAppendParams {
    pub k: DevPtr,
    pub v: DevPtr,
    pub seq_idx: DevPtr,
    pub positions: DevPtr,
    pub block_tables: DevPtr,
    pub k_pool: DevPtr,
    pub v_pool: DevPtr,
    pub num_tokens: u32,
    pub num_kv_heads: u32,
    pub head_dim: u32,
    pub tokens_per_block: u32,
    pub max_blocks_per_seq: u32,
    pub num_blocks: u32,
    pub batch: u32,
    pub k_token_stride: u32,
    pub v_token_stride: u32,
    pub _pad: u32,
}

/// `decode_attention_d<head_dim>_<t>`: one query token per sequence attends to its paged K/V
/// (layout and specialisations: [`crate::paged`]).
///
/// Grid `(batch, num_kv_heads, num_splits)`, [`crate::paged::DECODE_THREADS`] threads. The CTA
/// for `(b, kv_head, split)` computes all `num_heads / num_kv_heads` query heads of the KV
/// group over the split's token range ([`crate::paged::split_range`]) of sequence `b`, whose
/// length is `min(seq_lens[b], max_blocks_per_seq * tokens_per_block)`.
///
/// - `q`: query head `h` of sequence `b` at `q[b * q_seq_stride + h * head_dim ..]`;
/// - `out`: the same layout with `out_seq_stride`, written when `num_splits == 1`;
/// - `partial_acc`, `partial_stats` (f32, used when `num_splits > 1`): for
///   `i = (b * num_heads + h) * num_splits + split`, the unnormalised output
///   `partial_acc[i * head_dim ..][..head_dim]` and `partial_stats[2i] = max`,
///   `partial_stats[2i + 1] = sum`, the running maximum and sum of the split's softmax in
///   base 2 (scores scaled by `scale_log2 = scale × log2(e)`); an empty split writes
///   `(-inf, 0)` and no accumulator. `decode_attention_merge_<t>` combines them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeAttentionParams {
    pub q: DevPtr,
    pub out: DevPtr,
    pub k_pool: DevPtr,
    pub v_pool: DevPtr,
    pub block_tables: DevPtr,
    pub seq_lens: DevPtr,
    pub partial_acc: DevPtr,
    pub partial_stats: DevPtr,
    pub batch: u32,
    pub num_heads: u32,
    pub num_kv_heads: u32,
    pub tokens_per_block: u32,
    pub max_blocks_per_seq: u32,
    pub num_blocks: u32,
    pub num_splits: u32,
    pub q_seq_stride: u32,
    pub out_seq_stride: u32,
    pub scale_log2: f32,
}

/// `decode_attention_merge_<t>`: combines the `num_splits` partial results of
/// [`DecodeAttentionParams`] per `(b, h)` into `out[b * out_seq_stride + h * head_dim ..]`:
/// with `M = max_s max_s`, `w_s = 2^(max_s - M)` (0 for an empty split),
/// `out = Σ w_s acc_s / Σ w_s sum_s` (0 when every split is empty). One warp per `(b, h)`,
/// [`crate::paged::MERGE_THREADS`] threads per block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionMergeParams {
    pub partial_acc: DevPtr,
    pub partial_stats: DevPtr,
    pub out: DevPtr,
    pub batch: u32,
    pub num_heads: u32,
    pub head_dim: u32,
    pub num_splits: u32,
    pub out_seq_stride: u32,
    pub _pad: u32,
}
