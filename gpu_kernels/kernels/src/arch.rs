//! Hardware access: thread indices, warp shuffles, barriers, 16-byte global loads and
//! stores, 16-bit float conversions, and libdevice's math functions.
//!
//! Warp and barrier operations are LLVM intrinsics (which LLVM knows are convergent), never
//! `asm!` marked pure. Memory `asm!` is never `pure`, so it is not reordered across barriers.

use core::arch::asm;

/// Repeats a block for `k = 0, 1, 2, 3` with `k` a constant, so that register arrays indexed
/// by `k` stay in registers (LLVM does not fully unroll loops with large bodies, and a
/// register array indexed at run time moves to local memory).
macro_rules! unroll4 {
    (|$k:ident| $body:block) => {{
        { let $k: usize = 0; $body }
        { let $k: usize = 1; $body }
        { let $k: usize = 2; $body }
        { let $k: usize = 3; $body }
    }};
}
pub(crate) use unroll4;
use core::arch::nvptx;

#[inline(always)]
pub fn thread_idx() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_thread_idx_x() as u32 }
}

#[inline(always)]
pub fn block_idx() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_x() as u32 }
}

/// `blockIdx.y`.
#[inline(always)]
pub fn block_idx_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_y() as u32 }
}

/// `blockIdx.z`.
#[inline(always)]
pub fn block_idx_z() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_z() as u32 }
}

#[inline(always)]
pub fn block_dim() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_dim_x() as u32 }
}

#[inline(always)]
pub fn grid_dim() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_x() as u32 }
}

/// `__syncthreads()`: every thread of the block must reach it.
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: a block-wide barrier; callers keep it out of divergent code.
    unsafe { nvptx::_syncthreads() }
}

/// Programmatic dependent launch (sm_90+): waits until the grids this one depends on have
/// completed and their writes are visible. Every kernel calls it before it reads anything an
/// earlier kernel wrote or writes anything an earlier kernel may still read; only constant
/// data (weights) may be read before it. A no-op when the launch had no programmatic
/// dependency, and not emitted for architectures before sm_90 (the host never launches
/// their PTX with the attribute).
#[inline(always)]
pub fn grid_dependency_wait() {
    #[cfg(any(target_feature = "sm_90", target_feature = "sm_90a", target_feature = "sm_100", target_feature = "sm_100a", target_feature = "sm_120", target_feature = "sm_120a"))]
    // SAFETY: a scheduling barrier with no operands; not `nomem`, so no memory access moves
    // across it.
    unsafe {
        asm!("griddepcontrol.wait;", options(nostack, preserves_flags))
    };
}

/// Programmatic dependent launch (sm_90+): lets the next kernel on the stream (launched with
/// programmatic stream serialization) start its blocks, which then run up to their own
/// [`grid_dependency_wait`]. Called right after this kernel's wait, so at most one grid runs
/// ahead.
#[inline(always)]
pub fn launch_dependents() {
    #[cfg(any(target_feature = "sm_90", target_feature = "sm_90a", target_feature = "sm_100", target_feature = "sm_100a", target_feature = "sm_120", target_feature = "sm_120a"))]
    // SAFETY: a scheduling hint with no operands.
    unsafe {
        asm!("griddepcontrol.launch_dependents;", options(nostack, preserves_flags))
    };
}

unsafe extern "C" {
    #[link_name = "llvm.nvvm.shfl.sync.bfly.f32"]
    fn shfl_sync_bfly_f32(mask: u32, value: f32, lane_mask: u32, clamp: u32) -> f32;
    #[link_name = "llvm.nvvm.shfl.sync.idx.i32"]
    fn shfl_sync_idx_i32(mask: u32, value: u32, src_lane: u32, clamp: u32) -> u32;

    fn __nv_expf(x: f32) -> f32;
    fn __nv_tanhf(x: f32) -> f32;
    fn __nv_erff(x: f32) -> f32;
    fn __nv_sinf(x: f32) -> f32;
    fn __nv_cosf(x: f32) -> f32;
    fn __nv_rsqrtf(x: f32) -> f32;
}

