//! The paged KV cache layout and the decode-attention specialisations: the one place both
//! are defined (kernels, launch wrappers, CPU reference and tests all follow this module).
//!
//! # Layout
//!
//! The KV cache of one layer is two pools, K and V, of `num_blocks` blocks each (f16 or
//! bf16 elements, the same type as the queries). A block holds `tokens_per_block` token
//! slots of every KV head:
//!
//! ```text
//! pool[block][kv_head][slot][d]      block < num_blocks, kv_head < num_kv_heads,
//!                                    slot < tokens_per_block, d < head_dim
//! element index = ((block * num_kv_heads + kv_head) * tokens_per_block + slot) * head_dim + d
//! ```
//!
//! (see [`pool_row`]), so the `tokens_per_block × head_dim` elements of one (block, head) are
//! contiguous: a page of one head is one contiguous run of memory.
//!
//! A batch of sequences is described by
//! - a block table, `u32`, row-major `[batch][max_blocks_per_seq]`: position `p` of sequence
//!   `b` lives in block `table[b][p / tokens_per_block]`, slot `p % tokens_per_block`;
//!   entries past a sequence's last block are unused ([`INVALID_BLOCK`] by convention);
//! - sequence lengths, `u32` per sequence: the tokens `0 .. len` that attention reads.
//!
//! Block ids need not be contiguous or ordered; the same block may appear in several rows
//! (a shared prefix). Slots past a sequence's length and blocks no table uses are never read.
//!
//! # Invalid input
//!
//! The launch wrappers validate tables uploaded from the host (every used id below
//! `num_blocks`, every length within its row). For tables that live on the device and are
//! not checked, the kernels still never touch memory outside the pools and tables:
//! - a length above `max_blocks_per_seq × tokens_per_block` is clamped to it;
//! - attention skips every token of a block whose id is `>= num_blocks` (it contributes
//!   nothing, as if masked);
//! - `kv_append` does not write a token whose sequence is `>= batch`, whose page index is
//!   `>= max_blocks_per_seq` or whose block id is `>= num_blocks`.
//! - A sequence with no readable token gets an all-zero output.
//!
//! # Decode-attention specialisations
//!
//! Every combination below is compiled (entry points in [`crate::manifest::ENTRY_POINTS`]);
//! anything else is refused by [`check_decode_spec`], which the launch wrapper calls before
//! every launch, and a missing entry point fails at module load.
//!
//! | parameter            | supported                                        | how          |
//! |----------------------|--------------------------------------------------|--------------|
//! | K/V/Q/output type    | bf16, f16 ([`DECODE_KV_TYPES`])                  | entry point  |
//! | head_dim             | 64, 128 ([`DECODE_HEAD_DIMS`])                   | entry point  |
//! | tokens_per_block     | 16, 32, 64, 128 ([`DECODE_TOKENS_PER_BLOCK`])    | run time     |
//! | heads / kv_heads (G) | 1 ..= 64 ([`MAX_GROUP`]): MHA, GQA, MQA          | run time     |
//! | splits (multi-block) | 1 ..= [`MAX_SPLITS`]                             | run time     |
//!
//! Entry points: `decode_attention_d64_bf16`, `decode_attention_d128_bf16`,
//! `decode_attention_d64_f16`, `decode_attention_d128_f16` ([`decode_attention_entry`]),
//! the split merge `decode_attention_merge_{bf16,f16}` and the page writer
//! `kv_append_{bf16,f16}` (any `head_dim`; 16-byte accesses when it is a multiple of 8).
//!
//! Why the run-time parameters need no specialisation: the kernel walks a sequence in
//! tiles of [`TILE_TOKENS`] = 16 tokens, and every supported block size is a multiple of
//! 16, so a tile never straddles two blocks (one table lookup per tile); a CTA of
//! [`DECODE_THREADS`] threads (4 warps) gives each warp one 16-row tensor-core M tile of
//! query heads, so groups of up to 16 heads use 4 warps on different tokens, up to 32 two
//! by two, up to 64 one each.
//!
//! # Context-attention (paged FMHA) specialisations
//!
//! Causal flash attention of context (prefill) tokens over the same pools and tables
//! (`context_attention_d{64,128}_{bf16,f16}`, [`context_attention_entry`], checked by
//! [`check_context_spec`]): the same element types, head sizes and block sizes as decode, any
//! `num_heads` that is a multiple of `num_kv_heads` (MHA, GQA, MQA; no group limit). A CTA of
//! [`CONTEXT_THREADS`] threads takes [`CONTEXT_Q_TILE`] query tokens of one head and walks
//! the keys in tiles of [`CONTEXT_KV_TILE`]; every supported block size is a multiple of 16,
//! so each 16-key quarter of a tile lies in one block (one table lookup, one validity bit).
//! Keys past `start + new` or in blocks with invalid ids are masked and their K/V rows are
//! zero-filled in shared memory without reading the pools.

