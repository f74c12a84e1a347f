//! Paged context FMHA: causal flash attention of the new (prefill) tokens of a batch of
//! sequences over their K/V in the paged pools, read through the block table, so that a
//! reused prefix and the earlier chunks of a chunked context are attended.
//!
//! Layout, specialisations and the rules for invalid ids: `kernel_abi::paged`; parameters:
//! `kernel_abi::ContextAttentionParams`. Shared-memory layout and per-lane fragment math:
//! `kernel_math::fmha` (checked there by a CPU emulation of `ldmatrix` and `mma.sync`).
//!
//! One CTA (4 warps) per (query head, sequence, tile of 64 query tokens), in the order of
//! `kernel_abi::paged::context_cta` (groups of (head, sequence) pairs whose K/V stay in L2,
//! longest tiles first); each warp owns 16 query rows. Q is staged once through shared
//! memory into registers (`ldmatrix`); then the CTA walks the key tiles (64 keys) from the
//! diagonal down to position 0. Per tile, K and V
//! are copied page by page into one swizzled shared buffer each with 16-byte `cp.async`
//! (a 16-key quarter of a tile always lies in one block: four table lookups per tile, issued
//! a half tile before their use, and one 64-bit pool offset per quarter per thread), the
//! loads overlapping the math FlashAttention-2 style: V of tile `j` streams in while
//! `S = Q·Kᵀ` runs, K of tile `j - 1` while `O += P·V` runs. `S` comes from `ldmatrix.x4` +
//! `mma.sync.m16n8k16`, the online softmax runs in base 2 in f32 (`ex2.approx`), the
//! accumulators become `P·V`'s A operand in registers, and `V` is read with
//! `ldmatrix.x4.trans`.
//!
//! Masking: key `k` is valid for query row `i` when `k <= start + i`, `k < start + new`
//! (clamped to the table row) and its block id is below `num_blocks`. Invalid rows of K/V
//! are zero-filled by `cp.async` without reading the pools (so a NaN in an unused slot never
//! meets a zero probability), and their scores are `-inf`. Tiles entirely below the diagonal
//! with every block valid skip the mask arithmetic; tiles entirely above it are never
//! visited.

use crate::arch::{self, exp2_approx, ld_u32_nc, shfl_xor, sync_threads};
use crate::attention::{mma, unroll, KvElem};
use crate::dtype::{Bf16, F16};
use crate::elementwise::entry;
use core::arch::asm;
use kernel_abi::paged::{self, CONTEXT_KV_TILE, CONTEXT_Q_TILE, CONTEXT_THREADS};
use kernel_abi::ContextAttentionParams;
use kernel_math::attention::{online_step, p_a};
use kernel_math::fmha as fr;

const QT: usize = CONTEXT_Q_TILE as usize;
const KT: usize = CONTEXT_KV_TILE as usize;
const THREADS: usize = CONTEXT_THREADS as usize;
const NEG_INF: f32 = f32::NEG_INFINITY;
/// Bytes of one 64-row tile of head_dim 128 (the largest supported).
const TILE_BYTES: usize = KT * 128 * 2;

/// The K tile (first half) and the V tile (second half; it holds Q before the first V).
#[repr(C, align(128))]
struct Tiles([u8; 2 * TILE_BYTES]);

#[unsafe(link_section = ".nvptx.shared")]
static mut TILES: Tiles = Tiles([0; 2 * TILE_BYTES]);

/// The shared-window (32-bit) address of a shared-memory object.
#[inline(always)]
fn shared_addr<T>(p: *const T) -> u32 {
    let r: u64;
    // SAFETY: an address conversion, no memory access.
    unsafe { asm!("cvta.to.shared.u64 {0}, {1};", out(reg64) r, in(reg64) p as u64, options(pure, nomem, nostack, preserves_flags)) };
    r as u32
}

