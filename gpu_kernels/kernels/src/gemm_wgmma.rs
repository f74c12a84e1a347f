//! Hopper (sm_90a) GEMM on warpgroup MMA: `out = x · wᵀ (+ bias) (+ residual)` and the
//! fused MLP gate/up `out = silu(x · w_gᵀ) * (x · w_uᵀ)`, bf16/f16 in, f32 accumulation, one
//! rounding on store: the same contract as `crate::gemm` (`kernel_abi::gemm`, path `wgmma`).
//! Compiled only into the sm_90a PTX (ptxas rejects `wgmma` for other targets).
//!
//! # Tiles and pipeline
//!
//! A CTA of 2 warpgroups (256 threads) owns a `128 × 128` output tile (gate/up: 64 output
//! columns, from 64 gate rows and the 64 matching up rows of `w`). `k` advances
//! [`BK`] = 64 elements (one 128-byte row per matrix row) at a time through [`STAGES`]
//! shared-memory stages of 128 `x` rows then 128 `w` rows, filled by `cp.async` (every
//! thread copies 4 + 4 chunks of 16 bytes per stage, zero-filled past `m`, `n` or `k`).
//! Rows are stored with the 128-byte swizzle the tensor cores read (16-byte chunk `c` of
//! row `r` at chunk `c ^ (r % 8)`, stages aligned to its 1024-byte period).
//!
//! Warpgroup `g` multiplies `x` rows `64 g ..` by all 128 `w` rows: four
//! `wgmma.mma_async.m64n128k16` per stage (operands from shared memory through matrix
//! descriptors; `k` steps of 16 are +32 bytes inside the swizzled rows), one commit group
//! per stage, at most one group in flight after the next is issued. The copy of stage
//! `t + STAGES - 2` is issued at step `t` into the slot of stage `t - 2`, which every
//! warpgroup finished reading before the barrier of step `t` (each waited for its group of
//! `t - 2` at the end of step `t - 1`). `cp.async` writes go through the generic proxy and
//! `wgmma` reads through the async proxy: each thread fences (`fence.proxy.async`) after its
//! copies land and before the barrier that publishes them.
//!
//! # Split `k` over a cluster
//!
//! Where the tiles alone would leave most SMs idle (`kernel_abi::gemm::wgmma_split`), the
//! host launches clusters of 2 or 4 CTAs per tile (`%cluster_nctarank`; 1 without clusters),
//! CTA `r` of a cluster multiplies its share of the `k` stages, and CTA 0 adds the others'
//! accumulators from their shared memory (distributed shared memory, `mapa` +
//! `ld.shared::cluster`) before the epilogue: no workspace, no second launch.
//!
//! # Accumulators
//!
//! 64 f32 per thread (`m64n128`, f32): warp `w` of the warpgroup holds rows `16 w ..`; its
//! register `4 j + 2 h + c` is row `16 w + lane / 4 + 8 h`, column `8 j + 2 (lane % 4) + c`
//! (the `mma.sync` C layout repeated over 16 column blocks). Gate/up: blocks `j < 8` are
//! gate columns, `j + 8` the matching up columns, in the same thread.
//!
//! The swizzle, descriptor and accumulator index math lives in `kernel_math::wgmma`, whose
//! tests emulate the tensor cores' reads of the layout.

use crate::arch;
use crate::arch::Libdevice;
use crate::dtype::{Bf16, F16};
use crate::elementwise::entry;
use crate::gemm::{dyn_smem_size, gemm_dyn_smem, Epilogue};
use crate::tensor_core::{cp_async_16, cp_async_commit, cp_async_wait, st_u32, unroll8};
use core::arch::asm;
use kernel_abi::gemm::{tile_smem_bytes, GemmPath, TILE_N, WGMMA_BK, WGMMA_STAGES, WGMMA_STAGE_BYTES, WGMMA_THREADS};
use kernel_abi::GemmParams;
use kernel_math::act::silu;
use kernel_math::gemm as gm;
use kernel_math::wgmma as kw;

