//! Paged KV append and XQA-style decode attention over paged K/V.
//!
//! Layout, specialisations and the rules for invalid input: `kernel_abi::paged`. The per-lane
//! fragment math (which element each lane loads into which tensor-core register) lives in
//! `kernel_math::attention`, where a CPU emulation of `mma.sync` checks it.
//!
//! # decode_attention
//!
//! One CTA (4 warps) per (sequence, KV head, split). The query heads of the KV group are the
//! rows of 16-row tensor-core M tiles (`mma.sync.m16n8k16`, f32 accumulation), so each K and
//! V element a CTA reads serves every head of the group: K/V are read from memory once per
//! group. Groups of up to 16 heads: the 4 warps walk different 16-token tiles of the split;
//! up to 32: two warps per tile (the second warp's loads hit L1/L2); up to 64: one warp per
//! M tile, all on the same tiles.
//!
//! Per tile a warp loads K and V with 16-byte `ld.global.nc` straight into registers (no
//! shared memory in the loop, hence no bank conflicts), one block-table lookup per tile
//! (block ids for the warp's next 32 tiles are fetched by its 32 lanes at once and
//! broadcast with `shfl.idx`), computes `S = Q·Kᵀ` (2 × head_dim/16 MMAs), runs the online
//! softmax in base 2 on the scores (scaled by `scale × log2 e`, `ex2.approx`, row max over the
//! four lanes of a row by two shuffles), rounds `P` to the KV type and accumulates
//! `O += P·V` (head_dim/8 MMAs). Tokens past the length, and every token of a block id
//! `>= num_blocks`, are masked: their scores are `-inf` and their V values zero (so a NaN in
//! an unused slot cannot leak through `0 × NaN`).
//!
//! The epilogue merges the warps' (max, sum, O) through shared memory (rows padded and the
//! 16-byte units XOR-swizzled so that each quarter-warp phase touches 8 distinct bank
//! groups) and writes either the normalised output (`num_splits == 1`) or the split's
//! partial result, which `decode_attention_merge_*` combines.

use crate::arch::{self, exp2_approx, ld_u32_nc, ld_v4, shfl_idx_u32, shfl_xor, st_v4, sync_threads};
use crate::dtype::{aligned16, load_w, store_w, Bf16, Storage, F16, F32};
use crate::elementwise::entry;
use core::arch::asm;
use kernel_abi::paged::{self, DECODE_THREADS, MERGE_THREADS};
use kernel_abi::{AttentionMergeParams, DecodeAttentionParams, KvAppendParams};
use kernel_math::attention as frag;

const WARPS: usize = DECODE_THREADS as usize / 32;
const TILE: usize = frag::TILE;
const NEG_INF: f32 = f32::NEG_INFINITY;

/// Repeats `$body` for `$k = 0 .. $n` (`$n` a constant ≤ 16) with `$k` a constant, so that the
/// register arrays it indexes stay in registers.
macro_rules! unroll {
    ($n:expr, |$k:ident| $body:block) => {
        unroll!(@ $n, $k, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
    (@ $n:expr, $k:ident, $body:block, $($i:literal)*) => {{
        $(
            #[allow(unused_comparisons)]
            if $i < $n {
                let $k: usize = $i;
                $body
            }
        )*
    }};
}

pub(crate) use unroll;

/// The 16-bit element types of the K/V pools: what the tensor cores multiply.
pub(crate) trait KvElem: Storage {
    const BF16: bool;
    /// Two f32 → packed pair (`lo` in the low half), round to nearest even.
    fn pack2(lo: f32, hi: f32) -> u32;
}

impl KvElem for Bf16 {
    const BF16: bool = true;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        arch::pack_bf16x2(lo, hi)
    }
}

impl KvElem for F16 {
    const BF16: bool = false;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        arch::pack_f16x2(lo, hi)
    }
}