use crate::StorageType;

/// Tokens per tile of the decode kernel (the `k` of the P·V tensor-core product).
pub const TILE_TOKENS: u32 = 16;
/// Threads per CTA of `decode_attention_*`.
pub const DECODE_THREADS: u32 = 128;
/// Threads per block of `decode_attention_merge_*` (one warp per (sequence, head)).
pub const MERGE_THREADS: u32 = 128;
/// Head sizes with a decode-attention entry point.
pub const DECODE_HEAD_DIMS: [u32; 2] = [64, 128];
/// Block sizes (tokens per block) decode attention supports.
pub const DECODE_TOKENS_PER_BLOCK: [u32; 4] = [16, 32, 64, 128];
/// Element types of the K/V pools (and of the queries and outputs).
pub const DECODE_KV_TYPES: [StorageType; 2] = [StorageType::Bf16, StorageType::F16];
/// The largest number of query heads per KV head.
pub const MAX_GROUP: u32 = 64;
/// The largest number of splits per sequence (multi-block).
pub const MAX_SPLITS: u32 = 256;
/// The conventional filler of unused block-table entries (any id `>= num_blocks` is skipped).
pub const INVALID_BLOCK: u32 = u32::MAX;
/// Threads per CTA of `context_attention_*` (4 warps, 16 query rows each).
pub const CONTEXT_THREADS: u32 = 128;
/// Query tokens per CTA of `context_attention_*`.
pub const CONTEXT_Q_TILE: u32 = 64;
/// Keys per iteration (one shared-memory K/V tile) of `context_attention_*`.
pub const CONTEXT_KV_TILE: u32 = 64;

/// The work of CTA `cta` (the linear block index) of `context_attention_*`: `(head, sequence,
/// z)`, where `z` counts query tiles from the last (`z = 0` is tile `q_tiles - 1`, the one
/// with the most keys). The `heads · batch` (head, sequence) pairs, pair `b · heads + h`, are
/// taken `group` at a time (the last group may be smaller); within a group the CTAs go
/// tile-major, pairs fastest, so the longest tiles of the group start first while the K/V of
/// only `group` pairs (neighbouring heads share a KV head under GQA) are being read, which
/// keeps them in L2. `group >= heads · batch` gives one group: the longest tiles of every
/// pair first. `cta < heads · batch · q_tiles`; `group` is clamped to at least 1.
#[inline(always)]
pub const fn context_cta(cta: u32, heads: u32, batch: u32, q_tiles: u32, group: u32) -> (u32, u32, u32) {
    let pairs = heads * batch;
    let group = if group == 0 { 1 } else if group > pairs { pairs } else { group };
    let g = cta / (group * q_tiles);
    let first = g * group;
    let n = if pairs - first < group { pairs - first } else { group };
    let r = cta - first * q_tiles;
    let pair = first + r % n;
    (pair % heads, pair / heads, r / n)
}