/// Output rows per CTA (2 warpgroups × 64).
const BM: usize = 128;
/// Weight rows per CTA.
const BN: usize = TILE_N;
/// `k` per stage.
const BK: usize = WGMMA_BK;
/// Pipeline stages.
const STAGES: usize = WGMMA_STAGES;
/// Bytes per shared-memory row (one swizzle row).
const ROW: usize = BK * 2;
/// 16-byte chunks per row.
const CHUNKS: usize = ROW / 16;
const THREADS: usize = WGMMA_THREADS as usize;
/// Bytes of the `x` part of a stage.
const A_BYTES: usize = BM * ROW;
/// Rows between a thread's successive copies (the swizzle repeats every 8 rows).
const COPY_ROWS: usize = THREADS / CHUNKS;
/// Copies per thread, operand and stage.
const COPIES: usize = BM / COPY_ROWS;
/// The 1024-byte period of the 128-byte swizzle (stages start on it).
const SWIZZLE_PERIOD: u32 = kw::GROUP_BYTES as u32;

const _: () = assert!(ROW == kw::ROW_BYTES && BN == 128 && COPY_ROWS == 32 && COPIES == 4 && COPY_ROWS % 8 == 0);
const _: () = assert!(WGMMA_STAGE_BYTES == (BM + BN) * ROW && STAGES >= 3);
const _: () = assert!(tile_smem_bytes(GemmPath::Wgmma) as usize == STAGES * WGMMA_STAGE_BYTES + SWIZZLE_PERIOD as usize);
/// The split-k reduction's 64 KiB of accumulators fit in the stages.
const _: () = assert!(64 * 4 * THREADS <= STAGES * WGMMA_STAGE_BYTES);

/// `wgmma.fence`: orders this warpgroup's earlier register accesses before the next
/// `wgmma.mma_async`.
#[inline(always)]
fn wgmma_fence() {
    // SAFETY: no operands; executed by whole warpgroups (callers' duty). Not `nomem`/`pure`:
    // it must stay in place relative to the other wgmma and memory instructions.
    unsafe { asm!("wgmma.fence.sync.aligned;", options(nostack, preserves_flags)) };
}

/// Closes the group of `wgmma.mma_async` issued since the last commit.
#[inline(always)]
fn wgmma_commit() {
    // SAFETY: as for `wgmma_fence`.
    unsafe { asm!("wgmma.commit_group.sync.aligned;", options(nostack, preserves_flags)) };
}

/// Waits until at most `N` (0 or 1) committed wgmma groups of this warpgroup are pending.
#[inline(always)]
fn wgmma_wait<const N: usize>() {
    // SAFETY: as for `wgmma_fence`; not `nomem`, so no shared-memory access moves across it.
    unsafe {
        if N == 0 {
            asm!("wgmma.wait_group.sync.aligned 0;", options(nostack, preserves_flags));
        } else {
            asm!("wgmma.wait_group.sync.aligned 1;", options(nostack, preserves_flags));
        }
    }
}

/// Makes this thread's generic-proxy shared-memory writes (`cp.async`) visible to the async
/// proxy (`wgmma` operand reads) once a barrier publishes them.
#[inline(always)]
fn fence_proxy_async() {
    // SAFETY: a memory fence, no operands.
    unsafe { asm!("fence.proxy.async.shared::cta;", options(nostack, preserves_flags)) };
}

/// Pins each accumulator register at this point of the instruction stream (an empty
/// non-pure `asm!` that reads and writes it): no use of an accumulator is scheduled before
/// the `wgmma_wait` that completes it, and no write of one after the next `wgmma_fence`.
#[inline(always)]
fn pin_accumulators(acc: &mut [f32; 64]) {
    unroll8!(8, |hi| {
        unroll8!(8, |lo| {
            // SAFETY: a comment naming the register: no instruction.
            unsafe { asm!("/* {0} */", inout(reg32) acc[8 * hi + lo], options(nostack, preserves_flags)) };
        });
    });
}

/// This CTA's rank in its cluster and the cluster's size (0 and 1 for a launch without
/// clusters).
#[inline(always)]
fn cluster_rank_size() -> (usize, usize) {
    let (r, n): (u32, u32);
    // SAFETY: reads special registers.
    unsafe {
        asm!("mov.u32 {0}, %cluster_ctarank;", out(reg32) r, options(pure, nomem, nostack, preserves_flags));
        asm!("mov.u32 {0}, %cluster_nctarank;", out(reg32) n, options(pure, nomem, nostack, preserves_flags));
    }
    (r as usize, n as usize)
}

