//! Launch wrapper for paged context FMHA: causal flash attention of the new (context /
//! prefill) tokens of a batch of sequences over their paged K/V, so that reused prefix blocks
//! and earlier chunks of a chunked context are attended ([`context_attention`]).
//!
//! The new tokens' own K/V must already be in the pools ([`super::kv_append`]). The layout,
//! the compiled specialisations and what the kernel does with invalid block ids are defined
//! in [`kernel_abi::paged`].

use super::attention::{BlockTables, DecodeShape, KvPools};
use super::{check_len, launch_grid, to_u32};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::paged::{self, CONTEXT_Q_TILE, CONTEXT_THREADS};
use kernel_abi::ContextAttentionParams;

const SEQS: &str = "context_seqs";

/// Where each sequence's new tokens are: per sequence (row of the block tables) the offset of
/// its first new token in `q` / `out`, its count of new tokens and its start position (the
/// tokens already in the cache before them), as `u32` arrays on the device.
pub struct ContextSeqs {
    q_offset: DeviceBuffer<u32>,
    new_tokens: DeviceBuffer<u32>,
    start_pos: DeviceBuffer<u32>,
    /// Sequences (rows of the block tables these were checked against).
    pub batch: usize,
    /// Rows of `q` / `out` the sequences cover: the largest `q_offset + new_tokens`.
    pub total_tokens: usize,
    /// The most new tokens of one sequence (sets the grid).
    pub max_new_tokens: usize,
    /// The geometry of the tables checked on upload (`max_blocks_per_seq`, `tokens_per_block`).
    table_geometry: (usize, usize),
}

impl ContextSeqs {
    /// Validates and uploads. One entry per row of `tables`; the token ranges
    /// `q_offsets[b] .. q_offsets[b] + new_tokens[b]` must not overlap; `start_pos[b] +
    /// new_tokens[b]` must fit the table row and, for tables checked on the host
    /// ([`BlockTables::upload`]), equal the row's sequence length.
    pub fn upload(gpu: &Gpu, tables: &BlockTables, q_offsets: &[u32], new_tokens: &[u32], start_pos: &[u32]) -> Result<Self, DeviceError> {
        let batch = tables.batch;
        for (what, v) in [("q_offsets", q_offsets.len()), ("new_tokens", new_tokens.len()), ("start_pos", start_pos.len())] {
            if v != batch {
                return Err(DeviceError::invalid(SEQS, format!("{what} has {v} entries for the {batch} sequences of the block tables")));
            }
        }
        let row_tokens = tables.max_blocks_per_seq as u64 * tables.tokens_per_block as u64;
        for b in 0..batch {
            let len = start_pos[b] as u64 + new_tokens[b] as u64;
            if len > row_tokens {
                return Err(DeviceError::invalid(SEQS, format!("sequence {b}: start_pos {} + new_tokens {} = {len} exceeds a table row of {row_tokens} tokens", start_pos[b], new_tokens[b])));
            }
            if let Some(lens) = &tables.host_lens {
                if len != lens[b] as u64 {
                    return Err(DeviceError::invalid(SEQS, format!("sequence {b}: start_pos {} + new_tokens {} = {len} differs from its block-table length {}", start_pos[b], new_tokens[b], lens[b])));
                }
            }
        }
        let total_tokens = check_ranges(q_offsets, new_tokens)?;
        to_u32(SEQS, "total_tokens", total_tokens)?;
        let pad = |v: &[u32]| if v.is_empty() { vec![0] } else { v.to_vec() };
        Ok(ContextSeqs {
            q_offset: gpu.upload(&pad(q_offsets))?,
            new_tokens: gpu.upload(&pad(new_tokens))?,
            start_pos: gpu.upload(&pad(start_pos))?,
            batch,
            total_tokens,
            max_new_tokens: new_tokens.iter().copied().max().unwrap_or(0) as usize,
            table_geometry: (tables.max_blocks_per_seq, tables.tokens_per_block),
        })
    }
}

/// Checks that the token ranges do not overlap; returns the rows they cover (the largest end).
fn check_ranges(q_offsets: &[u32], new_tokens: &[u32]) -> Result<usize, DeviceError> {
    let mut ranges: Vec<(u64, u64, usize)> = q_offsets.iter().zip(new_tokens).enumerate().filter(|&(_, (_, &n))| n > 0).map(|(b, (&o, &n))| (o as u64, o as u64 + n as u64, b)).collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(DeviceError::invalid(SEQS, format!("q_offsets: the new tokens of sequences {} and {} overlap (rows {}..{} and {}..{})", w[0].2, w[1].2, w[0].0, w[0].1, w[1].0, w[1].1)));
        }
    }
    Ok(ranges.iter().map(|r| r.1).max().unwrap_or(0) as usize)
}