/// Row index (in units of `head_dim` elements) of `(block, kv_head, slot)` in a pool.
#[inline(always)]
pub const fn pool_row(block: u32, kv_head: u32, slot: u32, num_kv_heads: u32, tokens_per_block: u32) -> u64 {
    (block as u64 * num_kv_heads as u64 + kv_head as u64) * tokens_per_block as u64 + slot as u64
}

/// Elements of one pool (K or V) with this geometry.
pub const fn pool_elements(num_blocks: u64, num_kv_heads: u64, tokens_per_block: u64, head_dim: u64) -> u64 {
    num_blocks * num_kv_heads * tokens_per_block * head_dim
}

/// The token range `[start, end)` of split `split` of a sequence of `len` tokens divided into
/// `splits` splits: chunks of `ceil(len / splits)` tokens rounded up to whole tiles, so that
/// every split starts on a tile (and therefore page) boundary. Trailing splits may be empty
/// (`start == end`).
#[inline(always)]
pub const fn split_range(len: u32, splits: u32, split: u32) -> (u32, u32) {
    let splits = if splits == 0 { 1 } else { splits } as u64;
    let len64 = len as u64;
    let chunk = len64.div_ceil(splits).div_ceil(TILE_TOKENS as u64) * TILE_TOKENS as u64;
    let start = split as u64 * chunk;
    let start = if start < len64 { start } else { len64 };
    let end = if start + chunk < len64 { start + chunk } else { len64 };
    (start as u32, end as u32)
}

/// The decode-attention entry point for `kv` elements and `head_dim`, if compiled.
pub const fn decode_attention_entry(kv: StorageType, head_dim: u32) -> Option<&'static str> {
    match (kv, head_dim) {
        (StorageType::Bf16, 64) => Some("decode_attention_d64_bf16"),
        (StorageType::Bf16, 128) => Some("decode_attention_d128_bf16"),
        (StorageType::F16, 64) => Some("decode_attention_d64_f16"),
        (StorageType::F16, 128) => Some("decode_attention_d128_f16"),
        _ => None,
    }
}

/// The split-merge entry point for `kv` elements.
pub const fn merge_entry(kv: StorageType) -> Option<&'static str> {
    match kv {
        StorageType::Bf16 => Some("decode_attention_merge_bf16"),
        StorageType::F16 => Some("decode_attention_merge_f16"),
        StorageType::F32 => None,
    }
}

/// The `kv_append` entry point for `kv` elements.
pub const fn kv_append_entry(kv: StorageType) -> Option<&'static str> {
    match kv {
        StorageType::Bf16 => Some("kv_append_bf16"),
        StorageType::F16 => Some("kv_append_f16"),
        StorageType::F32 => None,
    }
}

/// The context-attention (paged FMHA) entry point for `kv` elements and `head_dim`.
pub const fn context_attention_entry(kv: StorageType, head_dim: u32) -> Option<&'static str> {
    match (kv, head_dim) {
        (StorageType::Bf16, 64) => Some("context_attention_d64_bf16"),
        (StorageType::Bf16, 128) => Some("context_attention_d128_bf16"),
        (StorageType::F16, 64) => Some("context_attention_d64_f16"),
        (StorageType::F16, 128) => Some("context_attention_d128_f16"),
        _ => None,
    }
}

/// Checks that a context-attention configuration is compiled: decode's element types, head
/// sizes and block sizes, `num_heads` a positive multiple of `num_kv_heads` (any group size).
pub const fn check_context_spec(kv: StorageType, head_dim: u32, tokens_per_block: u32, num_heads: u32, num_kv_heads: u32) -> Result<(), SpecError> {
    if !matches!(kv, StorageType::Bf16 | StorageType::F16) {
        return Err(SpecError::KvType(kv));
    }
    if context_attention_entry(kv, head_dim).is_none() {
        return Err(SpecError::HeadDim(head_dim));
    }
    if !matches!(tokens_per_block, 16 | 32 | 64 | 128) {
        return Err(SpecError::TokensPerBlock(tokens_per_block));
    }
    if num_kv_heads == 0 || num_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(SpecError::Heads { num_heads, num_kv_heads });
    }
    Ok(())
}

