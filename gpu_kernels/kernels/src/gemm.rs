//! Tensor-core GEMM `out = x · wᵀ (+ bias) (+ residual)` and the fused MLP gate/up product
//! `out = silu(x · w_gᵀ) * (x · w_uᵀ)`; bf16/f16 in, f32 accumulation, one rounding on store.
//!
//! Paths, shapes and launch geometry: `kernel_abi::gemm`. Per-lane index math (swizzle,
//! `ldmatrix` lanes, fragment assembly, gate/up row interleave): `kernel_math::gemm`, where
//! a CPU emulation of `ldmatrix` and `mma.sync` checks it.
//!
//! # tile128 (`big`)
//!
//! 4 warps as 2 × 2, each a 64 × 64 warp tile (8 `ldmatrix.x4` feed 32 products per 16 of
//! `k`: half the shared-memory reads per product of a 32 × 32 warp tile), 128 × 128 CTA
//! tile, `TILE128_STAGES` stages of 32 `k` filled by `cp.async.cg` in 64 KiB of dynamic
//! shared memory (same swizzled 64-byte rows as tile64), two CTAs per SM.
//!
//! # Tiled path `tile64` (`tiled`)
//!
//! 8 warps as 2 (M) × 4 (N); warp tile `BM/2 × 32` (`MI = BM/32` M tiles × 4 N tiles of
//! `m16n8k16`). `k` advances 32 at a time through `STAGES` shared-memory stages filled by
//! `cp.async.cg` (16 bytes per thread and copy, zero-filled past `m`, `n` or `k`); rows of a
//! stage are 64 bytes with the 16-byte chunks XOR-swizzled, so `ldmatrix.x4` and the copies
//! are free of bank conflicts. One barrier per k step: the stage refilled at step `t` is the
//! one every warp finished reading at step `t - 1`. The epilogue adds bias and residual to
//! the accumulators and stores pairs of columns (4 bytes) straight from registers.
//!
//! # Skinny path (`m ≤ 16`)
//!
//! A CTA of 4 warps owns 16 weight rows; warp `w` takes the 32-wide `k` steps `w, w + 4, …`,
//! four steps at a time (all their loads issued before the first product). Each lane loads
//! whole 16-byte chunks of its two weight rows and its token rows, which become tensor-core fragments directly
//! (`kernel_math::gemm::skinny_a`/`skinny_b`): the weights are the M operand, the tokens the
//! N operand (8 per tile, 1 or 2 tiles). The four warps' partial sums meet in shared memory.

use crate::arch::{self, Libdevice, V4};
use crate::dtype::{Bf16, F16};
use crate::elementwise::entry;
use crate::tensor_core::{cp_async_16, cp_async_commit, cp_async_wait, ld_u32, ld_v4_stream, ldmatrix_x4, mma, shared_addr, st_u32, unroll8, TcElem};
use core::arch::asm;
use kernel_abi::gemm::{tile_smem_bytes, GemmPath, SKINNY_MAX_THREADS, SKINNY_ROWS, SKINNY_THREADS, TILE128_STAGES, TILE128_THREADS, TILE_K, TILE_N, TILE_THREADS};
use kernel_abi::GemmParams;
use kernel_math::act::silu;
use kernel_math::gemm as gm;

/// Shared memory of the tiled paths: 48 KiB (the static limit), i.e. 3 stages of
/// 128 + 128 rows or 4 stages of 64 + 128 rows of 64 bytes.
const TILE_SMEM_BYTES: usize = 48 * 1024;
const WARPS: usize = TILE_THREADS as usize / 32;

#[unsafe(link_section = ".nvptx.shared")]
static mut TILE_SMEM: [V4; TILE_SMEM_BYTES / 16] = [V4([0; 4]); TILE_SMEM_BYTES / 16];

/// The most warps a skinny CTA may have (its block size is chosen by the host).
const SKINNY_MAX_WARPS: usize = SKINNY_MAX_THREADS as usize / 32;
/// Skinny k steps (32 wide) each warp has in flight.
const SKINNY_UNROLL: usize = 4;

/// The skinny warps' partial sums: `[warp][tile][register][lane]` for up to 2 token tiles.
#[unsafe(link_section = ".nvptx.shared")]
static mut SKINNY_RED: [f32; SKINNY_MAX_WARPS * 2 * 4 * 32] = [0.0; SKINNY_MAX_WARPS * 2 * 4 * 32];

/// Where one thread's 16-byte copies of a stage come from and go to.
#[derive(Clone, Copy)]
struct CopySlot {
    /// Start of the source row (a valid address even when the row does not exist).
    row: *const u8,
    /// Whether the row exists.
    valid: bool,
    /// Byte offset inside the stage (swizzled).
    smem: u32,
    /// First `k` of the chunk within the 32-wide step.
    kcol: usize,
}

