//! Storage types: how f32 values are loaded from and stored to each tensor dtype, one
//! element or one 8-element chunk (16 bytes for 16-bit types, 32 bytes for f32) at a time.

use crate::arch::{self, V4};
use kernel_math::codec::{bf16_bits_to_f32, unpack_bf16x2};

/// Elements per vector chunk, for every storage type.
pub const CHUNK: usize = 8;

/// A tensor element type with f32 math.
pub trait Storage: 'static {
    /// Bytes per element.
    const SIZE: usize;
    /// Element `i` of the tensor at `base`.
    unsafe fn load(base: *const u8, i: usize) -> f32;
    /// Writes element `i` of the tensor at `base`.
    unsafe fn store(base: *mut u8, i: usize, v: f32);
    /// Chunk `c` (elements `8c..8c+8`) of a 16-byte-aligned tensor; `nc` selects the
    /// read-only path (only for data nothing writes during the launch).
    unsafe fn load8(base: *const u8, c: usize, nc: bool) -> [f32; CHUNK];
    /// Writes chunk `c` of a 16-byte-aligned tensor.
    unsafe fn store8(base: *mut u8, c: usize, v: [f32; CHUNK]);
    /// `v` rounded to this storage type and back (what a store then a load would give).
    fn round(v: f32) -> f32;
}

#[inline(always)]
unsafe fn ld(p: *const u8, nc: bool) -> V4 {
    // SAFETY: forwarded from the caller's contract.
    unsafe { if nc { arch::ld_nc_v4(p) } else { arch::ld_v4(p) } }
}

pub struct F32;
pub struct F16;
pub struct Bf16;

impl Storage for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    fn round(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn load(base: *const u8, i: usize) -> f32 {
        // SAFETY: the caller passes an in-bounds index.
        unsafe { *(base as *const f32).add(i) }
    }
    #[inline(always)]
    unsafe fn store(base: *mut u8, i: usize, v: f32) {
        // SAFETY: the caller passes an in-bounds index.
        unsafe { *(base as *mut f32).add(i) = v }
    }
    #[inline(always)]
    unsafe fn load8(base: *const u8, c: usize, nc: bool) -> [f32; CHUNK] {
        // SAFETY: chunk `c` is in bounds and aligned (caller's contract).
        let (a, b) = unsafe { (ld(base.add(32 * c), nc), ld(base.add(32 * c + 16), nc)) };
        let mut out = [0f32; CHUNK];
        for k in 0..4 {
            out[k] = f32::from_bits(a.0[k]);
            out[4 + k] = f32::from_bits(b.0[k]);
        }
        out
    }
    #[inline(always)]
    unsafe fn store8(base: *mut u8, c: usize, v: [f32; CHUNK]) {
        let a = V4([v[0].to_bits(), v[1].to_bits(), v[2].to_bits(), v[3].to_bits()]);
        let b = V4([v[4].to_bits(), v[5].to_bits(), v[6].to_bits(), v[7].to_bits()]);
        // SAFETY: chunk `c` is in bounds and aligned (caller's contract).
        unsafe {
            arch::st_v4(base.add(32 * c), a);
            arch::st_v4(base.add(32 * c + 16), b);
        }
    }
}

