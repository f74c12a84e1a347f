//! Tensor-core and asynchronous-copy primitives for the GEMM kernels (sm_80+): `mma.sync`
//! m16n8k16 (bf16/f16 → f32), `ldmatrix.x4`, `cp.async` with its commit/wait groups, the
//! shared-window address of a shared static, and 32-bit / streaming global accesses.
//!
//! Every `.sync.aligned` instruction is executed by whole, converged warps (callers' duty);
//! none of these `asm!` blocks is `pure`, so LLVM does not move them across control flow or
//! barriers.

use crate::arch::{self, V4};
use crate::dtype::{Bf16, Storage, F16};
use core::arch::asm;

/// Repeats `$body` for `$k = 0 .. $n` (`$n` a constant ≤ 8) with `$k` a constant, so that
/// the register arrays it indexes stay in registers.
macro_rules! unroll8 {
    ($n:expr, |$k:ident| $body:block) => {
        unroll8!(@ $n, $k, $body, 0 1 2 3 4 5 6 7)
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
pub(crate) use unroll8;

/// The 16-bit element types the tensor cores multiply.
pub trait TcElem: Storage {
    const BF16: bool;
    /// Two f32 → packed pair (`lo` in the low half), round to nearest even.
    fn pack2(lo: f32, hi: f32) -> u32;
    /// A packed pair → two f32 (exact).
    fn unpack2(w: u32) -> [f32; 2];
}

impl TcElem for Bf16 {
    const BF16: bool = true;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        arch::pack_bf16x2(lo, hi)
    }
    #[inline(always)]
    fn unpack2(w: u32) -> [f32; 2] {
        [f32::from_bits(w << 16), f32::from_bits(w & 0xffff_0000)]
    }
}

impl TcElem for F16 {
    const BF16: bool = false;
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        arch::pack_f16x2(lo, hi)
    }
    #[inline(always)]
    fn unpack2(w: u32) -> [f32; 2] {
        [arch::f16_to_f32(w as u16), arch::f16_to_f32((w >> 16) as u16)]
    }
}

/// `c += A·B` for one `m16n8k16` tile (f32 accumulators; fragment layouts in
/// `kernel_math::gemm`).
#[inline(always)]
pub fn mma<E: TcElem>(c: &mut [f32; 4], a: &[u32; 4], b: &[u32; 2]) {
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

/// The shared-window (32-bit) address of a shared-memory object.
#[inline(always)]
pub fn shared_addr<T>(p: *const T) -> u32 {
    let r: u64;
    // SAFETY: an address conversion, no memory access.
    unsafe { asm!("cvta.to.shared.u64 {0}, {1};", out(reg64) r, in(reg64) p as u64, options(pure, nomem, nostack, preserves_flags)) };
    r as u32
}

/// `ldmatrix.x4`: four 8 × 8 16-bit matrices; lane `l` gives the address of row `l % 8` of
/// matrix `l / 8` and receives row `l / 4`, elements `2 (l % 4) ..` of each.
///
/// # Safety
/// `addr` is a 16-byte aligned shared address of 16 readable bytes; the whole warp executes
/// this converged.
#[inline(always)]
pub unsafe fn ldmatrix_x4(addr: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: guaranteed by the caller. Not `readonly`: it must stay after the barrier that
    // publishes the `cp.async` writes it reads.
    unsafe {
        asm!("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{0}, {1}, {2}, {3}}}, [{4}];",
            out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, options(nostack, preserves_flags));
    }
    [a, b, c, d]
}

/// `cp.async.cg` of 16 bytes from global `src` to shared `dst`; with `valid == false` the
/// destination is zero-filled and `src` is not read (it must still be a valid address).
///
/// # Safety
/// `dst` is a 16-byte aligned shared address; when `valid`, `src` is a 16-byte aligned
/// global address with 16 readable bytes.
#[inline(always)]
pub unsafe fn cp_async_16(dst: u32, src: *const u8, valid: bool) {
    let bytes: u32 = if valid { 16 } else { 0 };
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("cp.async.cg.shared.global [{0}], [{1}], 16, {2};", in(reg32) dst, in(reg64) src, in(reg32) bytes, options(nostack, preserves_flags));
    }
}

/// Closes the group of `cp.async` copies issued since the last commit.
#[inline(always)]
pub fn cp_async_commit() {
    // SAFETY: no operands; orders nothing by itself.
    unsafe { asm!("cp.async.commit_group;", options(nostack, preserves_flags)) };
}

/// Waits until at most `n` (0..=3, a constant after inlining) committed `cp.async` groups
/// of this thread are pending.
#[inline(always)]
pub fn cp_async_wait(n: usize) {
    // SAFETY: waits on this thread's own copies; not `nomem`, so shared-memory reads are not
    // hoisted above it.
    unsafe {
        match n {
            0 => asm!("cp.async.wait_group 0;", options(nostack, preserves_flags)),
            1 => asm!("cp.async.wait_group 1;", options(nostack, preserves_flags)),
            2 => asm!("cp.async.wait_group 2;", options(nostack, preserves_flags)),
            _ => asm!("cp.async.wait_group 3;", options(nostack, preserves_flags)),
        }
    }
}

/// 4-byte load from global memory (coherent path: for data the caller does not own).
///
/// # Safety
/// `p` is a 4-byte aligned global address with 4 readable bytes.
#[inline(always)]
pub unsafe fn ld_u32(p: *const u8) -> u32 {
    let v: u32;
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("ld.global.u32 {0}, [{1}];", out(reg32) v, in(reg64) p, options(nostack, readonly, preserves_flags)) };
    v
}

/// 4-byte store to global memory.
///
/// # Safety
/// `p` is a 4-byte aligned global address with 4 writable bytes.
#[inline(always)]
pub unsafe fn st_u32(p: *mut u8, v: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("st.global.u32 [{0}], {1};", in(reg64) p, in(reg32) v, options(nostack, preserves_flags)) };
}

/// 16-byte streaming load of data read once (weights of a skinny GEMM): read-only path,
/// not kept in L1.
///
/// # Safety
/// `p` is a 16-byte aligned global address with 16 readable bytes that nothing writes
/// during the launch.
#[inline(always)]
pub unsafe fn ld_v4_stream(p: *const u8) -> V4 {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.global.nc.L1::no_allocate.v4.u32 {{{0}, {1}, {2}, {3}}}, [{4}];",
            out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg64) p, options(nostack, readonly, preserves_flags));
    }
    V4([a, b, c, d])
}