/// The copy slot of chunk `q` (row `q / 4`, chunk `q % 4`) whose row is `grow` of the matrix
/// at `base` (`k` elements per row).
#[inline(always)]
fn slot(base: *const u8, q: usize, grow: usize, valid: bool, k: usize) -> CopySlot {
    let (r, c) = (q / gm::ROW_CHUNKS, q % gm::ROW_CHUNKS);
    let row = if valid { base.wrapping_add(grow * k * 2) } else { base };
    CopySlot { row, valid, smem: gm::smem_offset(r, c) as u32, kcol: c * 8 }
}

/// Issues the copy of `s` for the k step starting at `k0` into the stage at `stage`.
#[inline(always)]
unsafe fn copy(s: &CopySlot, stage: u32, k0: usize, k: usize) {
    let kk = k0 + s.kcol;
    let ok = s.valid && kk < k;
    // SAFETY: `ok` means row and columns `kk .. kk + 8` exist (k is a multiple of 8, rows
    // 16-byte aligned: host-checked); otherwise nothing is read and zeros are written.
    unsafe { cp_async_16(stage + s.smem, s.row.wrapping_add(if ok { kk * 2 } else { 0 }), ok) };
}

/// The tiled kernel: `BM` output rows per CTA, `MI = BM / 32` M tiles per warp, `CA = BM / 64`
/// A copies per thread and stage, `STAGES` pipeline stages; `GATE_UP` selects the fused
/// gate/up weight rows and SiLU·mul epilogue.
#[inline(always)]
unsafe fn tiled<E: Epilogue, const GATE_UP: bool, const BM: usize, const MI: usize, const CA: usize, const STAGES: usize>(p: &GemmParams) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let cols = if GATE_UP { TILE_N / 2 } else { TILE_N };
    let (tm, tn) = gm::tile_of(arch::block_idx() as usize, m.div_ceil(BM), n.div_ceil(cols));
    let (col0, row0) = (tn * cols, tm * BM);
    if row0 >= m || col0 >= n {
        return;
    }
    let tid = arch::thread_idx() as usize;
    let (warp, lane) = (tid / 32, tid % 32);
    let (wm, wn) = (warp / 4, warp % 4);
    let (g, tq) = (lane / 4, lane % 4);

    let a_bytes = BM * gm::ROW_BYTES;
    let stage_bytes = (a_bytes + TILE_N * gm::ROW_BYTES) as u32;
    let smem = shared_addr((&raw const TILE_SMEM).cast::<u8>());
    let (x, w) = (p.x.as_ptr::<u8>(), p.w.as_ptr::<u8>());

    let mut a_slots = [CopySlot { row: x, valid: false, smem: 0, kcol: 0 }; CA];
    unroll8!(CA, |i| {
        let q = tid + i * TILE_THREADS as usize;
        let grow = row0 + q / gm::ROW_CHUNKS;
        a_slots[i] = slot(x, q, grow, grow < m, k);
    });
    let mut b_slots = [CopySlot { row: w, valid: false, smem: 0, kcol: 0 }; 2];
    unroll8!(2, |i| {
        let q = tid + i * TILE_THREADS as usize;
        let r = q / gm::ROW_CHUNKS;
        let (grow, valid) = if GATE_UP { gm::gate_up_row(r, col0, n) } else { (col0 + r, col0 + r < n) };
        let mut s = slot(w, q, grow, valid, k);
        s.smem += a_bytes as u32;
        b_slots[i] = s;
    });
    let load = |stage: usize, kt: usize| {
        let base = smem + stage as u32 * stage_bytes;
        unroll8!(CA, |i| {
            // SAFETY: see `copy`; the stage lies inside TILE_SMEM (STAGES × stage_bytes ≤ 48 KiB).
            unsafe { copy(&a_slots[i], base, kt * TILE_K, k) };
        });
        unroll8!(2, |i| {
            // SAFETY: as above.
            unsafe { copy(&b_slots[i], base, kt * TILE_K, k) };
        });
    };

    // Lane addresses for ldmatrix (row within the stage, k chunk 0/1 within a 16-wide step).
    let (ar, ac) = gm::ldsm_a_lane(lane);
    let (br, bc) = gm::ldsm_b_lane(lane);
    let mut acc = [[[0f32; 4]; 4]; MI];
    let ktiles = k.div_ceil(TILE_K);
    unroll8!(STAGES - 1, |s| {
        if s < ktiles {
            load(s, s);
        }
        cp_async_commit();
    });
    let mut kt = 0;
    while kt < ktiles {
        cp_async_wait(STAGES - 2);
        arch::sync_threads();
        let next = kt + STAGES - 1;
        if next < ktiles {
            load(next % STAGES, next);
        }
        cp_async_commit();
        let a_base = smem + (kt % STAGES) as u32 * stage_bytes;
        let b_base = a_base + a_bytes as u32;
        unroll8!(2, |kk| {
            let mut af = [[0u32; 4]; MI];
            unroll8!(MI, |mi| {
                let row = wm * (BM / 2) + mi * 16 + ar;
                // SAFETY: inside the stage (row < BM, chunk < 4); whole warp, converged.
                af[mi] = unsafe { ldmatrix_x4(a_base + gm::smem_offset(row, 2 * kk + ac) as u32) };
            });
            let mut bf = [[0u32; 2]; 4];
            unroll8!(2, |nj| {
                let row = wn * 32 + nj * 16 + br;
                // SAFETY: as above (row < 128).
                let r = unsafe { ldmatrix_x4(b_base + gm::smem_offset(row, 2 * kk + bc) as u32) };
                bf[2 * nj] = [r[0], r[1]];
                bf[2 * nj + 1] = [r[2], r[3]];
            });
            unroll8!(MI, |mi| {
                unroll8!(4, |ni| {
                    mma::<E>(&mut acc[mi][ni], &af[mi], &bf[ni]);
                });
            });
        });
        kt += 1;
    }
    cp_async_wait(0);

    let out = p.out.as_mut_ptr::<u8>();
    unroll8!(MI, |mi| {
        unroll8!(2, |half| {
            let row = row0 + wm * (BM / 2) + mi * 16 + g + 8 * half;
            if row < m {
                if GATE_UP {
                    unroll8!(2, |ni| {
                        let col = col0 + gm::gate_up_col(wn, ni, tq, 0);
                        if col < n {
                            let (gt, up) = (&acc[mi][ni], &acc[mi][ni + 2]);
                            let v0 = silu::<Libdevice>(gt[2 * half]) * up[2 * half];
                            let v1 = silu::<Libdevice>(gt[2 * half + 1]) * up[2 * half + 1];
                            // SAFETY: row < m, col + 1 < n (n even): inside out; 4-byte aligned.
                            unsafe { st_u32(out.add((row * n + col) * 2), E::pack2(v0, v1)) };
                        }
                    });
                } else {
                    unroll8!(4, |ni| {
                        let col = col0 + wn * 32 + ni * 8 + gm::acc_col(tq, 0);
                        if col < n {
                            let v = [acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]];
                            // SAFETY: row < m, col + 1 < n: inside out (and residual, bias).
                            unsafe { st_u32(out.add((row * n + col) * 2), E::pack2_epilogue(p, v, row, col, n)) };
                        }
                    });
                }
            }
        });
    });
}

