//! GGML block dequantisation: raw GGUF tensor bytes to `f32`.
//!
//! [`dequantize`] checks the lengths once and then walks the data block by block with the
//! per-format block functions in [`float`], [`legacy`] (the 32-element formats) and
//! [`kquants`] (the 256-element "K" super-block formats). Layouts and formulas follow
//! ggml's `dequantize_row_*` reference code: every product and sum is an `f32` operation
//! in ggml's order, never fused, so results match ggml's scalar path (and gguf-py's numpy
//! dequantisers) bit for bit. Any byte pattern is accepted: a NaN or infinite f16 scale
//! just propagates into the output, nothing panics.

use core::fmt;

use crate::ggml::GgmlType;

pub mod float;
pub mod kquants;
pub mod legacy;

/// Why a (de)quantisation call refused its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DequantError {
    /// This crate has no (de)quantiser for the type.
    Unsupported(GgmlType),
    /// The element count is not a whole number of the type's blocks.
    PartialBlock {
        ty: GgmlType,
        elements: usize,
        block_size: usize,
    },
    /// The byte buffer does not hold exactly `elements` elements of the type.
    ByteLength {
        ty: GgmlType,
        elements: usize,
        /// Bytes `elements` elements take (saturated at `usize::MAX`).
        expected: usize,
        actual: usize,
    },
}

impl fmt::Display for DequantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DequantError::Unsupported(ty) => {
                write!(
                    f,
                    "no (de)quantiser for GGML type {} (id {})",
                    ty.name(),
                    ty as u32
                )
            }
            DequantError::PartialBlock {
                ty,
                elements,
                block_size,
            } => write!(
                f,
                "{}: {elements} elements is not a whole number of {block_size}-element blocks",
                ty.name()
            ),
            DequantError::ByteLength {
                ty,
                elements,
                expected,
                actual,
            } => write!(
                f,
                "{}: {actual} bytes of data for {elements} elements, expected {expected} bytes",
                ty.name()
            ),
        }
    }
}

impl core::error::Error for DequantError {}

/// Whether [`dequantize`] handles `ty`.
pub const fn supports_dequantize(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::Bf16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Q8K
    )
}

/// Checks that `elements` elements of `ty` are whole blocks taking exactly `bytes` bytes.
pub(crate) fn check_lengths(
    ty: GgmlType,
    elements: usize,
    bytes: usize,
) -> Result<(), DequantError> {
    let block_size = ty.block_size();
    let (blocks, rest) = (elements / block_size, elements % block_size);
    if rest != 0 {
        return Err(DequantError::PartialBlock {
            ty,
            elements,
            block_size,
        });
    }
    let expected = blocks.saturating_mul(ty.type_size());
    if bytes != expected {
        return Err(DequantError::ByteLength {
            ty,
            elements,
            expected,
            actual: bytes,
        });
    }
    Ok(())
}

/// Dequantises `data`, the raw bytes of `out.len()` elements of type `ty` (whole blocks),
/// into `out`.
///
/// Errors, leaving `out` untouched, when `ty` is not supported (see
/// [`supports_dequantize`]), when `out.len()` is not a whole number of blocks, or when
/// `data.len()` is not the byte size of `out.len()` elements.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    if !supports_dequantize(ty) {
        return Err(DequantError::Unsupported(ty));
    }
    check_lengths(ty, out.len(), data.len())?;
    match ty {
        GgmlType::F32 => float::f32_slice(data, out),
        GgmlType::F16 => float::f16_slice(data, out),
        GgmlType::Bf16 => float::bf16_slice(data, out),
        GgmlType::Q4_0 => for_each_block(data, out, legacy::q4_0),
        GgmlType::Q4_1 => for_each_block(data, out, legacy::q4_1),
        GgmlType::Q5_0 => for_each_block(data, out, legacy::q5_0),
        GgmlType::Q5_1 => for_each_block(data, out, legacy::q5_1),
        GgmlType::Q8_0 => for_each_block(data, out, legacy::q8_0),
        GgmlType::Q2K => for_each_block(data, out, kquants::q2_k),
        GgmlType::Q3K => for_each_block(data, out, kquants::q3_k),
        GgmlType::Q4K => for_each_block(data, out, kquants::q4_k),
        GgmlType::Q5K => for_each_block(data, out, kquants::q5_k),
        GgmlType::Q6K => for_each_block(data, out, kquants::q6_k),
        GgmlType::Q8K => for_each_block(data, out, kquants::q8_k),
        // Excluded by `supports_dequantize` above.
        _ => return Err(DequantError::Unsupported(ty)),
    }
    Ok(())
}

/// Runs `f` on each `TS`-byte block of `data` and its `BS` outputs. The caller has checked
/// that `data` and `out` hold the same whole number of blocks.
fn for_each_block<const TS: usize, const BS: usize>(
    data: &[u8],
    out: &mut [f32],
    f: fn(&[u8; TS], &mut [f32; BS]),
) {
    for (block, y) in data.chunks_exact(TS).zip(out.chunks_exact_mut(BS)) {
        // `chunks_exact` yields slices of exactly TS and BS elements: these cannot fail.
        let (Ok(block), Ok(y)) = (block.try_into(), y.try_into()) else {
            unreachable!("chunks_exact yields whole chunks")
        };
        f(block, y);
    }
}

/// The little-endian IEEE half at `b[i..i + 2]`, widened to `f32` (exact).
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn errors_name_the_problem() {
        let mut out = [0.0f32; 64];
        let e = dequantize(GgmlType::Q4_0, &[0; 35], &mut out).unwrap_err();
        assert_eq!(
            e,
            DequantError::ByteLength {
                ty: GgmlType::Q4_0,
                elements: 64,
                expected: 36,
                actual: 35
            }
        );
        assert_eq!(
            e.to_string(),
            "Q4_0: 35 bytes of data for 64 elements, expected 36 bytes"
        );
        let e = dequantize(GgmlType::Q4K, &[0; 144], &mut out).unwrap_err();
        assert_eq!(
            e,
            DequantError::PartialBlock {
                ty: GgmlType::Q4K,
                elements: 64,
                block_size: 256
            }
        );
        let e = dequantize(GgmlType::I8, &[0; 64], &mut out).unwrap_err();
        assert_eq!(e, DequantError::Unsupported(GgmlType::I8));
        assert_eq!(e.to_string(), "no (de)quantiser for GGML type I8 (id 24)");
        // Empty input is zero whole blocks.
        dequantize(GgmlType::Q6K, &[], &mut []).unwrap();
    }
}