/// `c += A·B` for one `m16n8k16` tile (f32 accumulators), fragments as in
/// `kernel_math::attention`.
#[inline(always)]
pub(crate) fn mma<E: KvElem>(c: &mut [f32; 4], a: &[u32; 4], b: &[u32; 2]) {
    // SAFETY: a register-only warp instruction; callers execute it with the whole warp
    // converged. Not `pure`: LLVM must not move a `.sync.aligned` instruction across control
    // flow.
    unsafe {
        if E::BF16 {
            asm!(
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
                inout(reg32) c[0], inout(reg32) c[1], inout(reg32) c[2], inout(reg32) c[3],
                in(reg32) a[0], in(reg32) a[1], in(reg32) a[2], in(reg32) a[3], in(reg32) b[0], in(reg32) b[1],
                options(nostack, nomem, preserves_flags)
            );
        } else {
            asm!(
                "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
                inout(reg32) c[0], inout(reg32) c[1], inout(reg32) c[2], inout(reg32) c[3],
                in(reg32) a[0], in(reg32) a[1], in(reg32) a[2], in(reg32) a[3], in(reg32) b[0], in(reg32) b[1],
                options(nostack, nomem, preserves_flags)
            );
        }
    }
}

/// Four f32, 16-byte aligned: the unit of the epilogue's shared-memory traffic.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct F4([f32; 4]);

/// Row stride (in [`F4`] units) of the epilogue's per-warp output tiles: `head_dim + 8` f32,
/// so rows `g` and `g + 1` start 2 bank groups apart.
const fn row_units(d: usize) -> usize {
    (d + 8) / 4
}

/// The swizzled position of 16-byte unit `u` within a row: units 8..16 of every 16 trade
/// places in pairs, so lanes `tq` and `tq + 2` (128 bytes apart) land in different bank
/// groups.
#[inline(always)]
const fn swizzle(u: usize) -> usize {
    u ^ ((u >> 3) & 1)
}

/// The warps' unnormalised outputs, `[warp][16 rows][row_units]` (one array per head_dim).
#[unsafe(link_section = ".nvptx.shared")]
static mut O_TILES_64: [F4; WARPS * 16 * row_units(64)] = [F4([0.0; 4]); WARPS * 16 * row_units(64)];
#[unsafe(link_section = ".nvptx.shared")]
static mut O_TILES_128: [F4; WARPS * 16 * row_units(128)] = [F4([0.0; 4]); WARPS * 16 * row_units(128)];
/// The warps' (running max, running sum) per row: `[warp * 16 + row]`.
#[unsafe(link_section = ".nvptx.shared")]
static mut ROW_STATS: [[f32; 2]; WARPS * 16] = [[0.0; 2]; WARPS * 16];