// The dynamic shared memory of a tile128 launch (`kernel_abi::gemm::tile_smem_bytes`; the
// kernel checks `%dynamic_smem_size` and writes nothing when it got less).
core::arch::global_asm!(".extern .shared .align 128 .b8 inflight_gemm_smem[];");

/// Shared-window address of the dynamic shared memory.
#[inline(always)]
pub(crate) fn gemm_dyn_smem() -> u32 {
    let r: u32;
    // SAFETY: an address of a symbol, no memory access.
    unsafe { asm!("mov.u32 {0}, inflight_gemm_smem;", out(reg32) r, options(pure, nomem, nostack, preserves_flags)) };
    r
}

/// Bytes of dynamic shared memory of the launch.
#[inline(always)]
pub(crate) fn dyn_smem_size() -> u32 {
    let r: u32;
    // SAFETY: reads a special register.
    unsafe { asm!("mov.u32 {0}, %dynamic_smem_size;", out(reg32) r, options(pure, nomem, nostack, preserves_flags)) };
    r
}

/// The `big` kernels' warp tile (64 × 64) and its M and N fragments.
const BIG_WT: usize = 64;
const BIG_MI: usize = BIG_WT / 16;
const BIG_NI: usize = BIG_WT / 8;
/// Threads per CTA of both `big` configurations (4 warps).
const BIG_THREADS: usize = TILE128_THREADS as usize;
/// Bytes between the smem rows `r` and `r + 32` of a thread's copies (the swizzle of rows
/// 32 apart is the same: it depends on bits 1..3 of the row only).
const BIG_COPY_STRIDE: u32 = (BIG_THREADS / gm::ROW_CHUNKS * gm::ROW_BYTES) as u32;
const _: () = assert!(BIG_THREADS == 128 && TILE_N == 128);
const _: () = assert!(TILE128_STAGES * (128 + TILE_N) * gm::ROW_BYTES == tile_smem_bytes(GemmPath::Tile128) as usize);
/// The sliced-k reduction of a 64-row configuration fits in 4 stages.
const _: () = assert!(2 * BIG_MI * BIG_NI * 32 * 16 <= 4 * (64 + TILE_N) * gm::ROW_BYTES);

