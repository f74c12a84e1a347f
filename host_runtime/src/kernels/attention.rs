//! Launch wrappers for the paged KV cache: [`kv_append`] (new K/V rows into their pages) and
//! XQA-style [`decode_attention`] (one query token per sequence, all query heads of a KV
//! group per CTA, optional multi-block split with a merge kernel).
//!
//! The layout, the compiled specialisations and what the kernels do with invalid ids are
//! defined once in [`kernel_abi::paged`]. Block tables and append slots uploaded from the
//! host are validated here entry by entry ([`BlockTables::upload`], [`AppendSlots::upload`]);
//! tables that already live on the device ([`BlockTables::from_device`]) are only
//! size-checked, and the kernels keep every access inside the pools regardless.

use super::{check_len, launch, launch_grid, to_u32, Rows, ELEMENTWISE_THREADS};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::paged::{self, DECODE_THREADS, INVALID_BLOCK, MAX_SPLITS, MERGE_THREADS, TILE_TOKENS};
use kernel_abi::{AttentionMergeParams, DecodeAttentionParams, KvAppendParams};
use std::collections::HashSet;

/// Geometry of one layer's paged K and V pools (layout: [`kernel_abi::paged`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagedKvShape {
    pub num_blocks: usize,
    pub num_kv_heads: usize,
    pub tokens_per_block: usize,
    pub head_dim: usize,
}

impl PagedKvShape {
    /// Elements of one pool (K or V): `num_blocks × num_kv_heads × tokens_per_block × head_dim`.
    pub fn pool_elements(&self) -> usize {
        self.num_blocks * self.num_kv_heads * self.tokens_per_block * self.head_dim
    }

    fn check(&self, kernel: &'static str) -> Result<(), DeviceError> {
        for (what, v) in [("num_blocks", self.num_blocks), ("num_kv_heads", self.num_kv_heads), ("tokens_per_block", self.tokens_per_block), ("head_dim", self.head_dim)] {
            if v == 0 {
                return Err(DeviceError::invalid(kernel, format!("{what} must be at least 1")));
            }
            to_u32(kernel, what, v)?;
        }
        let n = [self.num_kv_heads, self.tokens_per_block, self.head_dim].iter().try_fold(self.num_blocks, |a, &b| a.checked_mul(b));
        if n.is_none_or(|n| n.checked_mul(2).is_none()) {
            return Err(DeviceError::invalid(kernel, format!("a pool of {self:?} does not fit the address space")));
        }
        Ok(())
    }
}

/// One layer's K and V pools on the device (elements `T`, bf16 or f16 for the kernels).
pub struct KvPools<T> {
    k: DeviceBuffer<T>,
    v: DeviceBuffer<T>,
    pub(super) shape: PagedKvShape,
}

impl<T: DType> KvPools<T> {
    /// Wraps two buffers of at least [`PagedKvShape::pool_elements`] elements each.
    pub fn new(shape: PagedKvShape, k: DeviceBuffer<T>, v: DeviceBuffer<T>) -> Result<Self, DeviceError> {
        const K: &str = "kv_pools";
        shape.check(K)?;
        check_len(K, "k pool", k.len(), shape.pool_elements())?;
        check_len(K, "v pool", v.len(), shape.pool_elements())?;
        Ok(KvPools { k, v, shape })
    }

    /// Uninitialised pools (every slot must be appended before attention reads it).
    pub fn alloc(gpu: &Gpu, shape: PagedKvShape) -> Result<Self, DeviceError> {
        shape.check("kv_pools")?;
        let n = shape.pool_elements();
        Self::new(shape, gpu.alloc(n)?, gpu.alloc(n)?)
    }

    /// Pools uploaded from host data (`pool_elements` each).
    pub fn upload(gpu: &Gpu, shape: PagedKvShape, k: &[T], v: &[T]) -> Result<Self, DeviceError> {
        shape.check("kv_pools")?;
        Self::new(shape, gpu.upload(k)?, gpu.upload(v)?)
    }