/// `D` = head_dim, `KS = D / 16` k-steps, `SS = D / 32` 16-byte loads per row, `HV = D / 64`
/// halves of V columns, `NJ = D / 8` P·V n-tiles.
#[inline(always)]
unsafe fn decode_attention<E: KvElem, const D: usize, const KS: usize, const SS: usize, const HV: usize, const NJ: usize>(p: &DecodeAttentionParams) {
    let (b, kvh, split) = (arch::block_idx() as usize, arch::block_idx_y() as usize, arch::block_idx_z());
    let tpb = p.tokens_per_block as usize;
    // CTA-uniform guards (the host validated all of these; they keep a bad launch in bounds).
    if b >= p.batch as usize || kvh >= p.num_kv_heads as usize || split >= p.num_splits || !matches!(tpb, 16 | 32 | 64 | 128) {
        return;
    }
    let tid = arch::thread_idx() as usize;
    let (warp, lane) = (tid / 32, tid % 32);
    let (g, tq) = (lane / 4, lane % 4);
    let heads = p.num_heads as usize;
    let group = heads / p.num_kv_heads as usize;
    let mtiles = group.div_ceil(16).clamp(1, WARPS);
    let twarps = WARPS / mtiles;
    let (mt, tw) = (warp % mtiles, warp / mtiles);
    let active = tw < twarps;

    let shift = p.tokens_per_block.trailing_zeros();
    let max_blocks = p.max_blocks_per_seq as usize;
    // SAFETY: `b < batch`; seq_lens holds `batch` u32.
    let len_raw = unsafe { ld_u32_nc(p.seq_lens.as_ptr::<u32>().add(b)) } as u64;
    let len = len_raw.min(max_blocks as u64 * tpb as u64) as u32;
    let (start, end) = paged::split_range(len, p.num_splits, split);
    let (start, end) = (start as usize, end as usize);
    let n_tiles = (end - start).div_ceil(TILE);

    // Q fragments of this warp's M tile (rows past the group are zero).
    let q_base = p.q.as_ptr::<u8>().wrapping_add((b * p.q_seq_stride as usize + kvh * group * D) * 2);
    let (r0, r1) = (16 * mt + g, 16 * mt + g + 8);
    let mut qa = [[0u32; 4]; KS];
    if active && n_tiles > 0 {
        unroll!(SS, |ss| {
            let col = frag::qk_chunk_col(ss, tq);
            // SAFETY: rows below the group are heads of this KV group, inside q (host-checked);
            // rows are 16-byte aligned (q_seq_stride and head_dim multiples of 8).
            let w0 = if r0 < group { unsafe { ld_v4(q_base.add((r0 * D + col) * 2), true).0 } } else { [0; 4] };
            let w1 = if r1 < group { unsafe { ld_v4(q_base.add((r1 * D + col) * 2), true).0 } } else { [0; 4] };
            qa[2 * ss] = frag::qk_a(&w0, &w1, 0);
            qa[2 * ss + 1] = frag::qk_a(&w0, &w1, 1);
        });
    }

    let mut o = [[0f32; 4]; NJ];
    let mut m = [NEG_INF; 2];
    let mut l = [0f32; 2];
    if active {
        let table = p.block_tables.as_ptr::<u32>().wrapping_add(b * max_blocks);
        let mut pages = paged::INVALID_BLOCK;
        let mut j = 0usize;
        loop {
            let i = tw + twarps * j;
            if i >= n_tiles {
                break;
            }
            if j % 32 == 0 {
                // Lane `x` fetches the block id of the warp's tile `j + x`.
                let ti = tw + twarps * (j + lane);
                pages = paged::INVALID_BLOCK;
                if ti < n_tiles {
                    let page_index = (start + TILE * ti) >> shift;
                    if page_index < max_blocks {
                        // SAFETY: inside row `b` of the table (`page_index < max_blocks`).
                        pages = unsafe { ld_u32_nc(table.add(page_index)) };
                    }
                }
            }
            let page = shfl_idx_u32(pages, (j % 32) as u32);
            let tok0 = start + TILE * i;
            let nvalid = if page < p.num_blocks { (end - tok0).min(TILE) } else { 0 };

            // K rows of this lane's two score columns, V rows of its four P·V tokens.
            let mut kw = [[[0u32; 4]; SS]; 2];
            let mut vw = [[[0u32; 4]; 4]; HV];
            if nvalid > 0 {
                let row0 = paged::pool_row(page, kvh as u32, (tok0 & (tpb - 1)) as u32, p.num_kv_heads, p.tokens_per_block) as usize;
                let kb = p.k_pool.as_ptr::<u8>().wrapping_add(row0 * D * 2);
                let vb = p.v_pool.as_ptr::<u8>().wrapping_add(row0 * D * 2);
                // SAFETY: `page < num_blocks` and the tile's 16 slots lie inside the block
                // (tiles start on multiples of 16, blocks hold a multiple of 16 slots), so
                // every row read is inside the pools (host-checked sizes).
                unsafe {
                    unroll!(2, |nt| {
                        let r = frag::k_token(g, nt);
                        unroll!(SS, |ss| {
                            kw[nt][ss] = ld_v4(kb.add((r * D + frag::qk_chunk_col(ss, tq)) * 2), true).0;
                        });
                    });
                    unroll!(HV, |h| {
                        unroll!(4, |x| {
                            vw[h][x] = ld_v4(vb.add((frag::v_token(tq, x) * D + frag::v_chunk_col(h, g)) * 2), true).0;
                        });
                    });
                }
                if nvalid < TILE {
                    unroll!(4, |x| {
                        if frag::v_token(tq, x) >= nvalid {
                            unroll!(HV, |h| {
                                vw[h][x] = [0; 4];
                            });
                        }
                    });
                }
            }

            // S = Q·Kᵀ.
            let mut s = [[0f32; 4]; 2];
            unroll!(KS, |ks| {
                unroll!(2, |nt| {
                    mma::<E>(&mut s[nt], &qa[ks], &frag::qk_b(&kw[nt][ks / 2], ks % 2));
                });
            });

            // Online softmax in base 2; rows g (registers 0, 1) and g + 8 (2, 3).
            let mut tmax = [NEG_INF; 2];
            unroll!(2, |nt| {
                unroll!(4, |c| {
                    let x = if frag::score_token(tq, nt, c) < nvalid { s[nt][c] * p.scale_log2 } else { NEG_INF };
                    s[nt][c] = x;
                    tmax[c / 2] = tmax[c / 2].max(x);
                });
            });
            let mut base = [0f32; 2];
            let mut alpha = [0f32; 2];
            unroll!(2, |r| {
                tmax[r] = tmax[r].max(shfl_xor(tmax[r], 1));
                tmax[r] = tmax[r].max(shfl_xor(tmax[r], 2));
                (m[r], base[r], alpha[r]) = frag::online_step(m[r], tmax[r], exp2_approx);
                l[r] *= alpha[r];
            });
            let mut pr = [[0f32; 4]; 2];
            unroll!(2, |nt| {
                unroll!(4, |c| {
                    let pv = exp2_approx(s[nt][c] - base[c / 2]);
                    pr[nt][c] = pv;
                    l[c / 2] += pv;
                });
            });
            unroll!(NJ, |jn| {
                o[jn][0] *= alpha[0];
                o[jn][1] *= alpha[0];
                o[jn][2] *= alpha[1];
                o[jn][3] *= alpha[1];
            });

            // O += P·V.
            let pa = frag::p_a(&pr[0], &pr[1], E::pack2);
            unroll!(HV, |h| {
                unroll!(8, |jj| {
                    mma::<E>(&mut o[8 * h + jj], &pa, &frag::pv_b(&vw[h], jj));
                });
            });
            j += 1;
        }
    }

    // Row sums over the four lanes of a row (every lane of every warp: convergent).
    unroll!(2, |r| {
        l[r] += shfl_xor(l[r], 1);
        l[r] += shfl_xor(l[r], 2);
    });

    // Epilogue: the warps' tiles to shared memory, then merged per output chunk.
    let tiles: *mut F4 = if D == 64 { (&raw mut O_TILES_64).cast() } else { (&raw mut O_TILES_128).cast() };
    let stats = &raw mut ROW_STATS;
    let rs = row_units(D);
    if active {
        // SAFETY: each warp writes its own rows `warp * 16 ..` of the arrays (sized for 4
        // warps × 16 rows × `rs` units; units `< D / 4 + 1` after swizzling).
        unsafe {
            if tq == 0 {
                (*stats)[warp * 16 + g] = [m[0], l[0]];
                (*stats)[warp * 16 + g + 8] = [m[1], l[1]];
            }
            unroll!(HV, |h| {
                unroll!(2, |e| {
                    let u = frag::o_col(8 * h, tq, e) / 4;
                    unroll!(2, |half| {
                        let row = (warp * 16 + g + 8 * half) * rs;
                        let c = 2 * half + e;
                        *tiles.add(row + swizzle(u)) = F4([o[8 * h][c], o[8 * h + 1][c], o[8 * h + 2][c], o[8 * h + 3][c]]);
                        *tiles.add(row + swizzle(u + 1)) = F4([o[8 * h + 4][c], o[8 * h + 5][c], o[8 * h + 6][c], o[8 * h + 7][c]]);
                    });
                });
            });
        }
    }
    sync_threads();

    let chunks = D / 8;
    let splits = p.num_splits as usize;
    let mut item = tid;
    while item < group * chunks {
        let (r, c8) = (item / chunks, item % chunks);
        let (rmt, rr) = (r / 16, r % 16);
        // SAFETY (this block): reads rows written by the active warps before the barrier.
        let mut mx = NEG_INF;
        for t in 0..twarps {
            mx = mx.max(unsafe { (*stats)[(t * mtiles + rmt) * 16 + rr][0] });
        }
        let mut acc = [0f32; 8];
        let mut lsum = 0f32;
        for t in 0..twarps {
            let w = t * mtiles + rmt;
            // SAFETY: see the block comment above (indices inside the host-checked workspace / shared tiles).
            let [mw, lw] = unsafe { (*stats)[w * 16 + rr] };
            let wt = frag::partial_weight(mw, mx, exp2_approx);
            if wt != 0.0 {
                lsum += wt * lw;
                let row = (w * 16 + rr) * rs;
                // SAFETY: see the block comment above (indices inside the host-checked workspace / shared tiles).
                let (lo, hi) = unsafe { (*tiles.add(row + swizzle(2 * c8)), *tiles.add(row + swizzle(2 * c8 + 1))) };
                unroll!(4, |k| {
                    acc[k] += wt * lo.0[k];
                    acc[k + 4] += wt * hi.0[k];
                });
            }
        }
        let head = kvh * group + r;
        if splits == 1 {
            let inv = if lsum > 0.0 { 1.0 / lsum } else { 0.0 };
            let out = p.out.as_mut_ptr::<u8>().wrapping_add((b * p.out_seq_stride as usize + head * D) * 2);
            // SAFETY: `head < num_heads`, inside out (host-checked), 16-byte aligned.
            unsafe { store_w::<E, 8>(out, c8, acc.map(|v| v * inv)) };
        } else {
            let idx = (b * heads + head) * splits + split as usize;
            let pacc = p.partial_acc.as_mut_ptr::<u8>().wrapping_add(idx * D * 4);
            // SAFETY: `idx < batch × heads × splits`: inside the workspace (host-checked).
            unsafe {
                store_w::<F32, 4>(pacc, 2 * c8, [acc[0], acc[1], acc[2], acc[3]]);
                store_w::<F32, 4>(pacc, 2 * c8 + 1, [acc[4], acc[5], acc[6], acc[7]]);
                if c8 == 0 {
                    let st = p.partial_stats.as_mut_ptr::<u8>();
                    F32::store(st, 2 * idx, mx);
                    F32::store(st, 2 * idx + 1, lsum);
                }
            }
        }
        item += DECODE_THREADS as usize;
    }
}

