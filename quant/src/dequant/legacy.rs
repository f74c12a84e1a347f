//! The legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Layouts (ggml's `block_q*` structs, packed, little-endian):
//!
//! | type | bytes | fields                                   | element `i`                 |
//! |------|-------|------------------------------------------|-----------------------------|
//! | Q4_0 | 18    | `d: f16, qs: [u8; 16]`                   | `(q - 8) * d`               |
//! | Q4_1 | 20    | `d: f16, m: f16, qs: [u8; 16]`           | `q * d + m`                 |
//! | Q5_0 | 22    | `d: f16, qh: u32, qs: [u8; 16]`          | `(q - 16) * d`              |
//! | Q5_1 | 24    | `d: f16, m: f16, qh: u32, qs: [u8; 16]`  | `q * d + m`                 |
//! | Q8_0 | 34    | `d: f16, qs: [i8; 32]`                   | `qs[i] * d`                 |
//!
//! The 4-bit formats keep elements `0..16` in the low nibbles of `qs[0..16]` and elements
//! `16..32` in the high nibbles. The 5-bit formats add bit 4 of element `i` from bit `i` of
//! `qh`.

use super::f16_at;
use crate::ggml::GgmlType;

pub const Q4_0_BYTES: usize = 18;
pub const Q4_1_BYTES: usize = 20;
pub const Q5_0_BYTES: usize = 22;
pub const Q5_1_BYTES: usize = 24;
pub const Q8_0_BYTES: usize = 34;
/// Elements per block of every legacy format.
pub const QK: usize = 32;

const _: () = {
    assert!(Q4_0_BYTES == GgmlType::Q4_0.type_size());
    assert!(Q4_1_BYTES == GgmlType::Q4_1.type_size());
    assert!(Q5_0_BYTES == GgmlType::Q5_0.type_size());
    assert!(Q5_1_BYTES == GgmlType::Q5_1.type_size());
    assert!(Q8_0_BYTES == GgmlType::Q8_0.type_size());
    assert!(QK == GgmlType::Q8_0.block_size());
};

/// Dequantises one Q4_0 block.
pub fn q4_0(b: &[u8; Q4_0_BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..].iter().enumerate() {
        y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
        y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// Dequantises one Q4_1 block.
pub fn q4_1(b: &[u8; Q4_1_BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for (j, &q) in b[4..].iter().enumerate() {
        y[j] = f32::from(q & 0x0F) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// Bit 4 of elements `j` and `j + 16` of a 5-bit block, from its `qh` word.
#[inline(always)]
fn high_bits(qh: u32, j: usize) -> (u8, u8) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (h0 as u8, h1 as u8)
}

/// Dequantises one Q5_0 block.
pub fn q5_0(b: &[u8; Q5_0_BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, &q) in b[6..].iter().enumerate() {
        let (h0, h1) = high_bits(qh, j);
        y[j] = (i32::from((q & 0x0F) | h0) - 16) as f32 * d;
        y[j + 16] = (i32::from((q >> 4) | h1) - 16) as f32 * d;
    }
}

/// Dequantises one Q5_1 block.
pub fn q5_1(b: &[u8; Q5_1_BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, &q) in b[8..].iter().enumerate() {
        let (h0, h1) = high_bits(qh, j);
        y[j] = f32::from((q & 0x0F) | h0) * d + m;
        y[j + 16] = f32::from((q >> 4) | h1) * d + m;
    }
}

/// Dequantises one Q8_0 block.
pub fn q8_0(b: &[u8; Q8_0_BYTES], y: &mut [f32; QK]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..]) {
        *y = f32::from(q as i8) * d;
    }
}