/// `cp.async.cg` of 16 bytes from global `src` to shared `dst`; with `valid == false` the
/// destination is zero-filled and `src` is not read.
///
/// # Safety
/// `dst` is a 16-byte aligned shared address; `src` is a 16-byte aligned global address,
/// with 16 readable bytes when `valid`.
#[inline(always)]
unsafe fn cp_async_16(dst: u32, src: *const u8, valid: bool) {
    let bytes: u32 = if valid { 16 } else { 0 };
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("cp.async.cg.shared.global [{0}], [{1}], 16, {2};", in(reg32) dst, in(reg64) src, in(reg32) bytes, options(nostack, preserves_flags)) };
}

/// Closes the group of `cp.async` copies issued since the last commit.
#[inline(always)]
fn cp_async_commit() {
    // SAFETY: no operands.
    unsafe { asm!("cp.async.commit_group;", options(nostack, preserves_flags)) };
}

/// Waits until at most one committed `cp.async` group of this thread is pending.
#[inline(always)]
fn cp_async_wait1() {
    // SAFETY: waits on this thread's own copies; not `nomem`, so shared reads stay after it.
    unsafe { asm!("cp.async.wait_group 1;", options(nostack, preserves_flags)) };
}

/// Waits until every committed `cp.async` group of this thread has landed.
#[inline(always)]
fn cp_async_wait0() {
    // SAFETY: as for `cp_async_wait1`.
    unsafe { asm!("cp.async.wait_group 0;", options(nostack, preserves_flags)) };
}

/// `ldmatrix.x4` (`.trans` when `TRANS`): four 8 × 8 16-bit matrices from shared memory.
///
/// # Safety
/// `addr` is a 16-byte aligned shared address with 16 readable bytes; the whole warp
/// executes this converged. Not `readonly`, so it is never hoisted above the barrier that
/// publishes the `cp.async` data it reads.
#[inline(always)]
unsafe fn ldmatrix_x4<const TRANS: bool>(addr: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: guaranteed by the caller.
    unsafe {
        if TRANS {
            asm!("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{{0}, {1}, {2}, {3}}}, [{4}];",
                out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, options(nostack, preserves_flags));
        } else {
            asm!("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{0}, {1}, {2}, {3}}}, [{4}];",
                out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, options(nostack, preserves_flags));
        }
    }
    [a, b, c, d]
}

/// The CTA's sequence: where its K/V live and which keys are readable.
struct Seq {
    /// Row `b` of the block table.
    table: *const u32,
    kv_head: u32,
    /// Keys `0 .. kv_len` exist (`start + new`, clamped to the table row).
    kv_len: u32,
}

/// Where one K/V tile's rows come from, for this thread's rows of the tile (see
/// [`Loader`]): per 16-key quarter the byte offset in a pool of the thread's first row of
/// that quarter (its chunk included; 0 for an invalid quarter), and validity bits.
#[derive(Clone, Copy)]
struct TileSrc {
    off: [u64; 4],
    /// Bit `i`: the thread's row `i` (`r0 + i · rows_per_pass`) holds a readable key.
    rows: u32,
    /// Bit `q`: keys `16 q .. 16 q + 16` of the tile lie in a valid block (the score mask).
    quarters: u32,
}

/// This thread's share of a 64-row tile copy: rows `r0 + i · rows_per_pass` (`i <
/// KT / rows_per_pass`), 16-byte chunk `chunk` of each. Since `rows_per_pass` is 8 or 16,
/// row `r0 + i · rows_per_pass` lies in quarter `i · rows_per_pass / 16` of the tile, at
/// `(i · rows_per_pass) % 16` rows past the thread's first row of that quarter, and its
/// swizzled chunk position equals row `r0`'s.
#[derive(Clone, Copy)]
struct Loader<const D: usize> {
    r0: u32,
    chunk: u32,
}

impl<const D: usize> Loader<D> {
    const CHUNKS: usize = D / 8;
    const RPP: usize = THREADS / Self::CHUNKS;
    const ROWS: usize = KT / Self::RPP;
    const CHECK: () = assert!(Self::RPP % 8 == 0 && Self::RPP <= 16 && 16 % Self::RPP == 0 && Self::ROWS <= 8);