/// Combines the splits of one (sequence, head) per warp; `W = head_dim / 32` columns per lane.
/// Latency-bound for short sequences, so every load is independent of the previous one:
/// lanes read the (max, sum) pairs 32 splits at a time and reduce them by shuffles, then the
/// accumulators are read 8 splits at a time (all 8 loads in flight) and weighted.
#[inline(always)]
unsafe fn merge<E: KvElem, const W: usize>(p: &AttentionMergeParams) {
    let tid = arch::thread_idx() as usize;
    let (warp, lane) = (tid / 32, tid % 32);
    let pair = arch::block_idx() as usize * (MERGE_THREADS as usize / 32) + warp;
    let heads = p.num_heads as usize;
    // Warp-uniform exit: the shuffles below need the whole warp.
    if heads == 0 || pair >= p.batch as usize * heads {
        return;
    }
    let (b, h) = (pair / heads, pair % heads);
    let (splits, d) = (p.num_splits as usize, p.head_dim as usize);
    let stats = p.partial_stats.as_ptr::<u8>().wrapping_add(pair * splits * 2 * 4);
    let accs = p.partial_acc.as_ptr::<u8>().wrapping_add(pair * splits * d * 4);
    // SAFETY (all loads): `pair < batch × heads` and every split index `< splits`: inside the
    // workspace (host-checked); rows of `d` f32 are 16-byte aligned. Accumulators of empty
    // splits are read but never used (selected away, not multiplied by 0).
    let mut mx = NEG_INF;
    let mut s = lane;
    while s < splits {
        // SAFETY: see the block comment above (indices inside the host-checked workspace / shared tiles).
        mx = mx.max(unsafe { F32::load(stats, 2 * s) });
        s += 32;
    }
    let mut mask = 16;
    while mask > 0 {
        mx = mx.max(shfl_xor(mx, mask));
        mask >>= 1;
    }
    let mut lsum = 0f32;
    let mut s = lane;
    while s < splits {
        // SAFETY: see the block comment above (indices inside the host-checked workspace / shared tiles).
        let wt = frag::partial_weight(unsafe { F32::load(stats, 2 * s) }, mx, exp2_approx);
        if wt != 0.0 {
            // SAFETY: see the block comment above (indices inside the host-checked workspace / shared tiles).
            lsum += wt * unsafe { F32::load(stats, 2 * s + 1) };
        }
        s += 32;
    }
    let mut mask = 16;
    while mask > 0 {
        lsum += shfl_xor(lsum, mask);
        mask >>= 1;
    }
    let mut acc = [0f32; W];
    let mut s0 = 0;
    while s0 < splits {
        let mut m8 = [NEG_INF; 8];
        let mut v8 = [[0f32; W]; 8];
        unroll!(8, |k| {
            if s0 + k < splits {
                // SAFETY: see the block comment above (indices inside the host-checked workspace / shared tiles).
                m8[k] = unsafe { F32::load(stats, 2 * (s0 + k)) };
                // SAFETY: see the block comment above (indices inside the host-checked workspace / shared tiles).
                v8[k] = unsafe { load_w::<F32, W>(accs.add((s0 + k) * d * 4), lane, true) };
            }
        });
        unroll!(8, |k| {
            let wt = frag::partial_weight(m8[k], mx, exp2_approx);
            if wt != 0.0 {
                for c in 0..W {
                    acc[c] += wt * v8[k][c];
                }
            }
        });
        s0 += 8;
    }
    let inv = if lsum > 0.0 { 1.0 / lsum } else { 0.0 };
    let out = p.out.as_mut_ptr::<u8>().wrapping_add((b * p.out_seq_stride as usize + h * d) * 2);
    // SAFETY: inside out (host-checked); aligned to `W × 2` bytes (stride multiple of 8).
    unsafe { store_w::<E, W>(out, lane, acc.map(|v| v * inv)) };
}