/// A barrier of every thread of every CTA of the cluster; shared-memory writes before it
/// (release) are visible to distributed shared-memory reads after it (acquire).
///
/// # Safety
/// Every thread of every CTA of the cluster executes it, converged per warp.
#[inline(always)]
unsafe fn cluster_sync() {
    // SAFETY: guaranteed by the caller; not `nomem`: it orders memory.
    unsafe { asm!("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;", options(nostack, preserves_flags)) };
}

/// 16-byte store of four f32 to this CTA's shared memory.
///
/// # Safety
/// `addr` is a 16-byte aligned shared address of 16 writable bytes.
#[inline(always)]
unsafe fn st_shared_v4(addr: u32, v: [f32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("st.shared.v4.f32 [{0}], {{{1}, {2}, {3}, {4}}};", in(reg32) addr, in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3], options(nostack, preserves_flags)) };
}

/// 16-byte load of four f32 from the shared memory of cluster CTA `rank` at the address
/// `addr` has in this CTA's window.
///
/// # Safety
/// `addr` is a 16-byte aligned shared address inside the dynamic shared memory; CTA `rank`
/// of the cluster exists, wrote those bytes before a [`cluster_sync`] this thread passed,
/// and does not exit before a later one.
#[inline(always)]
unsafe fn ld_cluster_v4(addr: u32, rank: usize) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    // SAFETY: guaranteed by the caller. Not `readonly`: it must stay after the barrier.
    unsafe {
        asm!(
            "{{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, {4}, {5};\nld.shared::cluster.v4.f32 {{{0}, {1}, {2}, {3}}}, [ra];\n}}",
            out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, in(reg32) rank as u32,
            options(nostack, preserves_flags)
        )
    };
    [a, b, c, d]
}

/// Split-`k` reduction over a cluster: CTAs `1 ..` of the cluster put their accumulators in
/// their own shared memory (`[register / 4][thread]` × 16 bytes: 64 KiB, inside the
/// pipeline's stages, which every warpgroup has finished reading), CTA 0 adds them to its
/// own; it alone stores the tile.
///
/// # Safety
/// Every thread of every CTA of the cluster calls it, after its last `wgmma_wait::<0>()` and
/// `cp_async_wait(0)`; `smem` is the stages' base with at least 64 KiB behind it.
#[inline(always)]
unsafe fn reduce_cluster(acc: &mut [f32; 64], smem: u32, rank: usize, size: usize) {
    let tid = arch::thread_idx() as usize;
    let at = |q: usize| smem + ((q * THREADS + tid) * 16) as u32;
    arch::sync_threads();
    if rank != 0 {
        unroll8!(8, |qh| {
            unroll8!(2, |ql| {
                let q = 2 * qh + ql;
                // SAFETY: q < 16, tid < 256: inside the first 64 KiB of the stages.
                unsafe { st_shared_v4(at(q), [acc[4 * q], acc[4 * q + 1], acc[4 * q + 2], acc[4 * q + 3]]) };
            });
        });
    }
    // SAFETY: every thread of the cluster calls this function (caller's contract).
    unsafe { cluster_sync() };
    if rank == 0 {
        let mut r = 1;
        while r < size {
            unroll8!(8, |qh| {
                unroll8!(2, |ql| {
                    let q = 2 * qh + ql;
                    // SAFETY: CTA r wrote these bytes before the barrier above and waits at
                    // the one below before exiting.
                    let v = unsafe { ld_cluster_v4(at(q), r) };
                    unroll8!(4, |c| {
                        acc[4 * q + c] += v[c];
                    });
                });
            });
            r += 1;
        }
    }
    // SAFETY: as above; keeps every CTA's shared memory alive until CTA 0 has read it.
    unsafe { cluster_sync() };
}