/// Why a decode-attention configuration has no kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    KvType(StorageType),
    HeadDim(u32),
    TokensPerBlock(u32),
    /// `num_heads` is not a positive multiple of `num_kv_heads`.
    Heads { num_heads: u32, num_kv_heads: u32 },
    /// More than [`MAX_GROUP`] query heads per KV head.
    Group(u32),
    Splits(u32),
}

impl core::fmt::Display for SpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            SpecError::KvType(t) => write!(f, "element type {} is not supported (bf16 or f16)", t.suffix()),
            SpecError::HeadDim(d) => write!(f, "head_dim {d} is not supported (supported: 64, 128)"),
            SpecError::TokensPerBlock(t) => write!(f, "tokens_per_block {t} is not supported (supported: 16, 32, 64, 128)"),
            SpecError::Heads { num_heads, num_kv_heads } => {
                write!(f, "num_heads {num_heads} must be a positive multiple of num_kv_heads {num_kv_heads}")
            }
            SpecError::Group(g) => write!(f, "{g} query heads per KV head exceed the supported {MAX_GROUP}"),
            SpecError::Splits(s) => write!(f, "{s} splits: must be 1 ..= {MAX_SPLITS}"),
        }
    }
}

/// Checks that a decode-attention configuration is one of the compiled specialisations
/// (table in the module documentation).
pub const fn check_decode_spec(kv: StorageType, head_dim: u32, tokens_per_block: u32, num_heads: u32, num_kv_heads: u32) -> Result<(), SpecError> {
    if !matches!(kv, StorageType::Bf16 | StorageType::F16) {
        return Err(SpecError::KvType(kv));
    }
    if decode_attention_entry(kv, head_dim).is_none() {
        return Err(SpecError::HeadDim(head_dim));
    }
    if !matches!(tokens_per_block, 16 | 32 | 64 | 128) {
        return Err(SpecError::TokensPerBlock(tokens_per_block));
    }
    if num_kv_heads == 0 || num_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(SpecError::Heads { num_heads, num_kv_heads });
    }
    if num_heads / num_kv_heads > MAX_GROUP {
        return Err(SpecError::Group(num_heads / num_kv_heads));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn splits_cover_the_sequence_in_tile_aligned_pieces() {
        for len in [0u32, 1, 15, 16, 17, 97, 1000, 1024, 4097] {
            for splits in [1u32, 2, 3, 7, 16, 64, 256] {
                let mut next = 0;
                for s in 0..splits {
                    let (a, b) = split_range(len, splits, s);
                    assert!(a <= b && b <= len);
                    assert_eq!(a, next, "len {len} splits {splits} split {s}");
                    assert!(a % TILE_TOKENS == 0 || a == len);
                    next = b;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn every_listed_specialisation_has_an_entry_and_others_do_not() {
        for t in DECODE_KV_TYPES {
            for d in DECODE_HEAD_DIMS {
                let e = decode_attention_entry(t, d).unwrap();
                assert!(crate::manifest::contains(e), "{e}");
                for tpb in DECODE_TOKENS_PER_BLOCK {
                    for (h, kvh) in [(32, 32), (32, 8), (64, 8), (32, 1), (64, 1)] {
                        assert_eq!(check_decode_spec(t, d, tpb, h, kvh), Ok(()));
                    }
                }
            }
            assert!(crate::manifest::contains(merge_entry(t).unwrap()));
            assert!(crate::manifest::contains(kv_append_entry(t).unwrap()));
        }
        assert_eq!(check_decode_spec(StorageType::F32, 128, 16, 8, 8), Err(SpecError::KvType(StorageType::F32)));
        assert_eq!(check_decode_spec(StorageType::Bf16, 96, 16, 8, 8), Err(SpecError::HeadDim(96)));
        assert_eq!(check_decode_spec(StorageType::Bf16, 128, 8, 8, 8), Err(SpecError::TokensPerBlock(8)));
        assert_eq!(check_decode_spec(StorageType::Bf16, 128, 16, 12, 8), Err(SpecError::Heads { num_heads: 12, num_kv_heads: 8 }));
        assert_eq!(check_decode_spec(StorageType::Bf16, 128, 16, 128, 1), Err(SpecError::Group(128)));
    }

    #[test]
    fn context_specialisations_have_entries() {
        for t in DECODE_KV_TYPES {
            for d in DECODE_HEAD_DIMS {
                let e = context_attention_entry(t, d).unwrap();
                assert!(crate::manifest::contains(e), "{e}");
                for tpb in DECODE_TOKENS_PER_BLOCK {
                    for (h, kvh) in [(32, 32), (32, 8), (64, 8), (32, 1), (128, 1)] {
                        assert_eq!(check_context_spec(t, d, tpb, h, kvh), Ok(()));
                    }
                }
            }
        }
        assert!(CONTEXT_KV_TILE % TILE_TOKENS == 0 && DECODE_TOKENS_PER_BLOCK.iter().all(|t| t % TILE_TOKENS == 0));
        assert_eq!(check_context_spec(StorageType::F32, 128, 16, 8, 8), Err(SpecError::KvType(StorageType::F32)));
        assert_eq!(check_context_spec(StorageType::F16, 96, 16, 8, 8), Err(SpecError::HeadDim(96)));
        assert_eq!(check_context_spec(StorageType::Bf16, 64, 48, 8, 8), Err(SpecError::TokensPerBlock(48)));
        assert_eq!(check_context_spec(StorageType::Bf16, 64, 16, 12, 8), Err(SpecError::Heads { num_heads: 12, num_kv_heads: 8 }));
    }

    #[test]
    fn context_cta_order_is_a_bijection_grouped_and_longest_first() {
        for (heads, batch, tiles) in [(1, 1, 1), (3, 2, 5), (32, 4, 32), (8, 3, 7), (5, 1, 1)] {
            let pairs = heads * batch;
            for group in [0, 1, 2, 3, 8, pairs - 1, pairs, pairs + 5] {
                let mut seen = std::vec![false; (pairs * tiles) as usize];
                let mut last_z = std::vec![None::<u32>; pairs as usize];
                for cta in 0..pairs * tiles {
                    let (h, b, z) = context_cta(cta, heads, batch, tiles, group);
                    assert!(h < heads && b < batch && z < tiles, "{heads} {batch} {tiles} {group} {cta}");
                    let pair = (b * heads + h) as usize;
                    let at = pair * tiles as usize + z as usize;
                    assert!(!seen[at], "CTA {cta} repeats ({h}, {b}, {z})");
                    seen[at] = true;
                    // Each pair's tiles come longest first, in order.
                    assert_eq!(last_z[pair].map_or(0, |z| z + 1), z);
                    last_z[pair] = Some(z);
                    // Pairs go in groups of `group`.
                    let g = group.clamp(1, pairs);
                    assert_eq!(pair as u32 / g, cta / (g * tiles));
                }
                assert!(seen.iter().all(|&s| s));
            }
            // One group is the plain (head fastest, then sequence, then tile) order.
            for cta in 0..pairs * tiles {
                assert_eq!(context_cta(cta, heads, batch, tiles, pairs), (cta % heads, cta / heads % batch, cta / pairs));
            }
        }
    }

    #[test]
    fn pool_rows_are_block_major() {
        assert_eq!(pool_row(0, 0, 0, 8, 32), 0);
        assert_eq!(pool_row(0, 0, 1, 8, 32), 1);
        assert_eq!(pool_row(0, 1, 0, 8, 32), 32);
        assert_eq!(pool_row(2, 3, 5, 8, 32), (2 * 8 + 3) * 32 + 5);
        assert_eq!(pool_elements(3, 8, 32, 128), 3 * 8 * 32 * 128);
    }
}