#[inline(always)]
unsafe fn merge_entry<E: KvElem>(p: AttentionMergeParams) {
    // SAFETY: as for `merge`.
    unsafe {
        match p.head_dim {
            64 => merge::<E, 2>(&p),
            128 => merge::<E, 4>(&p),
            _ => {}
        }
    }
}

/// Copies K and V rows of each token into their pages, `W` 16-bit elements per access (8 on
/// the vector path, 1 on the scalar one). Bit-exact copy: the element type does not matter.
#[inline(always)]
unsafe fn kv_append_w<const W: usize>(p: &KvAppendParams) {
    let d = p.head_dim as usize;
    let per_head = d / W;
    let per_token = p.num_kv_heads as usize * per_head;
    let total = p.num_tokens as usize * per_token;
    let stride = (arch::block_dim() * arch::grid_dim()) as usize;
    let mut idx = (arch::block_idx() * arch::block_dim() + arch::thread_idx()) as usize;
    let (k, v) = (p.k.as_ptr::<u8>(), p.v.as_ptr::<u8>());
    let (kp, vp) = (p.k_pool.as_mut_ptr::<u8>(), p.v_pool.as_mut_ptr::<u8>());
    while idx < total {
        let (t, rem) = (idx / per_token, idx % per_token);
        let (h, c) = (rem / per_head, rem % per_head);
        idx += stride;
        // SAFETY: `t < num_tokens`: seq_idx and positions hold one u32 per token.
        let (seq, pos) = unsafe { (ld_u32_nc(p.seq_idx.as_ptr::<u32>().add(t)), ld_u32_nc(p.positions.as_ptr::<u32>().add(t))) };
        let page_index = pos / p.tokens_per_block;
        if seq >= p.batch || page_index >= p.max_blocks_per_seq {
            continue;
        }
        // SAFETY: `seq < batch`, `page_index < max_blocks_per_seq`: inside the table.
        let block = unsafe { ld_u32_nc(p.block_tables.as_ptr::<u32>().add(seq as usize * p.max_blocks_per_seq as usize + page_index as usize)) };
        if block >= p.num_blocks {
            continue;
        }
        let row = paged::pool_row(block, h as u32, pos % p.tokens_per_block, p.num_kv_heads, p.tokens_per_block) as usize;
        let dst = row * d * 2 + c * W * 2;
        let (ks, vs) = ((t * p.k_token_stride as usize + h * d) * 2 + c * W * 2, (t * p.v_token_stride as usize + h * d) * 2 + c * W * 2);
        // SAFETY: `block < num_blocks`, `h < num_kv_heads`, slot `< tokens_per_block`: inside
        // the pools; sources inside k/v (host-checked); vector path only when aligned.
        unsafe {
            if W == 8 {
                st_v4(kp.add(dst), ld_v4(k.add(ks), true));
                st_v4(vp.add(dst), ld_v4(v.add(vs), true));
            } else {
                *(kp.add(dst) as *mut u16) = *(k.add(ks) as *const u16);
                *(vp.add(dst) as *mut u16) = *(v.add(vs) as *const u16);
            }
        }
    }
}