/// One `wgmma.mma_async.m64n128k16` (f32 += `$ty` × `$ty`, both operands K-major in shared
/// memory, scale-d = 1: accumulate).
macro_rules! wgmma_m64n128k16 {
    ($ty:literal, $d:ident, $da:expr, $db:expr) => {
        asm!(
            concat!(
                "{{\n.reg .pred p;\nsetp.ne.b32 p, {66}, 0;\n",
                "wgmma.mma_async.sync.aligned.m64n128k16.f32.", $ty, ".", $ty, " {{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}}}, {64}, {65}, p, 1, 1, 0, 0;\n}}"
            ),
                inout(reg32) $d[0], inout(reg32) $d[1], inout(reg32) $d[2], inout(reg32) $d[3], inout(reg32) $d[4], inout(reg32) $d[5], inout(reg32) $d[6], inout(reg32) $d[7],
                inout(reg32) $d[8], inout(reg32) $d[9], inout(reg32) $d[10], inout(reg32) $d[11], inout(reg32) $d[12], inout(reg32) $d[13], inout(reg32) $d[14], inout(reg32) $d[15],
                inout(reg32) $d[16], inout(reg32) $d[17], inout(reg32) $d[18], inout(reg32) $d[19], inout(reg32) $d[20], inout(reg32) $d[21], inout(reg32) $d[22], inout(reg32) $d[23],
                inout(reg32) $d[24], inout(reg32) $d[25], inout(reg32) $d[26], inout(reg32) $d[27], inout(reg32) $d[28], inout(reg32) $d[29], inout(reg32) $d[30], inout(reg32) $d[31],
                inout(reg32) $d[32], inout(reg32) $d[33], inout(reg32) $d[34], inout(reg32) $d[35], inout(reg32) $d[36], inout(reg32) $d[37], inout(reg32) $d[38], inout(reg32) $d[39],
                inout(reg32) $d[40], inout(reg32) $d[41], inout(reg32) $d[42], inout(reg32) $d[43], inout(reg32) $d[44], inout(reg32) $d[45], inout(reg32) $d[46], inout(reg32) $d[47],
                inout(reg32) $d[48], inout(reg32) $d[49], inout(reg32) $d[50], inout(reg32) $d[51], inout(reg32) $d[52], inout(reg32) $d[53], inout(reg32) $d[54], inout(reg32) $d[55],
                inout(reg32) $d[56], inout(reg32) $d[57], inout(reg32) $d[58], inout(reg32) $d[59], inout(reg32) $d[60], inout(reg32) $d[61], inout(reg32) $d[62], inout(reg32) $d[63],
                in(reg64) $da, in(reg64) $db, in(reg32) 1u32,
                options(nostack, preserves_flags)
        )
    };
}

/// `acc += A · Bᵀ` over 16 of `k`: A = 64 rows at descriptor `da`, B = 128 rows at `db`.
///
/// # Safety
/// The descriptors address a complete swizzled operand in shared memory that no thread
/// writes until this group is waited for; the whole warpgroup executes this converged,
/// after a `wgmma_fence`.
#[inline(always)]
unsafe fn wgmma_step<E: Epilogue>(acc: &mut [f32; 64], da: u64, db: u64) {
    // SAFETY: guaranteed by the caller. Not `nomem`: it reads shared memory.
    unsafe {
        if E::BF16 {
            wgmma_m64n128k16!("bf16", acc, da, db);
        } else {
            wgmma_m64n128k16!("f16", acc, da, db);
        }
    }
}

/// Where a thread's copies of one operand come from: its 4 rows (`row0 + r`, `r = cr + 32 i`)
/// of a matrix of `k` elements per row, and which of them exist.
#[derive(Clone, Copy)]
struct Rows {
    ptr: [*const u8; COPIES],
    ok: [bool; COPIES],
}

impl Rows {
    /// Rows `first[i]` (valid when `ok[i]`), chunk `cc` of each.
    #[inline(always)]
    fn new(base: *const u8, first: [usize; COPIES], ok: [bool; COPIES], k: usize, cc: usize) -> Rows {
        let mut ptr = [base; COPIES];
        unroll8!(COPIES, |i| {
            if ok[i] {
                ptr[i] = base.wrapping_add(first[i] * k * 2 + cc * 16);
            }
        });
        Rows { ptr, ok }
    }

    /// Issues the copies of the `k` step at `k0` (element) into the operand at shared `dst`
    /// (this thread's swizzled offset included); `kok`: the chunk lies inside `k`.
    ///
    /// # Safety
    /// `dst + i · 32 rows` lies in shared memory for every copy; rows marked valid hold `k`
    /// elements, 16-byte aligned (host-checked).
    #[inline(always)]
    unsafe fn copy(&self, dst: u32, k0: usize, kok: bool, zero_src: *const u8) {
        unroll8!(COPIES, |i| {
            let ok = kok && self.ok[i];
            let src = if ok { self.ptr[i].wrapping_add(k0 * 2) } else { zero_src };
            // SAFETY: `ok` means the 16 bytes at src are inside the row (k a multiple of 8);
            // otherwise nothing is read and zeros are written.
            unsafe { cp_async_16(dst + (i * COPY_ROWS * ROW) as u32, src, ok) };
        });
    }
}

