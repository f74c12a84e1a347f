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

/// `fill_uniform_<t>`: `out[i] = center + half_width × u(seed, i)` for `i < n`, `u` uniform
/// in `[-1, 1)` from `kernel_math::random::uniform_pm1` (counter-based: the values do not
/// depend on the launch geometry), rounded once to the storage type. Synthetic weights.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FillUniformParams {
    pub out: DevPtr,
    pub n: u64,
    pub seed: u64,
    pub center: f32,
    pub half_width: f32,
}

/// `context_attention_d<head_dim>_<t>`: causal flash attention of the new (context / prefill)
/// tokens of several sequences over their paged K/V (layout and specialisations:
/// [`crate::paged`]); the new tokens' own K/V are already in the pools (`kv_append`).
///
/// Sequence `b` (`b < batch`) has `new_tokens[b]` new tokens at rows
/// `q_offsets[b] .. q_offsets[b] + new_tokens[b]` of `q` and `out` (all three `u32` arrays of
/// `batch`); new token `i` sits at position `start_pos[b] + i` and attends positions
/// `0 ..= start_pos[b] + i`, read through row `b` of `block_tables`. Query head `h` reads KV
/// head `h / (num_heads / num_kv_heads)`.
///
/// - `q`: token `t`, head `h` at `q[t * q_token_stride + h * head_dim ..][..head_dim]`;
/// - `out`: the same layout with `out_token_stride`; rows of no sequence are not written.
///
/// Grid `(num_heads · batch · num_q_tiles, 1, 1)`, [`crate::paged::CONTEXT_THREADS`]
/// threads; CTA `i` computes query tile `num_q_tiles - 1 - z` of
/// [`crate::paged::CONTEXT_Q_TILE`] tokens of head `h` of sequence `b`, where `(h, b, z) =`
/// [`crate::paged::context_cta`]`(i, num_heads, batch, num_q_tiles, cta_group)` (groups of
/// `cta_group` (head, sequence) pairs, the longest tiles of each group first). Rows past
/// `total_tokens` are neither read nor written; positions past `max_blocks_per_seq *
/// tokens_per_block` and tokens of block ids `>= num_blocks` are masked (see
/// [`crate::paged`], "Invalid input").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextAttentionParams {
    pub q: DevPtr,
    pub out: DevPtr,
    pub k_pool: DevPtr,
    pub v_pool: DevPtr,
    pub block_tables: DevPtr,
    pub q_offsets: DevPtr,
    pub new_tokens: DevPtr,
    pub start_pos: DevPtr,
    pub batch: u32,
    pub num_heads: u32,
    pub num_kv_heads: u32,
    pub tokens_per_block: u32,
    pub max_blocks_per_seq: u32,
    pub num_blocks: u32,
    pub total_tokens: u32,
    pub num_q_tiles: u32,
    pub q_token_stride: u32,
    pub out_token_stride: u32,
    pub scale_log2: f32,
    /// (head, sequence) pairs per group of the CTA order ([`crate::paged::context_cta`]).
    pub cta_group: u32,
}

/// `gemm_<path>_<t>` and `gate_up_silu_<path>_<t>` (t = bf16, f16; paths, shape rules and
/// what each computes: [`crate::gemm`]).
///
/// - `x`: `[m, k]`, `w`: `[n, k]` (`gemm`) or `[2 n, k]` (`gate_up_silu`: gate rows, then up
///   rows), `out`: `[m, n]`, all row-major and contiguous;
/// - `bias` (`[n]`) and `residual` (`[m, n]`) are optional (null = absent; `gemm` only):
///   `out = x · wᵀ + bias + residual`, summed in f32 and rounded once. `out` aliases none of
///   the inputs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GemmParams {
    pub x: DevPtr,
    pub w: DevPtr,
    pub bias: DevPtr,
    pub residual: DevPtr,
    pub out: DevPtr,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub _pad: u32,
}

/// Candidates per row kept by `logits_top_k_<t>`.
pub const TOP_K_MAX: usize = 32;
/// Most column splits of one row in `logits_top_k_<t>`.
pub const TOP_K_MAX_SPLITS: usize = 64;

/// The top-k of logits rows, in two launches, so that greedy and top-k sampling (log-probs
/// included) read a few hundred bytes per row instead of the whole vocabulary:
///
/// 1. `logits_top_k_<t>` (t = f32, f16, bf16), grid `(splits, rows)`: block `(s, r)` takes
///    the columns `[s·c, min((s+1)·c, vocab))` of row `r` (`c = ceil(vocab / splits)`, row
///    `r` of `logits` at `r * row_stride`) and writes at `q = r * splits + s` its
///    [`TOP_K_MAX`] best values (`part_values[q * TOP_K_MAX ..]`, `f32`) and their ids
///    (`part_ids`, `u32`), best first, ties → lower id, NaN and `-inf` skipped, missing
///    entries id `u32::MAX` / value `-inf`; and `part_stats[2q..2q+2]` = the running
///    (max, Σ 2^(y - max)) of `y = x · inv_temperature[r] · log2 e`.
/// 2. `logits_top_k_merge`, grid `rows`: merges row `r`'s `splits` parts into
///    `out_ids`/`out_values[r * TOP_K_MAX ..]` and `out_stats[2r]` = the row max (`-inf`
///    when there is none), `out_stats[2r + 1]` = `Σ exp((x - max) · inv_temperature[r])`
///    over the values that are neither NaN nor `-inf` (0 with no max; the host takes the
///    logarithm in f64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TopKParams {
    pub logits: DevPtr,
    /// `f32` per row.
    pub inv_temperature: DevPtr,
    pub part_ids: DevPtr,
    pub part_values: DevPtr,
    pub part_stats: DevPtr,
    pub out_ids: DevPtr,
    pub out_values: DevPtr,
    pub out_stats: DevPtr,
    pub rows: u32,
    pub vocab: u32,
    pub row_stride: u32,
    /// 1 ..= [`TOP_K_MAX_SPLITS`].
    pub splits: u32,
}
