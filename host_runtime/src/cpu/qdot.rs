//! Dot products of an f32 vector with one row stored in a GGML block format, decoded in
//! registers (no f32 copy of the row): the decode-time matvec for quantised weights, whose
//! cost is then the file's bytes per token rather than four bytes per weight.
//!
//! Layouts (ggml): Q8_0 block = f16 scale `d` + 32 × i8, value `d·q`; Q4_1 block = f16 `d`,
//! f16 `m` + 16 bytes of nibbles (low nibbles are elements 0..16, high ones 16..32), value
//! `d·q + m`. `block_sums` holds Σx over each 32-element block of `x` (for the `m` term).

use half::f16;

/// Elements per block of the formats here.
pub const QK: usize = 32;
pub const Q8_0_BYTES: usize = 34;
pub const Q4_1_BYTES: usize = 20;

/// Σx over each 32-element block of `x` (`x.len()` a multiple of 32).
pub fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(QK).map(|b| b.iter().sum()).collect()
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `x · row` for a Q8_0 row.
pub fn dot_q8_0(x: &[f32], row: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { avx2::dot_q8_0(x, row) };
    }
    x.chunks_exact(QK)
        .zip(row.chunks_exact(Q8_0_BYTES))
        .map(|(xb, b)| f16_at(b, 0) * xb.iter().zip(&b[2..]).map(|(x, &q)| x * (q as i8) as f32).sum::<f32>())
        .sum()
}

/// `x · row` for a Q4_1 row.
pub fn dot_q4_1(x: &[f32], block_sums: &[f32], row: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { avx2::dot_q4_1(x, block_sums, row) };
    }
    let mut total = 0.0;
    for ((xb, b), s) in x.chunks_exact(QK).zip(row.chunks_exact(Q4_1_BYTES)).zip(block_sums) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        let mut acc = 0.0;
        for i in 0..16 {
            acc += xb[i] * (b[4 + i] & 0x0f) as f32 + xb[16 + i] * (b[4 + i] >> 4) as f32;
        }
        total += d * acc + m * s;
    }
    total
}

/// Decodes a Q8_0 (`q4_1 == false`) or Q4_1 row into `out` (the prefill path, where one
/// decoded row serves many activation rows). Same values as `quant::dequantize`.
pub fn decode_row(q4_1: bool, row: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { avx2::decode_row(q4_1, row, out) };
    }
    decode_row_portable(q4_1, row, out, f16_at);
}

#[inline(always)]
fn decode_row_portable(q4_1: bool, row: &[u8], out: &mut [f32], f16: impl Fn(&[u8], usize) -> f32) {
    if q4_1 {
        for (b, o) in row.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(QK)) {
            let (d, m) = (f16(b, 0), f16(b, 2));
            for i in 0..16 {
                o[i] = (b[4 + i] & 0x0f) as f32 * d + m;
                o[16 + i] = (b[4 + i] >> 4) as f32 * d + m;
            }
        }
    } else {
        for (b, o) in row.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
            let d = f16(b, 0);
            for i in 0..QK {
                o[i] = (b[2 + i] as i8) as f32 * d;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Q4_1_BYTES, Q8_0_BYTES, QK};
    use std::arch::x86_64::*;

    /// The f16 at `b[at..at + 2]` by the F16C instruction (the `half` crate's portable
    /// conversion costs more than the rest of a block's work).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_at(b: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        _mm_cvtss_f32(q)
    }

    /// # Safety
    /// AVX2, FMA and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn decode_row(q4_1: bool, row: &[u8], out: &mut [f32]) {
        super::decode_row_portable(q4_1, row, out, |b, at| f16_at(b, at));
    }

    /// # Safety
    /// AVX2, FMA and F16C available; `row` holds `x.len() / 32` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(x: &[f32], row: &[u8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (xb, b) in x.chunks_exact(QK).zip(row.chunks_exact(Q8_0_BYTES)) {
            let d = _mm256_set1_ps(f16_at(b, 0));
            for k in 0..4 {
                // SAFETY: 8 bytes at 2 + 8k and 8 floats at 8k lie inside the block.
                unsafe {
                    let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().add(2 + 8 * k) as *const __m128i)));
                    let xv = _mm256_mul_ps(_mm256_loadu_ps(xb.as_ptr().add(8 * k)), d);
                    acc = _mm256_fmadd_ps(xv, q, acc);
                }
            }
        }
        // SAFETY: AVX2 available (this function's contract).
        unsafe { hsum(acc) }
    }

    /// # Safety
    /// AVX2, FMA and F16C available; `row` holds `x.len() / 32` blocks; one block sum per
    /// block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(x: &[f32], block_sums: &[f32], row: &[u8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0.0;
        let mask = _mm_set1_epi8(0x0f);
        for ((xb, b), s) in x.chunks_exact(QK).zip(row.chunks_exact(Q4_1_BYTES)).zip(block_sums) {
            let d = _mm256_set1_ps(f16_at(b, 0));
            mins += f16_at(b, 2) * s;
            // SAFETY: 16 bytes at 4 and 32 floats lie inside the block.
            unsafe {
                let bytes = _mm_loadu_si128(b.as_ptr().add(4) as *const __m128i);
                let lo = _mm_and_si128(bytes, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
                let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
                for (k, p) in parts.iter().enumerate() {
                    let q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(*p));
                    let xv = _mm256_mul_ps(_mm256_loadu_ps(xb.as_ptr().add(8 * k)), d);
                    acc = _mm256_fmadd_ps(xv, q, acc);
                }
            }
        }
        // SAFETY: AVX2 available (this function's contract).
        unsafe { hsum(acc) + mins }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blocks(seed: u32, n: usize, bytes: usize) -> Vec<u8> {
        let mut s = seed | 1;
        let mut v: Vec<u8> = (0..n * bytes).map(|_| { s ^= s << 13; s ^= s >> 17; s ^= s << 5; s as u8 }).collect();
        for b in v.chunks_exact_mut(bytes) {
            // Finite, moderate scales (and mins).
            let d = f16::from_f32(0.01 + (b[2] as f32) / 2000.0).to_le_bytes();
            b[..2].copy_from_slice(&d);
            if bytes == Q4_1_BYTES {
                let m = f16::from_f32((b[5] as f32 - 128.0) / 500.0).to_le_bytes();
                b[2..4].copy_from_slice(&m);
            }
        }
        v
    }

    proptest! {
        /// Both paths agree with decoding the row to f32 by the quant crate and an f64 dot.
        #[test]
        fn fused_dots_match_decode_then_dot(nb in 1usize..20, seed in any::<u32>()) {
            let x: Vec<f32> = (0..nb * QK).map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5).collect();
            for (ty, bytes) in [(quant::GgmlType::Q8_0, Q8_0_BYTES), (quant::GgmlType::Q4_1, Q4_1_BYTES)] {
                let row = blocks(seed, nb, bytes);
                let mut w = vec![0f32; nb * QK];
                quant::dequantize(ty, &row, &mut w).unwrap();
                let want: f64 = x.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
                let scale: f64 = x.iter().zip(&w).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum::<f64>() + 1e-6;
                let got = if ty == quant::GgmlType::Q8_0 { dot_q8_0(&x, &row) } else { dot_q4_1(&x, &block_sums(&x), &row) };
                prop_assert!((got as f64 - want).abs() <= 1e-5 * scale, "{:?}: {} vs {}", ty, got, want);
                let mut decoded = vec![0f32; nb * QK];
                decode_row(ty == quant::GgmlType::Q4_1, &row, &mut decoded);
                prop_assert_eq!(&decoded, &w);
            }
        }
    }
}