/// 16-byte store to shared memory.
///
/// # Safety
/// `addr` is a 16-byte aligned shared address of 16 writable bytes.
#[inline(always)]
unsafe fn st_shared_v4f(addr: u32, v: &[f32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("st.shared.v4.f32 [{0}], {{{1}, {2}, {3}, {4}}};", in(reg32) addr, in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3], options(nostack, preserves_flags)) };
}

/// 16-byte load from shared memory.
///
/// # Safety
/// `addr` is a 16-byte aligned shared address of 16 readable bytes.
#[inline(always)]
unsafe fn ld_shared_v4f(addr: u32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    // SAFETY: guaranteed by the caller. Not `readonly`: it must stay after the barrier.
    unsafe { asm!("ld.shared.v4.f32 {{{0}, {1}, {2}, {3}}}, [{4}];", out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, options(nostack, preserves_flags)) };
    [a, b, c, d]
}

/// The `big` kernel (tile128): a `BM × 128` output tile (gate/up: 64 output columns from 128
/// weight rows) per CTA of 4 warps, each warp a 64 × 64 tile (4 × 8 `m16n8k16` products per
/// 16 of `k`: 8 `ldmatrix.x4` for 32 products). tile128 (`BM` 128, `WK` 1): warps 2 (M) ×
/// 2 (N). `BM` 64, `WK` 2 (warps 1 × 2 × 2 slices of `k`: slice `kz` multiplies the 16-wide
/// half `kz` of every stage, the halves' sums meet in shared memory at the end) passed the
/// GPU tests as tile64 but was slower than [`tiled`] at the small grids tile64 serves (H200,
/// 2026-12-03 session 4: 1 CTA of 4 warps per SM), so it is not instantiated. `STAGES` stages of 32 `k` in dynamic shared memory,
/// rows of 64 bytes with XOR-swizzled 16-byte chunks
/// (`kernel_math::gemm::smem_offset`: `ldmatrix.x4` and `cp.async` free of bank conflicts),
/// zero-filled past `m`, `n` or `k`; one barrier per stage (the stage refilled at step `t`
/// is the one every warp finished reading at step `t - 1`). Fused gate/up: the weight rows of warp
/// column `wn` are 32 gate rows (output columns `col0 + 32 wn ..`) then the 32 matching up
/// rows, so N tiles `ni` and `ni + 4` pair up register by register.
#[inline(always)]
unsafe fn big<E: Epilogue, const GATE_UP: bool, const BM: usize, const CA: usize, const WK: usize, const STAGES: usize>(p: &GemmParams) {
    let a_bytes = BM * gm::ROW_BYTES;
    let stage_bytes = (BM + TILE_N) * gm::ROW_BYTES;
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let cols = if GATE_UP { TILE_N / 2 } else { TILE_N };
    let (tm, tn) = gm::tile_of(arch::block_idx() as usize, m.div_ceil(BM), n.div_ceil(cols));
    let (col0, row0) = (tn * cols, tm * BM);
    if row0 >= m || col0 >= n || (dyn_smem_size() as usize) < STAGES * stage_bytes {
        return;
    }
    let tid = arch::thread_idx() as usize;
    let (warp, lane) = (tid / 32, tid % 32);
    let wmn = warp % (4 / WK);
    let kz = warp / (4 / WK);
    let (wm, wn) = (wmn / 2, wmn % 2);
    let (g, tq) = (lane / 4, lane % 4);
    let smem = gemm_dyn_smem();
    let (x, w) = (p.x.as_ptr::<u8>(), p.w.as_ptr::<u8>());
    let kb = k * 2;

    // This thread's copies: chunk `cc` of rows `cr + 32 i` of the A and B tiles.
    let (cr, cc) = (tid / gm::ROW_CHUNKS, tid % gm::ROW_CHUNKS);
    let soff = gm::smem_offset(cr, cc) as u32;
    let a_ptr = x.wrapping_add((row0 + cr) * kb + cc * 16);
    let b_ptr = w.wrapping_add((col0 + cr) * kb + cc * 16);
    let mut a_ok = [false; CA];
    let mut b_ok = [false; 4];
    let mut b_off = [0usize; 4];
    unroll8!(CA, |i| {
        a_ok[i] = row0 + cr + 32 * i < m;
    });
    unroll8!(4, |i| {
        if GATE_UP {
            // smem row cr + 32 i: warp column i / 2, gate (even i) or up (odd i) of output
            // column col0 + 32 (i / 2) + cr.
            b_ok[i] = col0 + 32 * (i / 2) + cr < n;
            b_off[i] = (i / 2) * 32 * kb + (i % 2) * n * kb;
        } else {
            b_ok[i] = col0 + cr + 32 * i < n;
            b_off[i] = i * 32 * kb;
        }
    });
    let load = |stage: usize, kt: usize| {
        let k0 = kt * TILE_K;
        let kok = k0 + cc * 8 < k;
        let base = smem + (stage * stage_bytes) as u32 + soff;
        unroll8!(CA, |i| {
            let ok = kok && a_ok[i];
            // SAFETY: `ok` means row row0 + cr + 32 i < m and columns k0 + 8 cc .. + 8 ≤ k
            // (k a multiple of 8; rows 16-byte aligned, host-checked); else nothing is read
            // and zeros are written. The destination lies inside the stage.
            unsafe { cp_async_16(base + i as u32 * BIG_COPY_STRIDE, if ok { a_ptr.wrapping_add(i * 32 * kb + k0 * 2) } else { x }, ok) };
        });
        unroll8!(4, |i| {
            let ok = kok && b_ok[i];
            // SAFETY: as above for the weight row (< n, or < 2 n for gate/up).
            unsafe { cp_async_16(base + (a_bytes as u32) + i as u32 * BIG_COPY_STRIDE, if ok { b_ptr.wrapping_add(b_off[i] + k0 * 2) } else { w }, ok) };
        });
    };

    // Per-lane ldmatrix offsets for the 16-wide halves of a stage this warp multiplies
    // (both when WK = 1, half kz when WK = 2): rows of a fragment start at multiples of 16,
    // so the swizzle depends on the lane's row only.
    let (ar, ac) = gm::ldsm_a_lane(lane);
    let (br, bc) = gm::ldsm_b_lane(lane);
    // (`% 2`: the unrolled branches past `2 / WK` are dead but still type-checked.)
    let mut a_lane = [0u32; 2];
    let mut b_lane = [0u32; 2];
    unroll8!(2 / WK, |j| {
        let half = j * WK + kz;
        a_lane[j % 2] = gm::smem_offset(ar, 2 * half + ac) as u32;
        b_lane[j % 2] = gm::smem_offset(br, 2 * half + bc) as u32;
    });
    let a_warp = (wm * BIG_WT * gm::ROW_BYTES) as u32;
    let b_warp = (a_bytes + wn * BIG_WT * gm::ROW_BYTES) as u32;

    let mut acc = [[[0f32; 4]; BIG_NI]; BIG_MI];
    let ktiles = k.div_ceil(TILE_K);
    unroll8!(STAGES - 1, |s| {
        if s < ktiles {
            load(s, s);
        }
        cp_async_commit();
    });
    let mut kt = 0;
    while kt < ktiles {
        cp_async_wait(STAGES - 2);
        arch::sync_threads();
        let next = kt + STAGES - 1;
        if next < ktiles {
            load(next % STAGES, next);
        }
        cp_async_commit();
        let st = smem + ((kt % STAGES) * stage_bytes) as u32;
        unroll8!(2 / WK, |kk| {
            let mut af = [[0u32; 4]; BIG_MI];
            unroll8!(BIG_MI, |mi| {
                // SAFETY: inside the stage (row < BM, chunk < 4); whole warp, converged.
                af[mi] = unsafe { ldmatrix_x4(st + a_warp + (mi * 16 * gm::ROW_BYTES) as u32 + a_lane[kk % 2]) };
            });
            let mut bf = [[0u32; 2]; BIG_NI];
            unroll8!(BIG_NI / 2, |nj| {
                // SAFETY: as above (row < 128).
                let r = unsafe { ldmatrix_x4(st + b_warp + (nj * 16 * gm::ROW_BYTES) as u32 + b_lane[kk % 2]) };
                bf[2 * nj] = [r[0], r[1]];
                bf[2 * nj + 1] = [r[2], r[3]];
            });
            unroll8!(BIG_MI, |mi| {
                unroll8!(BIG_NI, |ni| {
                    mma::<E>(&mut acc[mi][ni], &af[mi], &bf[ni]);
                });
            });
        });
        kt += 1;
    }
    cp_async_wait(0);

    let out = p.out.as_mut_ptr::<u8>();
    // Stores the rows of M fragments `lo .. hi` (constants after inlining).
    let store = |acc: &[[[f32; 4]; BIG_NI]; BIG_MI], lo: usize, hi: usize| {
        unroll8!(BIG_MI, |mi| {
            if mi >= lo && mi < hi {
                unroll8!(2, |half| {
                    let row = row0 + wm * BIG_WT + mi * 16 + g + 8 * half;
                    if row < m {
                        if GATE_UP {
                            unroll8!(BIG_NI / 2, |ni| {
                                let col = col0 + wn * (BIG_WT / 2) + ni * 8 + gm::acc_col(tq, 0);
                                if col < n {
                                    let (gt, up) = (&acc[mi][ni], &acc[mi][ni + BIG_NI / 2]);
                                    let v0 = silu::<Libdevice>(gt[2 * half]) * up[2 * half];
                                    let v1 = silu::<Libdevice>(gt[2 * half + 1]) * up[2 * half + 1];
                                    // SAFETY: row < m, col + 1 < n (n even): inside out; 4-byte aligned.
                                    unsafe { st_u32(out.add((row * n + col) * 2), E::pack2(v0, v1)) };
                                }
                            });
                        } else {
                            unroll8!(BIG_NI, |ni| {
                                let col = col0 + wn * BIG_WT + ni * 8 + gm::acc_col(tq, 0);
                                if col < n {
                                    let v = [acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]];
                                    // SAFETY: row < m, col + 1 < n: inside out (and residual, bias).
                                    unsafe { st_u32(out.add((row * n + col) * 2), E::pack2_epilogue(p, v, row, col, n)) };
                                }
                            });
                        }
                    }
                });
            }
        });
    };

    if WK == 1 {
        store(&acc, 0, BIG_MI);
        return;
    }
    // Two slices of k: slice 0 finishes M fragments 0, 1 and slice 1 fragments 2, 3; each
    // hands the other half of its sums to the other slice through shared memory (region
    // `kz`: [wmn][2 fragments][ni][lane] × 16 bytes), after every warp finished reading the
    // stages. Half the accumulators are dead once handed over, so the sums never need
    // more registers than the main loop.
    arch::sync_threads();
    let red = |region: usize, j: usize, ni: usize| smem + (((((region * 2 + wmn) * 2 + j) * BIG_NI + ni) * 32 + lane) * 16) as u32;
    if kz == 0 {
        unroll8!(2, |j| {
            unroll8!(BIG_NI, |ni| {
                // SAFETY: inside the pipeline's shared memory (size asserted above).
                unsafe { st_shared_v4f(red(0, j, ni), &acc[2 + j][ni]) };
            });
        });
    } else {
        unroll8!(2, |j| {
            unroll8!(BIG_NI, |ni| {
                // SAFETY: as above.
                unsafe { st_shared_v4f(red(1, j, ni), &acc[j][ni]) };
            });
        });
    }
    arch::sync_threads();
    if kz == 0 {
        unroll8!(2, |j| {
            unroll8!(BIG_NI, |ni| {
                // SAFETY: as above; written before the barrier.
                let o = unsafe { ld_shared_v4f(red(1, j, ni)) };
                unroll8!(4, |c| {
                    acc[j][ni][c] += o[c];
                });
            });
        });
        store(&acc, 0, 2);
    } else {
        unroll8!(2, |j| {
            unroll8!(BIG_NI, |ni| {
                // SAFETY: as above.
                let o = unsafe { ld_shared_v4f(red(0, j, ni)) };
                unroll8!(4, |c| {
                    acc[2 + j][ni][c] += o[c];
                });
            });
        });
        store(&acc, 2, 4);
    }
}