/// The rows of `w` a thread copies for output columns `col0 ..`: plain GEMM, weight rows
/// `col0 + r`; gate/up, smem rows `r < 64` are gate rows `col0 + r`, rows `64 + r` the up
/// rows `n + col0 + r` (so warpgroup columns `j` and `j + 64` pair up).
#[inline(always)]
fn weight_rows<const GATE_UP: bool>(cr: usize, col0: usize, n: usize) -> ([usize; COPIES], [bool; COPIES]) {
    let mut rows = [0usize; COPIES];
    let mut ok = [false; COPIES];
    unroll8!(COPIES, |i| {
        let r = cr + i * COPY_ROWS;
        let (row, col) = if GATE_UP && r >= BN / 2 { (n + col0 + r - BN / 2, col0 + r - BN / 2) } else { (col0 + r, col0 + r) };
        rows[i] = row;
        ok[i] = col < n;
    });
    (rows, ok)
}

/// The kernel (see the module documentation).
///
/// # Safety
/// Shapes validated by the host (`kernel_abi::gemm` rules; `n`, `k` multiples of 8; buffers
/// of the documented sizes, 16-byte aligned rows); a block of [`THREADS`] threads and
/// `tile_smem_bytes(GemmPath::Wgmma)` bytes of dynamic shared memory (less: nothing is
/// written).
#[inline(always)]
unsafe fn wgmma_gemm<E: Epilogue, const GATE_UP: bool>(p: &GemmParams) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let cols = if GATE_UP { BN / 2 } else { BN };
    let (rank, csize) = cluster_rank_size();
    let tile = arch::block_idx() as usize / csize;
    let (tm, tn) = gm::tile_of(tile, m.div_ceil(BM), n.div_ceil(cols));
    let (row0, col0) = (tm * BM, tn * cols);
    // (Uniform over the cluster: its CTAs share the tile.)
    if row0 >= m || col0 >= n || dyn_smem_size() < tile_smem_bytes(GemmPath::Wgmma) {
        return;
    }
    let tid = arch::thread_idx() as usize;
    let smem = (gemm_dyn_smem() + SWIZZLE_PERIOD - 1) & !(SWIZZLE_PERIOD - 1);
    let (x, w) = (p.x.as_ptr::<u8>(), p.w.as_ptr::<u8>());

    // This thread's copies: chunk `cc` of rows `cr + 32 i` of both operands.
    let (cr, cc) = (tid / CHUNKS, tid % CHUNKS);
    let soff = kw::sw128_offset(cr, cc) as u32;
    let mut a_first = [0usize; COPIES];
    let mut a_ok = [false; COPIES];
    unroll8!(COPIES, |i| {
        a_first[i] = row0 + cr + i * COPY_ROWS;
        a_ok[i] = a_first[i] < m;
    });
    let a_rows = Rows::new(x, a_first, a_ok, k, cc);
    let (b_first, b_ok) = weight_rows::<GATE_UP>(cr, col0, n);
    let b_rows = Rows::new(w, b_first, b_ok, k, cc);
    let load = |slot: usize, kt: usize| {
        let k0 = kt * BK;
        let kok = k0 + cc * 8 < k;
        let dst = smem + (slot * WGMMA_STAGE_BYTES) as u32 + soff;
        // SAFETY: the stage lies inside the dynamic shared memory (size checked above).
        unsafe {
            a_rows.copy(dst, k0, kok, x);
            b_rows.copy(dst + A_BYTES as u32, k0, kok, w);
        }
    };

    // Split k over the cluster (`kernel_abi::gemm::wgmma_split`): CTA `rank` takes the
    // stages `kt0 .. kt0 + count`.
    let ktiles = k.div_ceil(BK);
    let per = ktiles.div_ceil(csize);
    let kt0 = if rank * per < ktiles { rank * per } else { ktiles };
    let count = if kt0 + per < ktiles { per } else { ktiles - kt0 };
    unroll8!(STAGES - 2, |s| {
        if s < count {
            load(s, kt0 + s);
        }
        cp_async_commit();
    });
    let wg = tid / 128;
    let mut acc = [0f32; 64];
    pin_accumulators(&mut acc);
    let mut i = 0;
    while i < count {
        // Stage i has landed (this thread's copies), is visible to the async proxy, and
        // every thread's copies are (barrier); every warpgroup has finished stage i - 2.
        cp_async_wait(STAGES - 3);
        fence_proxy_async();
        arch::sync_threads();
        let next = i + STAGES - 2;
        if next < count {
            load(next % STAGES, kt0 + next);
        }
        cp_async_commit();
        let a = smem + ((i % STAGES) * WGMMA_STAGE_BYTES + wg * 64 * ROW) as u32;
        let b = smem + ((i % STAGES) * WGMMA_STAGE_BYTES + A_BYTES) as u32;
        wgmma_fence();
        unroll8!(BK / 16, |kk| {
            // SAFETY: both operands are complete in the stage (above) and not overwritten
            // before this group is waited for (at the end of the next step at the latest);
            // warpgroup-uniform control flow.
            unsafe { wgmma_step::<E>(&mut acc, kw::sw128_desc(a + (kk * 32) as u32), kw::sw128_desc(b + (kk * 32) as u32)) };
        });
        wgmma_commit();
        wgmma_wait::<1>();
        i += 1;
    }
    wgmma_wait::<0>();
    pin_accumulators(&mut acc);
    cp_async_wait(0);
    if csize > 1 {
        // SAFETY: every thread of the cluster gets here (the early return above is uniform
        // over the cluster), after its waits; the stages hold 160 KiB.
        unsafe { reduce_cluster(&mut acc, smem, rank, csize) };
        if rank != 0 {
            return;
        }
    }
    store::<E, GATE_UP>(p, &acc, row0 + wg * 64, col0);
}