    pub fn shape(&self) -> &PagedKvShape {
        &self.shape
    }

    pub fn k(&self) -> &DeviceBuffer<T> {
        &self.k
    }

    pub fn v(&self) -> &DeviceBuffer<T> {
        &self.v
    }

    /// Both pools, writable (host-tier swaps and block copies through the device layer).
    pub fn pools_mut(&mut self) -> (&mut DeviceBuffer<T>, &mut DeviceBuffer<T>) {
        (&mut self.k, &mut self.v)
    }
}

/// The block tables and sequence lengths of a batch, on the device, for one pool geometry.
pub struct BlockTables {
    pub(super) table: DeviceBuffer<u32>,
    seq_lens: DeviceBuffer<u32>,
    pub(super) batch: usize,
    pub(super) max_blocks_per_seq: usize,
    pub(super) num_blocks: usize,
    pub(super) tokens_per_block: usize,
    max_seq_len: usize,
    /// The uploaded table (row-major, padded with [`INVALID_BLOCK`]) when its entries were
    /// checked on the host.
    pub(super) host: Option<Vec<u32>>,
    /// The uploaded sequence lengths, with `host`.
    pub(super) host_lens: Option<Vec<u32>>,
}

impl BlockTables {
    /// Validates and uploads: `rows[b]` lists the blocks of sequence `b` in position order
    /// (at most `max_blocks_per_seq`, each `< num_blocks`), `seq_lens[b]` its length (at most
    /// `rows[b].len() × tokens_per_block`). Rows are padded with [`INVALID_BLOCK`].
    pub fn upload<R: AsRef<[u32]>>(gpu: &Gpu, shape: &PagedKvShape, rows: &[R], seq_lens: &[usize], max_blocks_per_seq: usize) -> Result<Self, DeviceError> {
        const K: &str = "block_tables";
        shape.check(K)?;
        if rows.len() != seq_lens.len() {
            return Err(DeviceError::invalid(K, format!("{} block-table rows for {} sequence lengths", rows.len(), seq_lens.len())));
        }
        if max_blocks_per_seq == 0 {
            return Err(DeviceError::invalid(K, "max_blocks_per_seq must be at least 1"));
        }
        to_u32(K, "max_blocks_per_seq", max_blocks_per_seq)?;
        to_u32(K, "batch", rows.len())?;
        let batch = rows.len();
        let mut table = vec![INVALID_BLOCK; (batch * max_blocks_per_seq).max(1)];
        for (b, (row, &len)) in rows.iter().zip(seq_lens).enumerate() {
            let row = row.as_ref();
            if row.len() > max_blocks_per_seq {
                return Err(DeviceError::invalid(K, format!("sequence {b} lists {} blocks, more than max_blocks_per_seq {max_blocks_per_seq}", row.len())));
            }
            if let Some((i, id)) = row.iter().enumerate().find(|(_, id)| **id as usize >= shape.num_blocks) {
                return Err(DeviceError::invalid(K, format!("sequence {b}: block id {id} at entry {i} is not below num_blocks {}", shape.num_blocks)));
            }
            to_u32(K, "sequence length", len)?;
            if len > row.len() * shape.tokens_per_block {
                return Err(DeviceError::invalid(K, format!("sequence {b} has length {len} but {} blocks of {} tokens", row.len(), shape.tokens_per_block)));
            }
            table[b * max_blocks_per_seq..][..row.len()].copy_from_slice(row);
        }
        let lens: Vec<u32> = seq_lens.iter().map(|&l| l as u32).collect();
        Ok(BlockTables {
            table: gpu.upload(&table)?,
            seq_lens: gpu.upload(if lens.is_empty() { &[0][..] } else { &lens })?,
            batch,
            max_blocks_per_seq,
            num_blocks: shape.num_blocks,
            tokens_per_block: shape.tokens_per_block,
            max_seq_len: seq_lens.iter().copied().max().unwrap_or(0),
            host: Some(table),
            host_lens: Some(lens),
        })
    }