/// Causal attention of the new tokens: for sequence `b`, new token `i` (row
/// `q_offset[b] + i` of `q`, `[total_tokens][num_heads][head_dim]` with rows
/// `s.q_seq_stride` apart) at position `start_pos[b] + i` and query head `h`,
/// `out[row][h] = softmax(scale · q[row][h] · Kᵀ) · V` over positions `0 ..= start_pos[b] + i`
/// of the sequence's pages, K/V of KV head `h / (num_heads / num_kv_heads)`. `out` rows are
/// `s.out_seq_stride` apart; rows of no sequence are not written.
///
/// In [`DecodeShape`] the "sequence" strides are the strides between token rows here.
/// Specialisations ([`kernel_abi::paged`]): bf16/f16, head_dim 64/128, 16/32/64/128 tokens per
/// block, `num_heads` a multiple of `num_kv_heads`; anything else is an error naming the
/// parameter.
pub fn context_attention<T: DType>(gpu: &Gpu, pools: &KvPools<T>, tables: &BlockTables, seqs: &ContextSeqs, q: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, s: &DecodeShape) -> Result<(), DeviceError> {
    const K: &str = "context_attention";
    let kv = pools.shape;
    let (d, heads, kvh) = (kv.head_dim, s.num_heads, kv.num_kv_heads);
    paged::check_context_spec(T::STORAGE, to_u32(K, "head_dim", d)?, to_u32(K, "tokens_per_block", kv.tokens_per_block)?, to_u32(K, "num_heads", heads)?, to_u32(K, "num_kv_heads", kvh)?)
        .map_err(|e| DeviceError::invalid(K, e.to_string()))?;
    let entry = paged::context_attention_entry(T::STORAGE, d as u32).expect("checked by check_context_spec");
    tables.matches(K, &kv)?;
    if seqs.batch != tables.batch || seqs.table_geometry != (tables.max_blocks_per_seq, tables.tokens_per_block) {
        return Err(DeviceError::invalid(K, format!("seqs were uploaded for {} sequences with rows of {:?} (blocks, tokens per block), the block tables have {} with ({}, {})", seqs.batch, seqs.table_geometry, tables.batch, tables.max_blocks_per_seq, tables.tokens_per_block)));
    }
    if !s.scale.is_finite() {
        return Err(DeviceError::invalid(K, format!("scale must be finite, got {}", s.scale)));
    }
    for (what, stride) in [("q", s.q_seq_stride), ("out", s.out_seq_stride)] {
        if stride < heads * d || stride % 8 != 0 {
            return Err(DeviceError::invalid(K, format!("{what} token stride {stride} must be a multiple of 8 and at least num_heads × head_dim = {}", heads * d)));
        }
    }
    let q_tiles = seqs.max_new_tokens.div_ceil(CONTEXT_Q_TILE as usize);
    let ctas = heads as u64 * seqs.batch as u64 * q_tiles as u64;
    if ctas > i32::MAX as u64 {
        return Err(DeviceError::invalid(K, format!("grid of {heads} heads × {} sequences × {q_tiles} query tiles exceeds the launch limit of 2^31 - 1 CTAs", seqs.batch)));
    }
    if seqs.total_tokens == 0 {
        return Ok(());
    }
    check_len(K, "q", q.len(), (seqs.total_tokens - 1) * s.q_seq_stride + heads * d)?;
    check_len(K, "out", out.len(), (seqs.total_tokens - 1) * s.out_seq_stride + heads * d)?;
    let p = ContextAttentionParams {
        q: q.dev_ptr(gpu),
        out: out.dev_ptr(gpu),
        k_pool: pools.k().dev_ptr(gpu),
        v_pool: pools.v().dev_ptr(gpu),
        block_tables: tables.table.dev_ptr(gpu),
        q_offsets: seqs.q_offset.dev_ptr(gpu),
        new_tokens: seqs.new_tokens.dev_ptr(gpu),
        start_pos: seqs.start_pos.dev_ptr(gpu),
        batch: to_u32(K, "batch", seqs.batch)?,
        num_heads: heads as u32,
        num_kv_heads: kvh as u32,
        tokens_per_block: kv.tokens_per_block as u32,
        max_blocks_per_seq: to_u32(K, "max_blocks_per_seq", tables.max_blocks_per_seq)?,
        num_blocks: to_u32(K, "num_blocks", kv.num_blocks)?,
        total_tokens: to_u32(K, "total_tokens", seqs.total_tokens)?,
        num_q_tiles: q_tiles as u32,
        q_token_stride: to_u32(K, "q token stride", s.q_seq_stride)?,
        out_token_stride: to_u32(K, "out token stride", s.out_seq_stride)?,
        scale_log2: s.scale * std::f32::consts::LOG2_E,
        cta_group: cta_group(gpu.info().multiprocessors as usize, q_tiles),
    };
    launch_grid(gpu, entry, (ctas as u32, 1, 1), CONTEXT_THREADS, p)
}

/// (head, sequence) pairs per group of the CTA order (`kernel_abi::paged::context_cta`):
/// about one wave of CTAs (2 per multiprocessor) per group, so that the K/V being read at any
/// time belong to one or two groups of pairs and stay in L2 (each pair's K/V is read by all
/// its query tiles), while the longest tiles of a group still start first.
fn cta_group(multiprocessors: usize, q_tiles: usize) -> u32 {
    (2 * multiprocessors.max(1) / q_tiles.max(1)).clamp(1, u32::MAX as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_token_ranges_are_refused() {
        assert_eq!(check_ranges(&[0, 5, 9], &[5, 4, 1]).unwrap(), 10);
        assert_eq!(check_ranges(&[7, 0], &[0, 3]).unwrap(), 3, "empty ranges never overlap");
        assert_eq!(check_ranges(&[], &[]).unwrap(), 0);
        let e = check_ranges(&[0, 4], &[5, 2]).unwrap_err().to_string();
        assert!(e.contains("q_offsets") && e.contains("overlap"), "{e}");
    }

    #[test]
    fn cta_groups_hold_about_one_wave() {
        assert_eq!(cta_group(132, 32), 8);
        assert_eq!(cta_group(132, 1), 264);
        assert_eq!(cta_group(132, 1000), 1);
        assert_eq!(cta_group(0, 0), 2);
    }
}