/// Epilogue of plain GEMM: `v + bias[col..] + residual[row, col..]`, packed.
pub(crate) trait Epilogue: TcElem {
    /// # Safety
    /// `row < m`, `col + 1 < n`; bias and residual (when non-null) hold `n` and `m × n`.
    unsafe fn pack2_epilogue(p: &GemmParams, v: [f32; 2], row: usize, col: usize, n: usize) -> u32 {
        let mut v = v;
        if !p.bias.is_null() {
            // SAFETY: per the caller.
            let b = Self::unpack2(unsafe { ld_u32(p.bias.as_ptr::<u8>().add(col * 2)) });
            v = [v[0] + b[0], v[1] + b[1]];
        }
        if !p.residual.is_null() {
            // SAFETY: per the caller.
            let r = Self::unpack2(unsafe { ld_u32(p.residual.as_ptr::<u8>().add((row * n + col) * 2)) });
            v = [v[0] + r[0], v[1] + r[1]];
        }
        Self::pack2(v[0], v[1])
    }
}
impl Epilogue for Bf16 {}
impl Epilogue for F16 {}

/// The skinny kernel: `NT` token tiles of 8 (`m ≤ 8 NT`), `WARPS` warps (the block size; a
/// constant so that the k offsets of the unrolled loads are immediates, not registers).
#[inline(always)]
unsafe fn skinny<E: Epilogue, const GATE_UP: bool, const NT: usize, const WARPS: usize>(p: &GemmParams) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let blk = arch::block_idx() as usize;
    let tid = arch::thread_idx() as usize;
    let (threads, warps) = (WARPS * 32, WARPS);
    let (warp, lane) = (tid / 32, tid % 32);
    let (g, tq) = (lane / 4, lane % 4);
    let (x, w) = (p.x.as_ptr::<u8>(), p.w.as_ptr::<u8>());
    // Weight rows of fragment rows g (lo) and g + 8 (hi).
    let (r_lo, r_hi, ok_lo, ok_hi) = if GATE_UP {
        let c = blk * (SKINNY_ROWS / 2) + g;
        (c, n + c, c < n, c < n)
    } else {
        let r = blk * SKINNY_ROWS + g;
        (r, r + 8, r < n, r + 8 < n)
    };
    let first_col = if GATE_UP { blk * SKINNY_ROWS / 2 } else { blk * SKINNY_ROWS };
    if first_col >= n {
        arch::grid_dependency_wait();
        return;
    }
    let w_lo = if ok_lo { w.wrapping_add(r_lo * k * 2) } else { w };
    let w_hi = if ok_hi { w.wrapping_add(r_hi * k * 2) } else { w };
    let mut x_rows = [x; NT];
    let mut x_ok = [false; NT];
    unroll8!(NT, |t| {
        let tok = 8 * t + g;
        x_ok[t] = tok < m;
        x_rows[t] = if tok < m { x.wrapping_add(tok * k * 2) } else { x };
    });

    let steps = k.div_ceil(32);
    let mut acc = [[0f32; 4]; NT];
    let mut s0 = warp;
    // The first weight loads go out before the wait for the kernel that wrote `x`, so they
    // overlap its tail (programmatic dependent launch).
    let mut waited = false;
    while s0 < steps {
        let mut wl = [[0u32; 4]; SKINNY_UNROLL];
        let mut wh = [[0u32; 4]; SKINNY_UNROLL];
        let mut xv = [[[0u32; 4]; NT]; SKINNY_UNROLL];
        unroll8!(SKINNY_UNROLL, |u| {
            let s = s0 + u * warps;
            let kk = s * 32 + gm::skinny_k(tq);
            if s < steps && kk < k {
                // SAFETY: rows exist (ok flags), columns kk .. kk + 8 < k (k multiple of 8),
                // 16-byte aligned (host-checked); nothing writes w during the launch.
                unsafe {
                    if ok_lo {
                        wl[u] = ld_v4_stream(w_lo.add(kk * 2)).0;
                    }
                    if ok_hi {
                        wh[u] = ld_v4_stream(w_hi.add(kk * 2)).0;
                    }
                }
            }
        });
        if !waited {
            arch::grid_dependency_wait();
            arch::launch_dependents();
            waited = true;
        }
        unroll8!(SKINNY_UNROLL, |u| {
            let s = s0 + u * warps;
            let kk = s * 32 + gm::skinny_k(tq);
            if s < steps && kk < k {
                // SAFETY: token rows exist (x_ok), columns as above; x is complete (waited).
                unsafe {
                    unroll8!(NT, |t| {
                        if x_ok[t] {
                            xv[u][t] = arch::ld_v4(x_rows[t].add(kk * 2), true).0;
                        }
                    });
                }
            }
        });
        unroll8!(SKINNY_UNROLL, |u| {
            unroll8!(2, |j| {
                let a = gm::skinny_a(&wl[u], &wh[u], j);
                unroll8!(NT, |t| {
                    mma::<E>(&mut acc[t], &a, &gm::skinny_b(&xv[u][t], j));
                });
            });
        });
        s0 += warps * SKINNY_UNROLL;
    }
    if !waited {
        arch::grid_dependency_wait();
        arch::launch_dependents();
    }

    let red = (&raw mut SKINNY_RED).cast::<f32>();
    // SAFETY: warp < SKINNY_MAX_WARPS (host-checked block size), t < NT ≤ 2, c < 4,
    // lane < 32: inside SKINNY_RED.
    unroll8!(NT, |t| {
        unroll8!(4, |c| {
            // SAFETY: as above.
            unsafe { *red.add(((warp * 2 + t) * 4 + c) * 32 + lane) = acc[t][c] };
        });
    });
    arch::sync_threads();
    let sum = |t: usize, c: usize, l: usize| -> f32 {
        let mut s = 0f32;
        for wi in 0..warps {
            // SAFETY: indices as above; written before the barrier.
            s += unsafe { *red.add(((wi * 2 + t) * 4 + c) * 32 + l) };
        }
        s
    };
    let out = p.out.as_mut_ptr::<u8>();
    if GATE_UP {
        // One (tile, pair, lane) per thread: gate in register e, up in e + 2.
        let (t, e, l) = (tid / 64, (tid / 32) % 2, tid % 32);
        let (lg, ltq) = (l / 4, l % 4);
        let col = blk * (SKINNY_ROWS / 2) + lg;
        let tok = 8 * t + gm::acc_col(ltq, e);
        if t < NT && tok < m && col < n {
            let v = silu::<Libdevice>(sum(t, e, l)) * sum(t, e + 2, l);
            // SAFETY: tok < m, col < n: inside out.
            unsafe { E::store(out, tok * n + col, v) };
        }
    } else {
        let mut item = tid;
        while item < NT * 4 * 32 {
            let (t, c, l) = (item / 128, (item / 32) % 4, item % 32);
            let col = blk * SKINNY_ROWS + gm::acc_row(l / 4, c);
            let tok = 8 * t + gm::acc_col(l % 4, c);
            if tok < m && col < n {
                let mut v = sum(t, c, l);
                // SAFETY: tok < m, col < n: inside out, bias (n) and residual (m × n).
                unsafe {
                    if !p.bias.is_null() {
                        v += E::load(p.bias.as_ptr(), col);
                    }
                    if !p.residual.is_null() {
                        v += E::load(p.residual.as_ptr(), tok * n + col);
                    }
                    E::store(out, tok * n + col, v);
                }
            }
            item += threads;
        }
    }
}