/// The epilogue: this thread's accumulators of the warpgroup tile at (`row0`, `col0`) to
/// `out` (plain: + bias + residual; gate/up: silu(gate) · up), pairs of columns per store.
#[inline(always)]
fn store<E: Epilogue, const GATE_UP: bool>(p: &GemmParams, acc: &[f32; 64], row0: usize, col0: usize) {
    let (m, n) = (p.m as usize, p.n as usize);
    let tid = arch::thread_idx() as usize % 128;
    let (warp, lane) = (tid / 32, tid % 32);
    let out = p.out.as_mut_ptr::<u8>();
    unroll8!(2, |h| {
        let row = row0 + kw::acc_pos(warp, lane, 2 * h).0;
        if row < m {
            if GATE_UP {
                unroll8!(8, |j| {
                    let (gt, up) = (4 * j + 2 * h, 4 * (j + 8) + 2 * h);
                    let col = col0 + kw::acc_pos(warp, lane, gt).1;
                    if col < n {
                        let v0 = silu::<Libdevice>(acc[gt]) * acc[up];
                        let v1 = silu::<Libdevice>(acc[gt + 1]) * acc[up + 1];
                        // SAFETY: row < m, col + 1 < n (n even): inside out; 4-byte aligned.
                        unsafe { st_u32(out.add((row * n + col) * 2), E::pack2(v0, v1)) };
                    }
                });
            } else {
                unroll8!(8, |jh| {
                    unroll8!(2, |jl| {
                        let i = 4 * (2 * jh + jl) + 2 * h;
                        let col = col0 + kw::acc_pos(warp, lane, i).1;
                        if col < n {
                            // SAFETY: row < m, col + 1 < n: inside out (and residual, bias).
                            unsafe { st_u32(out.add((row * n + col) * 2), E::pack2_epilogue(p, [acc[i], acc[i + 1]], row, col, n)) };
                        }
                    });
                });
            }
        }
    });
}

entry!(gemm_wgmma_bf16, GemmParams, |p: GemmParams| wgmma_gemm::<Bf16, false>(&p));
entry!(gemm_wgmma_f16, GemmParams, |p: GemmParams| wgmma_gemm::<F16, false>(&p));
entry!(gate_up_silu_wgmma_bf16, GemmParams, |p: GemmParams| wgmma_gemm::<Bf16, true>(&p));
entry!(gate_up_silu_wgmma_f16, GemmParams, |p: GemmParams| wgmma_gemm::<F16, true>(&p));