/// Butterfly exchange with the lane `lane ^ lane_mask` (whole warp must participate).
#[inline(always)]
pub fn shfl_xor(value: f32, lane_mask: u32) -> f32 {
    // SAFETY: full-warp mask; every kernel calls this from converged code.
    unsafe { shfl_sync_bfly_f32(0xffff_ffff, value, lane_mask, 0x1f) }
}

/// The value of `value` in lane `src_lane` (whole warp must participate).
#[inline(always)]
pub fn shfl_idx_u32(value: u32, src_lane: u32) -> u32 {
    // SAFETY: full-warp mask; callers call this from converged code.
    unsafe { shfl_sync_idx_i32(0xffff_ffff, value, src_lane, 0x1f) }
}

/// The value of `value` in lane `src_lane` (whole warp must participate).
#[inline(always)]
pub fn shfl_idx_f32(value: f32, src_lane: u32) -> f32 {
    f32::from_bits(shfl_idx_u32(value.to_bits(), src_lane))
}

/// `__ballot_sync(0xffffffff, pred)`: bit `i` set when lane `i`'s `pred` holds (whole warp
/// must participate).
#[inline(always)]
pub fn ballot(pred: bool) -> u32 {
    let r: u32;
    // SAFETY: register-only warp vote over the full (converged) warp.
    unsafe {
        asm!(
            "{{ .reg .pred p; setp.ne.u32 p, {1}, 0; vote.sync.ballot.b32 {0}, p, 0xffffffff; }}",
            out(reg32) r, in(reg32) pred as u32, options(nomem, nostack, preserves_flags)
        )
    };
    r
}

/// libdevice-backed transcendentals for `kernel_math`'s formulas.
pub struct Libdevice;

impl kernel_math::Transcendentals for Libdevice {
    #[inline(always)]
    fn exp(x: f32) -> f32 {
        // SAFETY: pure libdevice function.
        unsafe { __nv_expf(x) }
    }
    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        // SAFETY: pure libdevice function.
        unsafe { __nv_tanhf(x) }
    }
    #[inline(always)]
    fn erf(x: f32) -> f32 {
        // SAFETY: pure libdevice function.
        unsafe { __nv_erff(x) }
    }
    #[inline(always)]
    fn sin_cos(x: f32) -> (f32, f32) {
        // SAFETY: pure libdevice functions.
        unsafe { (__nv_sinf(x), __nv_cosf(x)) }
    }
    #[inline(always)]
    fn rsqrt(x: f32) -> f32 {
        // SAFETY: pure libdevice function.
        unsafe { __nv_rsqrtf(x) }
    }
}

