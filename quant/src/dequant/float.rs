//! The unquantised GGML float types: F32, F16 and BF16, all little-endian.
//!
//! Widening f16 and bf16 to f32 is exact; NaN payloads survive (f16 NaNs come back quiet).

/// F32: little-endian `f32` bits, copied as they are. `data.len() == 4 * out.len()`.
pub fn f32_slice(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(4).zip(out.iter_mut()) {
        *y = f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
}

/// F16: little-endian IEEE binary16. `data.len() == 2 * out.len()`.
pub fn f16_slice(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

/// BF16: the high 16 bits of an `f32`, little-endian. `data.len() == 2 * out.len()`.
pub fn bf16_slice(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    }
}