#[inline(always)]
unsafe fn skinny_entry<E: Epilogue, const GATE_UP: bool>(p: GemmParams) {
    // SAFETY: as for `skinny`; m ≤ 16 and a block of 128 or 256 threads (host-checked);
    // larger m would leave rows unwritten.
    unsafe {
        match (p.m <= 8, arch::block_dim() == SKINNY_MAX_THREADS) {
            (true, false) => skinny::<E, GATE_UP, 1, { SKINNY_THREADS as usize / 32 }>(&p),
            (false, false) => skinny::<E, GATE_UP, 2, { SKINNY_THREADS as usize / 32 }>(&p),
            (true, true) => skinny::<E, GATE_UP, 1, SKINNY_MAX_WARPS>(&p),
            (false, true) => skinny::<E, GATE_UP, 2, SKINNY_MAX_WARPS>(&p),
        }
    }
}

entry!(@early gemm_skinny_bf16, GemmParams, |p| skinny_entry::<Bf16, false>(p));
entry!(@early gemm_skinny_f16, GemmParams, |p| skinny_entry::<F16, false>(p));
entry!(@early gate_up_silu_skinny_bf16, GemmParams, |p| skinny_entry::<Bf16, true>(p));
entry!(@early gate_up_silu_skinny_f16, GemmParams, |p| skinny_entry::<F16, true>(p));
entry!(gemm_tile128_bf16, GemmParams, |p: GemmParams| big::<Bf16, false, 128, 4, 1, TILE128_STAGES>(&p));
entry!(gemm_tile128_f16, GemmParams, |p: GemmParams| big::<F16, false, 128, 4, 1, TILE128_STAGES>(&p));
entry!(gate_up_silu_tile128_bf16, GemmParams, |p: GemmParams| big::<Bf16, true, 128, 4, 1, TILE128_STAGES>(&p));
entry!(gate_up_silu_tile128_f16, GemmParams, |p: GemmParams| big::<F16, true, 128, 4, 1, TILE128_STAGES>(&p));
entry!(gemm_tile64_bf16, GemmParams, |p: GemmParams| tiled::<Bf16, false, 64, 2, 1, 4>(&p));
entry!(gemm_tile64_f16, GemmParams, |p: GemmParams| tiled::<F16, false, 64, 2, 1, 4>(&p));
entry!(gate_up_silu_tile64_bf16, GemmParams, |p: GemmParams| tiled::<Bf16, true, 64, 2, 1, 4>(&p));
entry!(gate_up_silu_tile64_f16, GemmParams, |p: GemmParams| tiled::<F16, true, 64, 2, 1, 4>(&p));

const _: () = assert!(WARPS == 8 && TILE_K == 32 && gm::ROW_BYTES == 2 * TILE_K && 4 * (64 + 128) * 64 <= TILE_SMEM_BYTES);