    /// Tables that already live on the device (`table`: `batch × max_blocks_per_seq` u32,
    /// `seq_lens`: `batch` u32). Only the sizes are checked: ids `>= num_blocks` and lengths
    /// past a row are handled by the kernels as [`kernel_abi::paged`] documents.
    /// `max_seq_len_hint` bounds the lengths for choosing multi-block splits (it does not
    /// limit what the kernels read).
    pub fn from_device(shape: &PagedKvShape, table: DeviceBuffer<u32>, seq_lens: DeviceBuffer<u32>, batch: usize, max_blocks_per_seq: usize, max_seq_len_hint: usize) -> Result<Self, DeviceError> {
        const K: &str = "block_tables";
        shape.check(K)?;
        if max_blocks_per_seq == 0 {
            return Err(DeviceError::invalid(K, "max_blocks_per_seq must be at least 1"));
        }
        to_u32(K, "max_blocks_per_seq", max_blocks_per_seq)?;
        to_u32(K, "batch", batch)?;
        check_len(K, "table", table.len(), batch * max_blocks_per_seq)?;
        check_len(K, "seq_lens", seq_lens.len(), batch)?;
        Ok(BlockTables {
            table,
            seq_lens,
            batch,
            max_blocks_per_seq,
            num_blocks: shape.num_blocks,
            tokens_per_block: shape.tokens_per_block,
            max_seq_len: max_seq_len_hint.min(max_blocks_per_seq * shape.tokens_per_block),
            host: None,
            host_lens: None,
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn max_blocks_per_seq(&self) -> usize {
        self.max_blocks_per_seq
    }

    /// The longest sequence (or the hint given to [`BlockTables::from_device`]).
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// True when every entry was checked on the host ([`BlockTables::upload`]).
    pub fn is_checked(&self) -> bool {
        self.host.is_some()
    }

    pub(super) fn matches(&self, kernel: &'static str, shape: &PagedKvShape) -> Result<(), DeviceError> {
        if self.num_blocks != shape.num_blocks || self.tokens_per_block != shape.tokens_per_block {
            return Err(DeviceError::invalid(
                kernel,
                format!(
                    "block tables were made for {} blocks of {} tokens, the pools have {} of {}",
                    self.num_blocks, self.tokens_per_block, shape.num_blocks, shape.tokens_per_block
                ),
            ));
        }
        Ok(())
    }
}

/// Where each new token goes: its sequence (row of the block table) and position.
pub struct AppendSlots {
    seq_idx: DeviceBuffer<u32>,
    positions: DeviceBuffer<u32>,
    len: usize,
}

impl AppendSlots {
    /// Validates and uploads: each sequence `< batch`, each position's page inside the row;
    /// with host-checked tables also that the page's block exists and that no two tokens
    /// write the same slot.
    pub fn upload(gpu: &Gpu, tables: &BlockTables, seq_idx: &[u32], positions: &[u32]) -> Result<Self, DeviceError> {
        const K: &str = "append_slots";
        if seq_idx.len() != positions.len() {
            return Err(DeviceError::invalid(K, format!("{} sequence indices for {} positions", seq_idx.len(), positions.len())));
        }
        to_u32(K, "tokens", seq_idx.len())?;
        let tpb = tables.tokens_per_block;
        let mut taken = HashSet::new();
        for (t, (&s, &pos)) in seq_idx.iter().zip(positions).enumerate() {
            if s as usize >= tables.batch {
                return Err(DeviceError::invalid(K, format!("token {t}: sequence {s} is not below the batch of {}", tables.batch)));
            }
            let page = pos as usize / tpb;
            if page >= tables.max_blocks_per_seq {
                return Err(DeviceError::invalid(K, format!("token {t}: position {pos} is past the {} blocks of a table row", tables.max_blocks_per_seq)));
            }
            if let Some(host) = &tables.host {
                let block = host[s as usize * tables.max_blocks_per_seq + page];
                if block as usize >= tables.num_blocks {
                    return Err(DeviceError::invalid(K, format!("token {t}: sequence {s} has no block for position {pos}")));
                }
                if !taken.insert((block, pos as usize % tpb)) {
                    return Err(DeviceError::invalid(K, format!("token {t}: slot {} of block {block} is written twice", pos as usize % tpb)));
                }
            }
        }
        let pad = |v: &[u32]| if v.is_empty() { vec![0] } else { v.to_vec() };
        Ok(AppendSlots { seq_idx: gpu.upload(&pad(seq_idx))?, positions: gpu.upload(&pad(positions))?, len: seq_idx.len() })
    }

    /// Slots already on the device (`len` u32 each), unchecked: the kernel skips tokens whose
    /// sequence, page or block is invalid.
    pub fn from_device(seq_idx: DeviceBuffer<u32>, positions: DeviceBuffer<u32>, len: usize) -> Result<Self, DeviceError> {
        const K: &str = "append_slots";
        to_u32(K, "tokens", len)?;
        check_len(K, "seq_idx", seq_idx.len(), len)?;
        check_len(K, "positions", positions.len(), len)?;
        Ok(AppendSlots { seq_idx, positions, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Writes the new tokens' K and V rows into their pages: token `t` (slot `t` of `slots`)
/// has `num_kv_heads × head_dim` elements at row `t` of `k` and of `v` (rows may be strided,
/// e.g. inside a fused QKV buffer). Bit-exact copy.
pub fn kv_append<T: DType>(gpu: &Gpu, pools: &mut KvPools<T>, tables: &BlockTables, slots: &AppendSlots, k: Rows<T>, v: Rows<T>) -> Result<(), DeviceError> {
    const K: &str = "kv_append";
    let Some(entry) = paged::kv_append_entry(T::STORAGE) else {
        return Err(DeviceError::invalid(K, format!("element type {} is not supported (bf16 or f16)", T::STORAGE.suffix())));
    };
    let s = pools.shape;
    tables.matches(K, &s)?;
    let n = slots.len;
    let cols = s.num_kv_heads * s.head_dim;
    k.check(K, "k", n, cols)?;
    v.check(K, "v", n, cols)?;
    if n == 0 {
        return Ok(());
    }
    let elem = size_of::<T>() as u64;
    let p = KvAppendParams {
        k: k.buf.dev_ptr(gpu).offset_bytes(k.offset as u64 * elem),
        v: v.buf.dev_ptr(gpu).offset_bytes(v.offset as u64 * elem),
        seq_idx: slots.seq_idx.dev_ptr(gpu),
        positions: slots.positions.dev_ptr(gpu),
        block_tables: tables.table.dev_ptr(gpu),
        k_pool: pools.k.dev_ptr(gpu),
        v_pool: pools.v.dev_ptr(gpu),
        num_tokens: to_u32(K, "tokens", n)?,
        num_kv_heads: to_u32(K, "num_kv_heads", s.num_kv_heads)?,
        head_dim: to_u32(K, "head_dim", s.head_dim)?,
        tokens_per_block: to_u32(K, "tokens_per_block", s.tokens_per_block)?,
        max_blocks_per_seq: to_u32(K, "max_blocks_per_seq", tables.max_blocks_per_seq)?,
        num_blocks: to_u32(K, "num_blocks", s.num_blocks)?,
        batch: to_u32(K, "batch", tables.batch)?,
        k_token_stride: to_u32(K, "k token stride", k.stride)?,
        v_token_stride: to_u32(K, "v token stride", v.stride)?,
        _pad: 0,
    };
    // One thread per 16-byte chunk (or element), grid-stride, at most 16 blocks per SM.
    let units = n * cols / if s.head_dim % 8 == 0 { 8 } else { 1 };
    let cap = gpu.info().multiprocessors as usize * 16;
    let blocks = units.div_ceil(ELEMENTWISE_THREADS as usize).clamp(1, cap.max(1)) as u32;
    launch(gpu, entry, blocks, ELEMENTWISE_THREADS, p)
}

/// Query and output geometry of [`decode_attention`].
#[derive(Clone, Copy, Debug)]
pub struct DecodeShape {
    pub num_heads: usize,
    /// Multiplies `q·k` before the softmax (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Elements between the queries of consecutive sequences (a multiple of 8, at least
    /// `num_heads × head_dim`); heads are contiguous within a sequence.
    pub q_seq_stride: usize,
    /// The same for the output.
    pub out_seq_stride: usize,
}

impl DecodeShape {
    /// Contiguous `[batch][num_heads][head_dim]` queries and outputs, scale `1/sqrt(head_dim)`.
    pub fn new(num_heads: usize, head_dim: usize) -> Self {
        DecodeShape { num_heads, scale: 1.0 / (head_dim as f32).sqrt(), q_seq_stride: num_heads * head_dim, out_seq_stride: num_heads * head_dim }
    }
}

/// Scratch for multi-block decode attention: per (sequence, head, split) an f32 accumulator
/// of `head_dim` and a (max, sum) pair.
pub struct AttentionWorkspace {
    buf: DeviceBuffer<f32>,
}

impl AttentionWorkspace {
    /// f32 elements needed for `splits` splits.
    pub fn elements(batch: usize, num_heads: usize, head_dim: usize, splits: usize) -> usize {
        batch * num_heads * splits * (head_dim + 2)
    }

    /// A workspace for up to `max_splits` splits of `batch` sequences.
    pub fn new(gpu: &Gpu, batch: usize, num_heads: usize, head_dim: usize, max_splits: usize) -> Result<Self, DeviceError> {
        Ok(AttentionWorkspace { buf: gpu.alloc(Self::elements(batch, num_heads, head_dim, max_splits).max(4))? })
    }

    /// The most splits this workspace holds for the shape.
    pub fn max_splits(&self, batch: usize, num_heads: usize, head_dim: usize) -> usize {
        self.buf.len() / Self::elements(batch, num_heads, head_dim, 1).max(1)
    }
}

/// How [`decode_attention`] divides each sequence among CTAs.
pub enum MultiBlock<'a> {
    /// One CTA per (sequence, KV head): no workspace, no merge.
    Off,
    /// Splits chosen from the multiprocessor count, the occupancy and the longest sequence
    /// ([`choose_splits`]), limited by the workspace.
    Auto(&'a mut AttentionWorkspace),
    /// Exactly this many splits (1 ..= [`MAX_SPLITS`]).
    Splits(usize, &'a mut AttentionWorkspace),
}

/// Splits per sequence for `units` (sequence, KV head) pairs whose longest sequence has
/// `max_len` tokens, when `resident_ctas` CTAs run at once and each CTA has `token_warps`
/// warps walking different tiles. A cost model in units of one warp's tile (about 1.5 µs on
/// an H100/H200, where a tile is latency-bound): all CTAs of a launch take about as long as
/// the longest, so the decode kernel costs `waves × (tiles per warp + 2)`; splitting adds
/// the merge (its launch, the partial results, a pass over the splits), `5 + splits / 8`.
/// Fitted to measurements at batch 1, 8 and 64 (Llama-3-8B heads, 2048 tokens). Ties go to
/// fewer splits; at most `max_splits`, and never more splits than tiles.
pub fn choose_splits(units: usize, max_len: usize, token_warps: usize, resident_ctas: usize, max_splits: usize) -> usize {
    const CTA_OVERHEAD: usize = 2;
    const MERGE_BASE: usize = 5;
    let tiles = max_len.div_ceil(TILE_TOKENS as usize).max(1);
    let limit = max_splits.min(tiles).min(MAX_SPLITS as usize).max(1);
    let (units, warps, resident) = (units.max(1), token_warps.max(1), resident_ctas.max(1));
    let cost = |s: usize| (units * s).div_ceil(resident) * (tiles.div_ceil(s).div_ceil(warps) + CTA_OVERHEAD) + if s > 1 { MERGE_BASE + s.div_ceil(8) } else { 0 };
    let mut best = (cost(1), 1);
    for s in 2..=limit {
        let c = cost(s);
        if c < best.0 {
            best = (c, s);
        }
    }
    best.1
}

/// Decode attention over the paged KV cache: for each sequence `b` of `tables` and query head
/// `h`, `out[b][h] = softmax(scale · q[b][h] · Kᵀ) · V` over the sequence's tokens, K/V of KV
/// head `h / (num_heads / num_kv_heads)`. Returns the number of splits used.
///
/// Specialisations ([`kernel_abi::paged`]): bf16/f16, head_dim 64/128, 16/32/64/128 tokens per
/// block, 1 to 64 query heads per KV head; anything else is an error naming the parameter.
pub fn decode_attention<T: DType>(gpu: &Gpu, pools: &KvPools<T>, tables: &BlockTables, q: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, s: &DecodeShape, multi: MultiBlock) -> Result<usize, DeviceError> {
    const K: &str = "decode_attention";
    let kv = pools.shape;
    let (d, heads, kvh) = (kv.head_dim, s.num_heads, kv.num_kv_heads);
    paged::check_decode_spec(T::STORAGE, to_u32(K, "head_dim", d)?, to_u32(K, "tokens_per_block", kv.tokens_per_block)?, to_u32(K, "num_heads", heads)?, to_u32(K, "num_kv_heads", kvh)?)
        .map_err(|e| DeviceError::invalid(K, e.to_string()))?;
    let entry = paged::decode_attention_entry(T::STORAGE, d as u32).expect("checked by check_decode_spec");
    tables.matches(K, &kv)?;
    if !s.scale.is_finite() {
        return Err(DeviceError::invalid(K, format!("scale must be finite, got {}", s.scale)));
    }
    for (what, stride) in [("q", s.q_seq_stride), ("out", s.out_seq_stride)] {
        if stride < heads * d || stride % 8 != 0 {
            return Err(DeviceError::invalid(K, format!("{what} sequence stride {stride} must be a multiple of 8 and at least num_heads × head_dim = {}", heads * d)));
        }
    }
    let batch = tables.batch;
    if batch > i32::MAX as usize || kvh > 65_535 {
        return Err(DeviceError::invalid(K, format!("grid of {batch} sequences × {kvh} KV heads exceeds the launch limits (2^31 - 1, 65535)")));
    }
    let splits = match &multi {
        MultiBlock::Off => 1,
        MultiBlock::Splits(n, ws) => {
            if *n == 0 || *n > MAX_SPLITS as usize {
                return Err(DeviceError::invalid(K, format!("{n} splits: must be 1 ..= {MAX_SPLITS}")));
            }
            if *n > 1 && ws.max_splits(batch, heads, d) < *n {
                return Err(DeviceError::invalid(K, format!("the workspace of {} f32 holds fewer than {n} splits of {batch} × {heads} heads", ws.buf.len())));
            }
            *n
        }
        MultiBlock::Auto(ws) => {
            let group = heads / kvh;
            let token_warps = (DECODE_THREADS as usize / 32) / group.div_ceil(16);
            let resident = gpu.resident_blocks_per_sm(entry, DECODE_THREADS)? as usize * gpu.info().multiprocessors as usize;
            choose_splits(batch * kvh, tables.max_seq_len, token_warps, resident, ws.max_splits(batch, heads, d))
        }
    };
    if batch == 0 {
        return Ok(splits);
    }
    check_len(K, "q", q.len(), (batch - 1) * s.q_seq_stride + heads * d)?;
    check_len(K, "out", out.len(), (batch - 1) * s.out_seq_stride + heads * d)?;
    let (acc, stats) = match &multi {
        MultiBlock::Auto(ws) | MultiBlock::Splits(_, ws) if splits > 1 => {
            let acc_elems = batch * heads * splits * d;
            let base = ws.buf.dev_ptr(gpu);
            (base, base.offset_bytes(acc_elems as u64 * 4))
        }
        _ => (kernel_abi::DevPtr::NULL, kernel_abi::DevPtr::NULL),
    };
    let p = DecodeAttentionParams {
        q: q.dev_ptr(gpu),
        out: out.dev_ptr(gpu),
        k_pool: pools.k.dev_ptr(gpu),
        v_pool: pools.v.dev_ptr(gpu),
        block_tables: tables.table.dev_ptr(gpu),
        seq_lens: tables.seq_lens.dev_ptr(gpu),
        partial_acc: acc,
        partial_stats: stats,
        batch: to_u32(K, "batch", batch)?,
        num_heads: heads as u32,
        num_kv_heads: kvh as u32,
        tokens_per_block: kv.tokens_per_block as u32,
        max_blocks_per_seq: to_u32(K, "max_blocks_per_seq", tables.max_blocks_per_seq)?,
        num_blocks: to_u32(K, "num_blocks", kv.num_blocks)?,
        num_splits: splits as u32,
        q_seq_stride: to_u32(K, "q sequence stride", s.q_seq_stride)?,
        out_seq_stride: to_u32(K, "out sequence stride", s.out_seq_stride)?,
        scale_log2: s.scale * std::f32::consts::LOG2_E,
    };
    launch_grid(gpu, entry, (p.batch, p.num_kv_heads, p.num_splits), DECODE_THREADS, p)?;
    if splits > 1 {
        let merge = paged::merge_entry(T::STORAGE).expect("checked by check_decode_spec");
        let mp = AttentionMergeParams {
            partial_acc: acc,
            partial_stats: stats,
            out: p.out,
            batch: p.batch,
            num_heads: p.num_heads,
            head_dim: d as u32,
            num_splits: p.num_splits,
            out_seq_stride: p.out_seq_stride,
            _pad: 0,
        };
        let pairs_per_block = MERGE_THREADS as usize / 32;
        let blocks = to_u32(K, "merge blocks", (batch * heads).div_ceil(pairs_per_block))?;
        launch(gpu, merge, blocks, MERGE_THREADS, mp)?;
    }
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_follow_the_occupancy() {
        // H100-like: 132 SMs × 2 resident CTAs.
        let resident = 264;
        // Batch 64 × 8 KV heads fills the GPU twice: no split.
        assert_eq!(choose_splits(512, 2048, 4, resident, 256), 1);
        // Batch 1 × 8 KV heads: split until every warp has a few tiles (measured on an H200:
        // 8 and 16 splits are fastest, 2 and 64 the slowest).
        let s1 = choose_splits(8, 2048, 4, resident, 256);
        assert!((8..=16).contains(&s1), "{s1}");
        // Batch 8: 4 splits fill one wave (measured fastest).
        let s8 = choose_splits(64, 2048, 4, resident, 256);
        assert_eq!(s8, 4);
        // Short sequences never split more than they have tiles; the workspace caps it.
        assert_eq!(choose_splits(1, 16, 4, resident, 256), 1);
        assert!(choose_splits(1, 100_000, 4, resident, 3) <= 3);
    }

    proptest! {
        #[test]
        fn chosen_splits_are_in_range(units in 1usize..5000, len in 0usize..200_000, warps in 1usize..5, resident in 1usize..2000, max in 0usize..300) {
            let s = choose_splits(units, len, warps, resident, max);
            prop_assert!(s >= 1 && s <= MAX_SPLITS as usize);
            prop_assert!(s == 1 || (s <= max && s <= len.div_ceil(16)));
        }
    }
}
