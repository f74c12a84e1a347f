//! ggml's reference quantisers (`quantize_row_*_ref`) for the legacy 32-element formats.
//!
//! Each function quantises `x` (whole 32-element blocks) into `out` (exactly the block
//! bytes for `x.len()` elements) with ggml's arithmetic: the scale is computed in `f32`
//! and stored rounded to f16 (round to nearest even), the quants are computed from the
//! unrounded `f32` scale, as ggml does. Layouts are described in [`crate::dequant::legacy`].
//!
//! Finite inputs give exactly ggml's bytes. Non-finite inputs never panic but give
//! unspecified blocks (as in ggml); a block whose scale overflows f16 stores an infinite
//! scale.

use half::f16;

use crate::dequant::legacy::{Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, QK};
use crate::dequant::{DequantError, check_lengths};
use crate::ggml::GgmlType;

/// `|v|` (core's `f32::abs` is newer than this crate's minimum Rust).
#[inline(always)]
fn fabsf(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0x7FFF_FFFF)
}

/// C's `roundf`: nearest integer, halves away from zero. Exact for |v| < 2^31.
#[inline(always)]
fn roundf(v: f32) -> f32 {
    let t = v as i32 as f32; // truncation toward zero
    let frac = v - t; // exact
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

#[inline(always)]
fn put_f16(out: &mut [u8], at: usize, v: f32) {
    out[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The element of largest magnitude (the first one on ties), with its sign; 0 for none.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < fabsf(v) {
            amax = fabsf(v);
            max = v;
        }
    }
    max
}

/// `(min, max)` of a block, as ggml's loop finds them.
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline(always)]
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// Quantises `x` to Q8_0: `d = max|x| / 127`, `q = roundf(x / d)`.
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) -> Result<(), DequantError> {
    check_lengths(GgmlType::Q8_0, x.len(), out.len())?;
    for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let mut amax = 0.0f32;
        for &v in x {
            let a = fabsf(v);
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        for (q, &v) in b[2..].iter_mut().zip(x) {
            *q = (roundf(v * id) as i8) as u8;
        }
    }
    Ok(())
}

/// Quantises `x` to Q4_0: `d = max / -8` (`max` the signed element of largest magnitude),
/// `q = min(15, trunc(x / d + 8.5))`.
pub fn quantize_q4_0(x: &[f32], out: &mut [u8]) -> Result<(), DequantError> {
    check_lengths(GgmlType::Q4_0, x.len(), out.len())?;
    for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q4_0_BYTES)) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
        for (j, qs) in b[2..].iter_mut().enumerate() {
            *qs = q(x[j]) | (q(x[j + 16]) << 4);
        }
    }
    Ok(())
}

/// Quantises `x` to Q4_1: `d = (max - min) / 15`, `m = min`,
/// `q = min(15, trunc((x - min) / d + 0.5))`.
pub fn quantize_q4_1(x: &[f32], out: &mut [u8]) -> Result<(), DequantError> {
    check_lengths(GgmlType::Q4_1, x.len(), out.len())?;
    for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q4_1_BYTES)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
        for (j, qs) in b[4..].iter_mut().enumerate() {
            *qs = q(x[j]) | (q(x[j + 16]) << 4);
        }
    }
    Ok(())
}

/// Packs 32 five-bit quants: low nibbles into `qs` as the 4-bit formats do, bit 4 of
/// element `i` into bit `i` of the returned `qh`.
#[inline(always)]
fn pack5(q: impl Fn(usize) -> u8, qs: &mut [u8]) -> u32 {
    let mut qh = 0u32;
    for (j, qs) in qs.iter_mut().enumerate() {
        let (q0, q1) = (q(j), q(j + 16));
        *qs = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from(q0 >> 4) << j;
        qh |= u32::from(q1 >> 4) << (j + 16);
    }
    qh
}

/// Quantises `x` to Q5_0: `d = max / -16`, `q = min(31, trunc(x / d + 16.5))`.
pub fn quantize_q5_0(x: &[f32], out: &mut [u8]) -> Result<(), DequantError> {
    check_lengths(GgmlType::Q5_0, x.len(), out.len())?;
    for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q5_0_BYTES)) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        let qh = pack5(
            |j| ((x[j] * id + 16.5) as i8).clamp(0, 31) as u8,
            &mut b[6..],
        );
        b[2..6].copy_from_slice(&qh.to_le_bytes());
    }
    Ok(())
}

/// Quantises `x` to Q5_1: `d = (max - min) / 31`, `m = min`,
/// `q = trunc((x - min) / d + 0.5)` (at most 31).
pub fn quantize_q5_1(x: &[f32], out: &mut [u8]) -> Result<(), DequantError> {
    check_lengths(GgmlType::Q5_1, x.len(), out.len())?;
    for (x, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q5_1_BYTES)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        let qh = pack5(
            |j| (((x[j] - min) * id + 0.5) as i8).clamp(0, 31) as u8,
            &mut b[8..],
        );
        b[4..8].copy_from_slice(&qh.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundf_matches_c() {
        for (v, r) in [
            (0.5f32, 1.0f32),
            (-0.5, -1.0),
            (1.5, 2.0),
            (2.5, 3.0),
            (-2.5, -3.0),
            (0.49999997, 0.0),
            (-0.49999997, -0.0),
            (126.6, 127.0),
            (0.0, 0.0),
        ] {
            assert_eq!(roundf(v), r, "roundf({v})");
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let x = [0.0f32; 64];
        let mut out = [0u8; 68];
        assert!(quantize_q8_0(&x, &mut out).is_ok());
        assert!(matches!(
            quantize_q8_0(&x[..40], &mut out),
            Err(DequantError::PartialBlock { elements: 40, .. })
        ));
        assert!(matches!(
            quantize_q4_0(&x, &mut out),
            Err(DequantError::ByteLength {
                expected: 36,
                actual: 68,
                ..
            })
        ));
    }
}