#[inline(always)]
unsafe fn kv_append(p: KvAppendParams) {
    let vec = (p.head_dim | p.k_token_stride | p.v_token_stride) % 8 == 0 && aligned16(&[p.k.0, p.v.0, p.k_pool.0, p.v_pool.0]);
    // SAFETY: the vector path only on 16-byte aligned rows.
    unsafe {
        if vec { kv_append_w::<8>(&p) } else { kv_append_w::<1>(&p) }
    }
}

entry!(kv_append_f16, KvAppendParams, |p| kv_append(p));
entry!(kv_append_bf16, KvAppendParams, |p| kv_append(p));
entry!(decode_attention_d64_f16, DecodeAttentionParams, |p: DecodeAttentionParams| decode_attention::<F16, 64, 4, 2, 1, 8>(&p));
entry!(decode_attention_d128_f16, DecodeAttentionParams, |p: DecodeAttentionParams| decode_attention::<F16, 128, 8, 4, 2, 16>(&p));
entry!(decode_attention_d64_bf16, DecodeAttentionParams, |p: DecodeAttentionParams| decode_attention::<Bf16, 64, 4, 2, 1, 8>(&p));
entry!(decode_attention_d128_bf16, DecodeAttentionParams, |p: DecodeAttentionParams| decode_attention::<Bf16, 128, 8, 4, 2, 16>(&p));
entry!(decode_attention_merge_f16, AttentionMergeParams, |p| merge_entry::<F16>(p));
entry!(decode_attention_merge_bf16, AttentionMergeParams, |p| merge_entry::<Bf16>(p));
