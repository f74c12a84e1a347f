//! The "K" super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and Q8_K), 256 elements a
//! block, split into 16- or 32-element sub-blocks with their own small integer scales.
//!
//! Layouts (ggml's `block_q*_K`, packed, little-endian, `QK_K = 256`):
//!
//! - Q2_K (84 B): `scales[16]` (low nibble scale, high nibble min), `qs[64]` (2-bit),
//!   `d: f16`, `dmin: f16`. Element: `d * sc * q - dmin * m`.
//! - Q3_K (110 B): `hmask[32]`, `qs[64]` (low 2 bits), `scales[12]` (16 packed 6-bit
//!   scales, biased by 32), `d: f16`. Element: `d * (sc - 32) * (q - (hbit ? 0 : 4))`.
//! - Q4_K (144 B): `d: f16`, `dmin: f16`, `scales[12]` (8 packed 6-bit scale/min pairs,
//!   ggml's `get_scale_min_k4`), `qs[128]` (4-bit). Element: `d * sc * q - dmin * m`.
//! - Q5_K (176 B): Q4_K's header, then `qh[32]` (bit 4) and `qs[128]`.
//! - Q6_K (210 B): `ql[128]` (low 4 bits), `qh[64]` (high 2 bits), `scales[16]: i8`,
//!   `d: f16`. Element: `d * sc * (q - 32)`.
//! - Q8_K (292 B): `d: f32`, `qs[256]: i8`, `bsums[16]: i16` (unused here). Element: `d * q`.
//!
//! Products are evaluated left to right as ggml writes them (`(d * sc) * q - dmin * m`).

use super::f16_at;
use crate::ggml::GgmlType;

/// Elements per K super-block.
pub const QK_K: usize = 256;
pub const Q2_K_BYTES: usize = 84;
pub const Q3_K_BYTES: usize = 110;
pub const Q4_K_BYTES: usize = 144;
pub const Q5_K_BYTES: usize = 176;
pub const Q6_K_BYTES: usize = 210;
pub const Q8_K_BYTES: usize = 292;

const _: () = {
    assert!(QK_K == GgmlType::Q4K.block_size());
    assert!(Q2_K_BYTES == GgmlType::Q2K.type_size());
    assert!(Q3_K_BYTES == GgmlType::Q3K.type_size());
    assert!(Q4_K_BYTES == GgmlType::Q4K.type_size());
    assert!(Q5_K_BYTES == GgmlType::Q5K.type_size());
    assert!(Q6_K_BYTES == GgmlType::Q6K.type_size());
    assert!(Q8_K_BYTES == GgmlType::Q8K.type_size());
};

/// Dequantises one Q2_K block.
pub fn q2_k(b: &[u8; Q2_K_BYTES], y: &mut [f32; QK_K]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut is = 0;
    let mut yi = 0;
    for q in b[16..80].chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for half in q.chunks_exact(16) {
                let sc = scales[is];
                is += 1;
                let dl = d * f32::from(sc & 0x0F);
                let ml = dmin * f32::from(sc >> 4);
                for &ql in half {
                    y[yi] = dl * f32::from((ql >> shift) & 3) - ml;
                    yi += 1;
                }
            }
        }
    }
}

/// The 16 six-bit Q3_K scales (still biased by 32) from their 12 packed bytes: scale `i`
/// has its low nibble in `s[i % 8]` (nibble `i / 8`) and its top two bits in
/// `s[8 + i % 4]` (bit pair `i / 4`).
fn q3_k_scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let lo = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
        let hi = (s[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *o = i32::from(lo | (hi << 4)) - 32;
    }
    out
}

/// Dequantises one Q3_K block.
pub fn q3_k(b: &[u8; Q3_K_BYTES], y: &mut [f32; QK_K]) {
    let hmask = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    let mut is = 0;
    let mut yi = 0;
    let mut m = 1u8;
    for q in b[32..96].chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for h in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in 16 * h..16 * h + 16 {
                    let low = i32::from((q[l] >> shift) & 3);
                    let v = if hmask[l] & m != 0 { low } else { low - 4 };
                    y[yi] = dl * v as f32;
                    yi += 1;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// ggml's `get_scale_min_k4`: scale and min of sub-block `j` (0..8) from the 12 packed
/// bytes of a Q4_K/Q5_K block. Sub-blocks 0..4 use the low six bits of `s[j]` and
/// `s[j + 4]`; 4..8 take their low nibbles from `s[j + 4]` and their top two bits from the
/// spare high bits of `s[j - 4]` and `s[j]`.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Scale and min pairs `(d * sc, dmin * m)` of sub-blocks `2k` and `2k + 1`.
#[inline(always)]
fn k4_pair(d: f32, dmin: f32, s: &[u8], k: usize) -> [(f32, f32); 2] {
    let (sc1, m1) = get_scale_min_k4(2 * k, s);
    let (sc2, m2) = get_scale_min_k4(2 * k + 1, s);
    [
        (d * f32::from(sc1), dmin * f32::from(m1)),
        (d * f32::from(sc2), dmin * f32::from(m2)),
    ]
}

/// Dequantises one Q4_K block.
pub fn q4_k(b: &[u8; Q4_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    for (k, (q, y)) in b[16..]
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(64))
        .enumerate()
    {
        let [(d1, m1), (d2, m2)] = k4_pair(d, dmin, scales, k);
        let (lo, hi) = y.split_at_mut(32);
        for ((&q, lo), hi) in q.iter().zip(lo).zip(hi) {
            *lo = d1 * f32::from(q & 0x0F) - m1;
            *hi = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// Dequantises one Q5_K block.
pub fn q5_k(b: &[u8; Q5_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    for (k, (ql, y)) in b[48..]
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(64))
        .enumerate()
    {
        let [(d1, m1), (d2, m2)] = k4_pair(d, dmin, scales, k);
        let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
        let (lo, hi) = y.split_at_mut(32);
        for (l, (lo, hi)) in lo.iter_mut().zip(hi).enumerate() {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            *lo = d1 * f32::from((ql[l] & 0x0F) + h1) - m1;
            *hi = d2 * f32::from((ql[l] >> 4) + h2) - m2;
        }
    }
}

/// Dequantises one Q6_K block.
pub fn q6_k(b: &[u8; Q6_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |i: usize| d * f32::from(sc[is + i] as i8);
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// Dequantises one Q8_K block (the block sums are not needed).
pub fn q8_k(b: &[u8; Q8_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    for (y, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
        *y = d * f32::from(q as i8);
    }
}