/// `2^x` by the special-function unit (`ex2.approx.ftz`: about 2 ulp, subnormals flushed):
/// for softmax, whose inputs are pre-scaled by log2(e).
#[inline(always)]
pub fn exp2_approx(x: f32) -> f32 {
    let r: f32;
    // SAFETY: register-only instruction.
    unsafe { asm!("ex2.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack, preserves_flags)) };
    r
}

/// Sixteen bytes: the unit of vectorised global access.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default)]
pub struct V4(pub [u32; 4]);

macro_rules! ld_asm {
    ($p:expr, $nc:expr, $ins:literal, $ins_nc:literal, $($o:ident),+) => {{
        // SAFETY: the caller guarantees an aligned, readable global address.
        unsafe {
            if $nc {
                asm!($ins_nc, $(out(reg32) $o,)+ in(reg64) $p, options(nostack, readonly, preserves_flags));
            } else {
                asm!($ins, $(out(reg32) $o,)+ in(reg64) $p, options(nostack, readonly, preserves_flags));
            }
        }
    }};
}

/// 16-byte load from global memory; `nc` uses the read-only path (for data that no thread
/// of this launch writes: weights, tables).
///
/// # Safety
/// `p` is a 16-byte-aligned global address with 16 readable bytes.
#[inline(always)]
pub unsafe fn ld_v4(p: *const u8, nc: bool) -> V4 {
    let (a, b, c, d): (u32, u32, u32, u32);
    ld_asm!(p, nc, "ld.global.v4.u32 {{{0}, {1}, {2}, {3}}}, [{4}];", "ld.global.nc.v4.u32 {{{0}, {1}, {2}, {3}}}, [{4}];", a, b, c, d);
    V4([a, b, c, d])
}

/// 4-byte load from global memory through the read-only path (data no thread of this
/// launch writes).
///
/// # Safety
/// `p` is a 4-byte-aligned global address with 4 readable bytes.
#[inline(always)]
pub unsafe fn ld_u32_nc(p: *const u32) -> u32 {
    let a: u32;
    ld_asm!(p, true, "ld.global.u32 {0}, [{1}];", "ld.global.nc.u32 {0}, [{1}];", a);
    a
}

/// 16-byte store to global memory.
///
/// # Safety
/// `p` is a 16-byte-aligned global address with 16 writable bytes.
#[inline(always)]
pub unsafe fn st_v4(p: *mut u8, v: V4) {
    let [a, b, c, d] = v.0;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("st.global.v4.u32 [{0}], {{{1}, {2}, {3}, {4}}};",
            in(reg64) p, in(reg32) a, in(reg32) b, in(reg32) c, in(reg32) d,
            options(nostack, preserves_flags));
    }
}

/// Loads `bytes` (4, 8, 16 or 32, a compile-time constant at every call) into words.
///
/// # Safety
/// `p` is a global address aligned to `min(bytes, 16)` with `bytes` readable bytes.
#[inline(always)]
pub unsafe fn ld_words(p: *const u8, bytes: usize, nc: bool) -> [u32; 8] {
    let mut w = [0u32; 8];
    match bytes {
        4 => {
            let a: u32;
            ld_asm!(p, nc, "ld.global.u32 {0}, [{1}];", "ld.global.nc.u32 {0}, [{1}];", a);
            w[0] = a;
        }
        8 => {
            let (a, b): (u32, u32);
            ld_asm!(p, nc, "ld.global.v2.u32 {{{0}, {1}}}, [{2}];", "ld.global.nc.v2.u32 {{{0}, {1}}}, [{2}];", a, b);
            w[0] = a;
            w[1] = b;
        }
        _ => {
            // SAFETY: per the caller (16 or 32 bytes, 16-byte aligned).
            let lo = unsafe { ld_v4(p, nc) };
            w[..4].copy_from_slice(&lo.0);
            if bytes == 32 {
                // SAFETY: as above.
                let hi = unsafe { ld_v4(p.add(16), nc) };
                w[4..].copy_from_slice(&hi.0);
            }
        }
    }
    w
}

/// Stores the first `bytes / 4` words (4, 8, 16 or 32 bytes, a compile-time constant).
///
/// # Safety
/// `p` is a global address aligned to `min(bytes, 16)` with `bytes` writable bytes.
#[inline(always)]
pub unsafe fn st_words(p: *mut u8, bytes: usize, w: &[u32; 8]) {
    // SAFETY (all arms): guaranteed by the caller.
    unsafe {
        match bytes {
            4 => asm!("st.global.u32 [{0}], {1};", in(reg64) p, in(reg32) w[0], options(nostack, preserves_flags)),
            8 => asm!("st.global.v2.u32 [{0}], {{{1}, {2}}};", in(reg64) p, in(reg32) w[0], in(reg32) w[1], options(nostack, preserves_flags)),
            _ => {
                st_v4(p, V4([w[0], w[1], w[2], w[3]]));
                if bytes == 32 {
                    st_v4(p.add(16), V4([w[4], w[5], w[6], w[7]]));
                }
            }
        }
    }
}

/// Two f32 → packed bf16x2 (`lo` in the low half), round to nearest even.
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: register-only conversion.
    unsafe {
        asm!("cvt.rn.bf16x2.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) hi.to_bits(), in(reg32) lo.to_bits(),
            options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// Two f32 → packed f16x2 (`lo` in the low half), round to nearest even.
#[inline(always)]
pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: register-only conversion.
    unsafe {
        asm!("cvt.rn.f16x2.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) hi.to_bits(), in(reg32) lo.to_bits(),
            options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// f32 → bf16 bits, round to nearest even.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    pack_bf16x2(x, 0.0) as u16
}

/// f32 → f16 bits, round to nearest even.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    (x as f16).to_bits()
}

/// f16 bits → f32 (exact).
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits) as f32
}
