//! Paged context FMHA: causal flash attention of the new (prefill) tokens of a batch of
//! sequences over their K/V in the paged pools, read through the block table, so that a
//! reused prefix and the earlier chunks of a chunked context are attended.
//!
//! Layout, specialisations and the rules for invalid ids: `kernel_abi::paged`; parameters:
//! `kernel_abi::ContextAttentionParams`. Shared-memory layout and per-lane fragment math:
//! `kernel_math::fmha` (checked there by a CPU emulation of `ldmatrix` and `mma.sync`).
//!
//! One CTA (4 warps) per (query head, sequence, tile of 64 query tokens); each warp owns 16
//! query rows. Q is staged once through shared memory into registers (`ldmatrix`); then the
//! CTA walks the key tiles (64 keys) from the diagonal down to position 0. Per tile, K and V
//! are copied page by page into one swizzled shared buffer each with 16-byte `cp.async`
//! (a 16-key quarter of a tile always lies in one block: one table lookup per row), the
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
    kv_len: usize,
}

impl Seq {
    /// The block of key `key`, or `None` when its page is past the row or its id is invalid.
    #[inline(always)]
    fn block(&self, p: &ContextAttentionParams, key: usize) -> Option<u32> {
        let page = key >> p.tokens_per_block.trailing_zeros();
        if page >= p.max_blocks_per_seq as usize {
            return None;
        }
        // SAFETY: `page < max_blocks_per_seq`: inside row `b` of the table.
        let block = unsafe { ld_u32_nc(self.table.add(page)) };
        (block < p.num_blocks).then_some(block)
    }

    /// Bit `q` set when keys `t0 + 16 q .. + 16` lie in a valid block (`q < 4`).
    #[inline(always)]
    fn quarter_mask(&self, p: &ContextAttentionParams, t0: usize) -> u32 {
        let mut m = 0;
        unroll!(4, |q| {
            if self.block(p, t0 + 16 * q).is_some() {
                m |= 1 << q;
            }
        });
        m
    }
}

/// Issues the `cp.async` copies of the 64 rows of K or V (`pool`) for keys `t0 ..` into the
/// swizzled tile at shared address `dst`; rows of invalid keys are zero-filled.
#[inline(always)]
unsafe fn load_kv_tile<const D: usize>(p: &ContextAttentionParams, seq: &Seq, pool: *const u8, dst: u32, t0: usize, tid: usize) {
    let chunks = D / 8;
    let rows_per_pass = THREADS / chunks;
    let (chunk, r0) = (tid % chunks, tid / chunks);
    let tpb = p.tokens_per_block as usize;
    unroll!(KT * chunks / THREADS, |i| {
        let r = r0 + i * rows_per_pass;
        let key = t0 + r;
        let mut src = pool;
        let mut ok = false;
        if key < seq.kv_len {
            if let Some(block) = seq.block(p, key) {
                let row = paged::pool_row(block, seq.kv_head, (key & (tpb - 1)) as u32, p.num_kv_heads, p.tokens_per_block) as usize;
                src = pool.wrapping_add((row * D + chunk * 8) * 2);
                ok = true;
            }
        }
        // SAFETY: `dst` is the tile (64 rows of `D`); `src` is inside the pool when `ok`
        // (valid block, slot < tokens_per_block, host-checked pool size), else the pool base.
        unsafe { cp_async_16(dst + fr::tile_offset(r, chunk, D) as u32, src, ok) };
    });
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
    let (h, b) = (arch::block_idx() as usize, arch::block_idx_y() as usize);
    let zt = arch::block_idx_z() as usize;
    // CTA-uniform guards (the host validated all of these; they keep a bad launch in bounds).
    if h >= p.num_heads as usize || b >= p.batch as usize || zt >= p.num_q_tiles as usize || !matches!(p.tokens_per_block, 16 | 32 | 64 | 128) {
        return;
    }
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
    let seq = Seq {
        table: p.block_tables.as_ptr::<u32>().wrapping_add(b * p.max_blocks_per_seq as usize),
        kv_head: (h / group) as u32,
        kv_len: (start + new).min(p.max_blocks_per_seq as usize * p.tokens_per_block as usize),
    };
    // Keys the CTA's last row sees; tiles past them are fully masked and never visited.
    let kv_end = (start + m0 + rows).min(seq.kv_len);
    let n_tiles = kv_end.div_ceil(KT);

    let tid = arch::thread_idx() as usize;
    let (warp, lane) = (tid / 32, tid % 32);
    let (g, tq) = (lane / 4, lane % 4);
    let tiles = shared_addr(&raw const TILES);
    let (ks_addr, vs_addr) = (tiles, tiles + (KT * D * 2) as u32);
    let (kp, vp) = (p.k_pool.as_ptr::<u8>(), p.v_pool.as_ptr::<u8>());

    // Prologue: Q (into the V buffer) and the first K tile in flight, then Q to registers.
    // SAFETY: shared destinations inside TILES; sources as documented by the loaders.
    unsafe {
        load_q_tile::<D>(p, h, q_off + m0, rows, vs_addr, tid);
        cp_async_commit();
        if n_tiles > 0 {
            load_kv_tile::<D>(p, &seq, kp, ks_addr, (n_tiles - 1) * KT, tid);
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
    let row_g = m0 + 16 * warp + g;
    let lim = [(start + row_g + 1).min(seq.kv_len), (start + row_g + 9).min(seq.kv_len)];
    // Keys every row of the CTA may see (a tile ending at or before this needs no causal mask).
    let cta_lim = (start + m0 + 1).min(seq.kv_len);
    let mut o = [[0f32; 4]; NJ];
    let (mut m, mut l) = ([NEG_INF; 2], [0f32; 2]);
    let mut it = 0;
    while it < n_tiles {
        let t0 = (n_tiles - 1 - it) * KT;
        // SAFETY: V tile into its buffer (free: the previous P·V ended with a barrier).
        unsafe {
            load_kv_tile::<D>(p, &seq, vp, vs_addr, t0, tid);
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

        // Mask (only tiles touching the diagonal, the end, or an invalid block), then the
        // online softmax in base 2 on rows g (registers 0, 1) and g + 8 (2, 3).
        let quarters = seq.quarter_mask(p, t0);
        let full = quarters == 0xf && t0 + KT <= cta_lim;
        let mut tmax = [NEG_INF; 2];
        unroll!(8, |nt| {
            unroll!(4, |c| {
                let key = t0 + fr::s_key(nt, tq, c);
                let ok = full || (key < lim[c / 2] && quarters & (1 << (nt / 2)) != 0);
                let x = if ok { s[nt][c] * p.scale_log2 } else { NEG_INF };
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
            if it + 1 < n_tiles {
                load_kv_tile::<D>(p, &seq, kp, ks_addr, t0 - KT, tid);
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
        it += 1;
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