    #[inline(always)]
    fn new(tid: usize) -> Self {
        let () = Self::CHECK;
        Loader { r0: (tid / Self::CHUNKS) as u32, chunk: (tid % Self::CHUNKS) as u32 }
    }

    /// The block ids of the four quarters of the tile at key `t0` (`u32::MAX`, an invalid
    /// id, for quarters starting at or past `kv_len`). Issued well before their use, so the
    /// four independent loads' latency is hidden.
    #[inline(always)]
    fn ids(&self, p: &ContextAttentionParams, seq: &Seq, t0: u32) -> [u32; 4] {
        let shift = p.tokens_per_block.trailing_zeros();
        let mut ids = [u32::MAX; 4];
        unroll!(4, |q| {
            let key = t0 + 16 * q as u32;
            if key < seq.kv_len {
                // SAFETY: `key < kv_len <= max_blocks_per_seq · tokens_per_block`, so its page
                // is inside row `b` of the table.
                ids[q] = unsafe { ld_u32_nc(seq.table.add((key >> shift) as usize)) };
            }
        });
        ids
    }

    /// The sources of the tile at key `t0` whose quarters' block ids are `ids`.
    #[inline(always)]
    fn src(&self, p: &ContextAttentionParams, seq: &Seq, ids: [u32; 4], t0: u32) -> TileSrc {
        let tpb = p.tokens_per_block;
        let mut off = [0u64; 4];
        let mut quarters = 0u32;
        unroll!(4, |q| {
            // A quarter lies in one block (tokens_per_block is a multiple of 16).
            let slot = ((t0 + 16 * q as u32) & (tpb - 1)) + self.r0;
            if ids[q] < p.num_blocks {
                off[q] = paged::pool_row(ids[q], seq.kv_head, slot, p.num_kv_heads, tpb) * (D as u64 * 2) + self.chunk as u64 * 16;
                quarters |= 1 << q;
            }
        });
        let mut rows = 0u32;
        unroll!(Self::ROWS, |i| {
            let q = i * Self::RPP / 16;
            if quarters & (1 << q) != 0 && t0 + self.r0 + ((i * Self::RPP) as u32) < seq.kv_len {
                rows |= 1 << i;
            }
        });
        TileSrc { off, rows, quarters }
    }

    /// Issues the `cp.async` copies of this thread's rows of a K or V tile from `pool` into
    /// the swizzled tile at shared address `dst`; rows of unreadable keys are zero-filled.
    ///
    /// # Safety
    /// `dst` is a 64-row tile of `D` in shared memory; `src` was built by [`Self::src`] for a
    /// pool with this geometry.
    #[inline(always)]
    unsafe fn load(&self, pool: *const u8, src: &TileSrc, dst: u32) {
        let dst0 = dst + fr::tile_offset(self.r0 as usize, self.chunk as usize, D) as u32;
        unroll!(Self::ROWS, |i| {
            let q = i * Self::RPP / 16;
            let row_off = (i * Self::RPP) % 16 * D * 2;
            let ok = src.rows & (1 << i) != 0;
            let from = pool.wrapping_add(src.off[q] as usize + row_off);
            // SAFETY: row `r0 + i · RPP` of the tile (same swizzle as row `r0`). When `ok`,
            // `from` is that key's row in a valid block of the pool (host-checked size);
            // otherwise nothing is read (source size 0) and the row is zero-filled.
            unsafe { cp_async_16(dst0 + (i * Self::RPP * D * 2) as u32, from, ok) };
        });
    }
}

