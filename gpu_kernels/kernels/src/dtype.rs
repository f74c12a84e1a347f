//! Storage types: how f32 values are loaded from and stored to each tensor dtype.
//!
//! Access is by groups of `W` consecutive elements ("chunks"): `W = 1` is a scalar access;
//! larger `W` moves `W × size` bytes (4, 8, 16 or 32) with one or two vector instructions,
//! which requires the chunk address to be aligned to `min(W × size, 16)` bytes.

use crate::arch;
use kernel_math::codec::bf16_bits_to_f32;

/// Elements per 16 bytes of 16-bit storage: the widest chunk the kernels use.
pub const CHUNK: usize = 8;

/// A tensor element type with f32 math.
pub trait Storage: 'static {
    /// Bytes per element.
    const SIZE: usize;
    /// Element `i` of the tensor at `base`.
    unsafe fn load(base: *const u8, i: usize) -> f32;
    /// Writes element `i` of the tensor at `base`.
    unsafe fn store(base: *mut u8, i: usize, v: f32);
    /// Element `i` of packed little-endian words.
    fn decode(words: &[u32; 8], i: usize) -> f32;
    /// Packs `v` (even length for 16-bit types) into words.
    fn encode<const W: usize>(v: &[f32; W], words: &mut [u32; 8]);
    /// `v` rounded to this storage type and back (what a store then a load would give).
    fn round(v: f32) -> f32;
}

pub struct F32;
pub struct F16;
pub struct Bf16;

impl Storage for F32 {
    const SIZE: usize = 4;
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
    fn decode(words: &[u32; 8], i: usize) -> f32 {
        f32::from_bits(words[i])
    }
    #[inline(always)]
    fn encode<const W: usize>(v: &[f32; W], words: &mut [u32; 8]) {
        for k in 0..W {
            words[k] = v[k].to_bits();
        }
    }
    #[inline(always)]
    fn round(v: f32) -> f32 {
        v
    }
}

impl Storage for Bf16 {
    const SIZE: usize = 2;
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
    fn decode(words: &[u32; 8], i: usize) -> f32 {
        bf16_bits_to_f32((words[i / 2] >> (16 * (i % 2))) as u16)
    }
    #[inline(always)]
    fn encode<const W: usize>(v: &[f32; W], words: &mut [u32; 8]) {
        for k in 0..W / 2 {
            words[k] = arch::pack_bf16x2(v[2 * k], v[2 * k + 1]);
        }
    }
    #[inline(always)]
    fn round(v: f32) -> f32 {
        bf16_bits_to_f32(arch::f32_to_bf16(v))
    }
}

impl Storage for F16 {
    const SIZE: usize = 2;
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
    fn decode(words: &[u32; 8], i: usize) -> f32 {
        arch::f16_to_f32((words[i / 2] >> (16 * (i % 2))) as u16)
    }
    #[inline(always)]
    fn encode<const W: usize>(v: &[f32; W], words: &mut [u32; 8]) {
        for k in 0..W / 2 {
            words[k] = arch::pack_f16x2(v[2 * k], v[2 * k + 1]);
        }
    }
    #[inline(always)]
    fn round(v: f32) -> f32 {
        arch::f16_to_f32(arch::f32_to_f16(v))
    }
}

/// True when every address is a multiple of 16 (null addresses count as aligned).
#[inline(always)]
pub fn aligned16(addrs: &[u64]) -> bool {
    aligned(addrs, 16)
}

/// True when every address is a multiple of `align` (a power of two).
#[inline(always)]
pub fn aligned(addrs: &[u64], align: u64) -> bool {
    addrs.iter().fold(0u64, |acc, a| acc | a) & (align - 1) == 0
}

/// Loads chunk `c` (elements `W c .. W c + W`). `nc` selects the read-only path (only for
/// data nothing writes during the launch).
///
/// # Safety
/// The chunk is in bounds; for `W > 1` its address is aligned to `min(W × size, 16)`.
#[inline(always)]
pub unsafe fn load_w<S: Storage, const W: usize>(base: *const u8, c: usize, nc: bool) -> [f32; W] {
    let mut out = [0f32; W];
    if W == 1 {
        // SAFETY: in bounds per the caller.
        out[0] = unsafe { S::load(base, c) };
        return out;
    }
    let bytes = W * S::SIZE;
    // SAFETY: in bounds and aligned per the caller.
    let words = unsafe { arch::ld_words(base.add(c * bytes), bytes, nc) };
    for k in 0..W {
        out[k] = S::decode(&words, k);
    }
    out
}

/// Stores chunk `c` (elements `W c .. W c + W`).
///
/// # Safety
/// As for [`load_w`].
#[inline(always)]
pub unsafe fn store_w<S: Storage, const W: usize>(base: *mut u8, c: usize, v: [f32; W]) {
    if W == 1 {
        // SAFETY: in bounds per the caller.
        unsafe { S::store(base, c, v[0]) };
        return;
    }
    let bytes = W * S::SIZE;
    let mut words = [0u32; 8];
    S::encode(&v, &mut words);
    // SAFETY: in bounds and aligned per the caller.
    unsafe { arch::st_words(base.add(c * bytes), bytes, &words) }
}