impl Storage for Bf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn round(v: f32) -> f32 {
        bf16_bits_to_f32(arch::f32_to_bf16(v))
    }
    #[inline(always)]
    unsafe fn load(base: *const u8, i: usize) -> f32 {
        // SAFETY: the caller passes an in-bounds index.
        bf16_bits_to_f32(unsafe { *(base as *const u16).add(i) })
    }
    #[inline(always)]
    unsafe fn store(base: *mut u8, i: usize, v: f32) {
        // SAFETY: the caller passes an in-bounds index.
        unsafe { *(base as *mut u16).add(i) = arch::f32_to_bf16(v) }
    }
    #[inline(always)]
    unsafe fn load8(base: *const u8, c: usize, nc: bool) -> [f32; CHUNK] {
        // SAFETY: chunk `c` is in bounds and aligned (caller's contract).
        let w = unsafe { ld(base.add(16 * c), nc) };
        let mut out = [0f32; CHUNK];
        for k in 0..4 {
            let (lo, hi) = unpack_bf16x2(w.0[k]);
            out[2 * k] = lo;
            out[2 * k + 1] = hi;
        }
        out
    }
    #[inline(always)]
    unsafe fn store8(base: *mut u8, c: usize, v: [f32; CHUNK]) {
        let mut w = V4::default();
        for k in 0..4 {
            w.0[k] = arch::pack_bf16x2(v[2 * k], v[2 * k + 1]);
        }
        // SAFETY: chunk `c` is in bounds and aligned (caller's contract).
        unsafe { arch::st_v4(base.add(16 * c), w) }
    }
}

impl Storage for F16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn round(v: f32) -> f32 {
        arch::f16_to_f32(arch::f32_to_f16(v))
    }
    #[inline(always)]
    unsafe fn load(base: *const u8, i: usize) -> f32 {
        // SAFETY: the caller passes an in-bounds index.
        arch::f16_to_f32(unsafe { *(base as *const u16).add(i) })
    }
    #[inline(always)]
    unsafe fn store(base: *mut u8, i: usize, v: f32) {
        // SAFETY: the caller passes an in-bounds index.
        unsafe { *(base as *mut u16).add(i) = arch::f32_to_f16(v) }
    }
    #[inline(always)]
    unsafe fn load8(base: *const u8, c: usize, nc: bool) -> [f32; CHUNK] {
        // SAFETY: chunk `c` is in bounds and aligned (caller's contract).
        let w = unsafe { ld(base.add(16 * c), nc) };
        let mut out = [0f32; CHUNK];
        for k in 0..4 {
            out[2 * k] = arch::f16_to_f32(w.0[k] as u16);
            out[2 * k + 1] = arch::f16_to_f32((w.0[k] >> 16) as u16);
        }
        out
    }
    #[inline(always)]
    unsafe fn store8(base: *mut u8, c: usize, v: [f32; CHUNK]) {
        let mut w = V4::default();
        for k in 0..4 {
            w.0[k] = arch::pack_f16x2(v[2 * k], v[2 * k + 1]);
        }
        // SAFETY: chunk `c` is in bounds and aligned (caller's contract).
        unsafe { arch::st_v4(base.add(16 * c), w) }
    }
}

/// True when every address is a multiple of 16 (null addresses count as aligned).
#[inline(always)]
pub fn aligned16(addrs: &[u64]) -> bool {
    addrs.iter().fold(0u64, |acc, a| acc | a) & 15 == 0
}

/// Loads `W` consecutive elements starting at `W * c` (`W` is 8 for the vector path, 1 for
/// the scalar path).
#[inline(always)]
pub unsafe fn load_w<S: Storage, const W: usize>(base: *const u8, c: usize, nc: bool) -> [f32; W] {
    let mut out = [0f32; W];
    if W == CHUNK {
        // SAFETY: the vector path is taken only when aligned and in bounds.
        let v = unsafe { S::load8(base, c, nc) };
        out.copy_from_slice(&v[..W]);
    } else {
        for k in 0..W {
            // SAFETY: in bounds per the caller.
            out[k] = unsafe { S::load(base, W * c + k) };
        }
    }
    out
}

/// Stores `W` consecutive elements starting at `W * c`.
#[inline(always)]
pub unsafe fn store_w<S: Storage, const W: usize>(base: *mut u8, c: usize, v: [f32; W]) {
    if W == CHUNK {
        let mut x = [0f32; CHUNK];
        x.copy_from_slice(&v[..CHUNK]);
        // SAFETY: the vector path is taken only when aligned and in bounds.
        unsafe { S::store8(base, c, x) }
    } else {
        for k in 0..W {
            // SAFETY: in bounds per the caller.
            unsafe { S::store(base, W * c + k, v[k]) }
        }
    }
}