/// Issues the copies of the CTA's 64 query rows (head `h`, first row `row0` of `q`, `rows`
/// of them valid) into the tile at `dst`; rows past `rows` are zero-filled.
#[inline(always)]
unsafe fn load_q_tile<const D: usize>(p: &ContextAttentionParams, h: usize, row0: usize, rows: usize, dst: u32, tid: usize) {
    let chunks = D / 8;
    let rows_per_pass = THREADS / chunks;
    let (chunk, r0) = (tid % chunks, tid / chunks);
    let q = p.q.as_ptr::<u8>();
    unroll!(QT * chunks / THREADS, |i| {
        let r = r0 + i * rows_per_pass;
        let ok = r < rows;
        let src = if ok { q.wrapping_add(((row0 + r) * p.q_token_stride as usize + h * D + chunk * 8) * 2) } else { q };
        // SAFETY: rows below `rows` are inside q (host-checked, stride a multiple of 8, so
        // 16-byte aligned); other rows are zero-filled without reading.
        unsafe { cp_async_16(dst + fr::tile_offset(r, chunk, D) as u32, src, ok) };
    });
}

/// `D` = head_dim, `KS = D / 16` k-steps of Q·Kᵀ, `NJ = D / 8` output n-tiles.
#[inline(always)]
unsafe fn context_attention<E: KvElem, const D: usize, const KS: usize, const NJ: usize>(p: &ContextAttentionParams) {
    // CTA-uniform guards (the host validated all of these; they keep a bad launch in bounds).
    let cta = arch::block_idx();
    if p.num_q_tiles == 0 || cta / p.num_q_tiles >= p.num_heads * p.batch || !matches!(p.tokens_per_block, 16 | 32 | 64 | 128) {
        return;
    }
    let (h, b, zt) = paged::context_cta(cta, p.num_heads, p.batch, p.num_q_tiles, p.cta_group);
    let (h, b, zt) = (h as usize, b as usize, zt as usize);
    let group = (p.num_heads / p.num_kv_heads.max(1)).max(1) as usize;
    let m0 = (p.num_q_tiles as usize - 1 - zt) * QT;
    // SAFETY: `b < batch`; the three arrays hold `batch` u32 each.
    let (q_off, new, start) = unsafe { (ld_u32_nc(p.q_offsets.as_ptr::<u32>().add(b)) as usize, ld_u32_nc(p.new_tokens.as_ptr::<u32>().add(b)) as usize, ld_u32_nc(p.start_pos.as_ptr::<u32>().add(b)) as usize) };
    // Tokens past total_tokens are neither read nor written.
    let new = new.min((p.total_tokens as usize).saturating_sub(q_off));
    if m0 >= new {
        return;
    }
    let rows = (new - m0).min(QT);
    // Positions are u32 from here on (the host bounds them by u32 `start_pos` + `new_tokens`;
    // clamped well below 2^32 so that `t0 + 64` never wraps).
    let row_tokens = p.max_blocks_per_seq as usize * p.tokens_per_block as usize;
    let seq = Seq {
        table: p.block_tables.as_ptr::<u32>().wrapping_add(b * p.max_blocks_per_seq as usize),
        kv_head: (h / group) as u32,
        kv_len: (start + new).min(row_tokens).min(u32::MAX as usize - 2 * KT) as u32,
    };
    let (start, m0u) = (start as u32, m0 as u32);
    // Keys the CTA's last row sees; tiles past them are fully masked and never visited.
    let kv_end = (start + m0u + rows as u32).min(seq.kv_len);
    let n_tiles = kv_end.div_ceil(KT as u32);

    let tid = arch::thread_idx() as usize;
    let (warp, lane) = (tid / 32, tid % 32);
    let (g, tq) = (lane / 4, lane % 4);
    let tiles = shared_addr(&raw const TILES);
    let (ks_addr, vs_addr) = (tiles, tiles + (KT * D * 2) as u32);
    let (kp, vp) = (p.k_pool.as_ptr::<u8>(), p.v_pool.as_ptr::<u8>());
    let ld = Loader::<D>::new(tid);

    // Prologue: Q (into the V buffer) and the first K tile in flight, then Q to registers.
    // `cur` is the source of the tile whose V is loaded next (its K is already in flight).
    let t_last = n_tiles.saturating_sub(1) * KT as u32;
    let mut cur = ld.src(p, &seq, ld.ids(p, &seq, t_last), t_last);
    // SAFETY: shared destinations inside TILES; sources as documented by the loaders.
    unsafe {
        load_q_tile::<D>(p, h, q_off + m0, rows, vs_addr, tid);
        cp_async_commit();
        if n_tiles > 0 {
            ld.load(kp, &cur, ks_addr);
        }
        cp_async_commit();
        cp_async_wait1();
    }
    sync_threads();
    let mut qa = [[0u32; 4]; KS];
    unroll!(KS, |ks| {
        let (r, c) = fr::q_lane_row_chunk(lane, ks);
        // SAFETY: inside the Q tile, published by the barrier above.
        qa[ks] = unsafe { ldmatrix_x4::<false>(vs_addr + fr::tile_offset(16 * warp + r, c, D) as u32) };
    });
    sync_threads();

    // Row limits (exclusive key bounds) of this lane's rows g and g + 8.
    let row_g = m0u + (16 * warp + g) as u32;
    let lim = [(start + row_g + 1).min(seq.kv_len), (start + row_g + 9).min(seq.kv_len)];
    // Keys every row of the CTA may see (a tile ending at or before this needs no causal mask).
    let cta_lim = (start + m0u + 1).min(seq.kv_len);
    let mut o = [[0f32; 4]; NJ];
    let (mut m, mut l) = ([NEG_INF; 2], [0f32; 2]);
    let mut t0 = t_last;
    let mut left = n_tiles;
    while left > 0 {
        let more = left > 1;
        // The next tile's block ids, loaded now and used after S (their latency hidden).
        let next_ids = if more { ld.ids(p, &seq, t0 - KT as u32) } else { [u32::MAX; 4] };
        // SAFETY: V tile into its buffer (free: the previous P·V ended with a barrier).
        unsafe {
            ld.load(vp, &cur, vs_addr);
            cp_async_commit();
            cp_async_wait1();
        }
        sync_threads();

        // S = Q·Kᵀ for the warp's 16 rows × 64 keys.
        let mut s = [[0f32; 4]; 8];
        unroll!(KS, |ks| {
            unroll!(4, |np| {
                let (r, c) = fr::k_lane_row_chunk(lane, np, ks);
                // SAFETY: inside the K tile, published by the barrier above.
                let kb = unsafe { ldmatrix_x4::<false>(ks_addr + fr::tile_offset(r, c, D) as u32) };
                mma::<E>(&mut s[2 * np], &qa[ks], &[kb[0], kb[1]]);
                mma::<E>(&mut s[2 * np + 1], &qa[ks], &[kb[2], kb[3]]);
            });
        });

        // Mask (a warp-uniform branch, taken only by tiles touching the diagonal, the end, or
        // an invalid block), then the online softmax in base 2 on rows g (registers 0, 1) and
        // g + 8 (2, 3).
        if !(cur.quarters == 0xf && t0 + (KT as u32) <= cta_lim) {
            unroll!(8, |nt| {
                unroll!(4, |c| {
                    let key = t0 + fr::s_key(nt, tq, c) as u32;
                    if !(key < lim[c / 2] && cur.quarters & (1 << (nt / 2)) != 0) {
                        s[nt][c] = NEG_INF;
                    }
                });
            });
        }
        let mut tmax = [NEG_INF; 2];
        unroll!(8, |nt| {
            unroll!(4, |c| {
                let x = s[nt][c] * p.scale_log2;
                s[nt][c] = x;
                tmax[c / 2] = tmax[c / 2].max(x);
            });
        });
        let mut base = [0f32; 2];
        let mut alpha = [0f32; 2];
        unroll!(2, |r| {
            tmax[r] = tmax[r].max(shfl_xor(tmax[r], 1));
            tmax[r] = tmax[r].max(shfl_xor(tmax[r], 2));
            (m[r], base[r], alpha[r]) = online_step(m[r], tmax[r], exp2_approx);
            l[r] *= alpha[r];
        });
        unroll!(8, |nt| {
            unroll!(4, |c| {
                let pv = exp2_approx(s[nt][c] - base[c / 2]);
                s[nt][c] = pv;
                l[c / 2] += pv;
            });
        });
        unroll!(NJ, |j| {
            o[j][0] *= alpha[0];
            o[j][1] *= alpha[0];
            o[j][2] *= alpha[1];
            o[j][3] *= alpha[1];
        });
        let mut pa = [[0u32; 4]; 4];
        unroll!(4, |kk| {
            pa[kk] = p_a(&s[2 * kk], &s[2 * kk + 1], E::pack2);
        });

        // The K buffer is free: start the next tile's K, then wait for this tile's V.
        sync_threads();
        // SAFETY: K tile into its buffer (no warp reads it any more).
        unsafe {
            if more {
                t0 -= KT as u32;
                cur = ld.src(p, &seq, next_ids, t0);
                ld.load(kp, &cur, ks_addr);
                cp_async_commit();
                cp_async_wait1();
            } else {
                cp_async_wait0();
            }
        }
        sync_threads();

        // O += P·V.
        unroll!(4, |kk| {
            unroll!(NJ / 2, |jp| {
                let (r, c) = fr::v_lane_row_chunk(lane, kk, jp);
                // SAFETY: inside the V tile, published by the barrier above.
                let vb = unsafe { ldmatrix_x4::<true>(vs_addr + fr::tile_offset(r, c, D) as u32) };
                mma::<E>(&mut o[2 * jp], &pa[kk], &[vb[0], vb[1]]);
                mma::<E>(&mut o[2 * jp + 1], &pa[kk], &[vb[2], vb[3]]);
            });
        });
        sync_threads();
        left -= 1;
    }

    // Row sums over the four lanes of a row, then the normalised rows to out.
    unroll!(2, |r| {
        l[r] += shfl_xor(l[r], 1);
        l[r] += shfl_xor(l[r], 2);
    });
    let out = p.out.as_mut_ptr::<u8>();
    unroll!(2, |half| {
        let row = 16 * warp + g + 8 * half;
        if row < rows {
            let inv = if l[half] > 0.0 { 1.0 / l[half] } else { 0.0 };
            let base = out.wrapping_add(((q_off + m0 + row) * p.out_token_stride as usize + h * D) * 2);
            unroll!(NJ, |j| {
                let w = E::pack2(o[j][2 * half] * inv, o[j][2 * half + 1] * inv);
                // SAFETY: row `q_off + m0 + row < total_tokens`, head `h < num_heads`: inside
                // out (host-checked); 4-byte aligned (even column, stride a multiple of 8).
                unsafe { st_u32(base.add(fr::o_col(j, tq, 0) * 2), w) };
            });
        }
    });
}

/// 4-byte store to global memory.
///
/// # Safety
/// `p` is a 4-byte aligned global address with 4 writable bytes.
#[inline(always)]
unsafe fn st_u32(p: *mut u8, v: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("st.global.u32 [{0}], {1};", in(reg64) p, in(reg32) v, options(nostack, preserves_flags)) };
}

entry!(context_attention_d64_f16, ContextAttentionParams, |p: ContextAttentionParams| context_attention::<F16, 64, 4, 8>(&p));
entry!(context_attention_d128_f16, ContextAttentionParams, |p: ContextAttentionParams| context_attention::<F16, 128, 8, 16>(&p));
entry!(context_attention_d64_bf16, ContextAttentionParams, |p: ContextAttentionParams| context_attention::<Bf16, 64, 4, 8>(&p));
entry!(context_attention_d128_bf16, ContextAttentionParams, |p: ContextAttentionParams| context_attention::<Bf16, 128, 8, 16>(&p));
