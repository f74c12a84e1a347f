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
    let mut out = [0f32];
    dot_q8_0_rows(x, row, &mut out);
    out[0]
}

/// `x · row` for a Q4_1 row.
pub fn dot_q4_1(x: &[f32], block_sums: &[f32], row: &[u8]) -> f32 {
    let mut out = [0f32];
    dot_q4_1_rows(x, block_sums, row, &mut out);
    out[0]
}

/// Most activation rows one call of the `_rows` kernels takes.
pub const MAX_ROWS: usize = 4;

/// Checks the geometry of a `_rows` call; returns `k`.
fn rows_geometry(x: &[f32], m: usize, row: &[u8], block_bytes: usize) -> usize {
    assert!((1..=MAX_ROWS).contains(&m), "qdot: 1..={MAX_ROWS} rows, not {m}");
    assert_eq!(x.len() % m, 0, "qdot: x is not [m, k]");
    let k = x.len() / m;
    assert!(k.is_multiple_of(QK) && row.len() == k / QK * block_bytes, "qdot: row is not k / 32 blocks");
    k
}

/// `out[i] = x[i] · row` for the `m = out.len()` rows of `x` (`[m, k]`, `m <=`
/// [`MAX_ROWS`]) against one Q8_0 row, which is decoded once for all of them. Each row's
/// value is the same whatever `m` (and the same as [`dot_q8_0`] of that row).
pub fn dot_q8_0_rows(x: &[f32], row: &[u8], out: &mut [f32]) {
    let m = out.len();
    let k = rows_geometry(x, m, row, Q8_0_BYTES);
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time); geometry
        // checked above.
        unsafe {
            match m {
                1 => avx2::q8_0_rows::<1>(x, k, row, out),
                2 => avx2::q8_0_rows::<2>(x, k, row, out),
                3 => avx2::q8_0_rows::<3>(x, k, row, out),
                _ => avx2::q8_0_rows::<4>(x, k, row, out),
            }
        }
        return;
    }
    q8_0_rows_portable(x, k, row, out);
}

/// The portable [`dot_q8_0_rows`] (no SIMD intrinsics).
fn q8_0_rows_portable(x: &[f32], k: usize, row: &[u8], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(x.chunks_exact(k)) {
        *o = x
            .chunks_exact(QK)
            .zip(row.chunks_exact(Q8_0_BYTES))
            .map(|(xb, b)| f16_at(b, 0) * xb.iter().zip(&b[2..]).map(|(x, &q)| x * (q as i8) as f32).sum::<f32>())
            .sum();
    }
}

/// As [`dot_q8_0_rows`] for a Q4_1 row; `block_sums` is `[m, k / 32]` ([`block_sums`] of
/// each row).
pub fn dot_q4_1_rows(x: &[f32], block_sums: &[f32], row: &[u8], out: &mut [f32]) {
    let m = out.len();
    let k = rows_geometry(x, m, row, Q4_1_BYTES);
    assert_eq!(block_sums.len(), m * (k / QK), "qdot: one block sum per block and row");
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time); geometry
        // checked above.
        unsafe {
            match m {
                1 => avx2::q4_1_rows::<1>(x, k, block_sums, row, out),
                2 => avx2::q4_1_rows::<2>(x, k, block_sums, row, out),
                3 => avx2::q4_1_rows::<3>(x, k, block_sums, row, out),
                _ => avx2::q4_1_rows::<4>(x, k, block_sums, row, out),
            }
        }
        return;
    }
    q4_1_rows_portable(x, k, block_sums, row, out);
}

/// The portable [`dot_q4_1_rows`] (no SIMD intrinsics).
fn q4_1_rows_portable(x: &[f32], k: usize, block_sums: &[f32], row: &[u8], out: &mut [f32]) {
    for ((o, x), sums) in out.iter_mut().zip(x.chunks_exact(k)).zip(block_sums.chunks_exact(k / QK)) {
        let mut total = 0.0;
        for ((xb, b), s) in x.chunks_exact(QK).zip(row.chunks_exact(Q4_1_BYTES)).zip(sums) {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let mut acc = 0.0;
            for i in 0..16 {
                acc += xb[i] * (b[4 + i] & 0x0f) as f32 + xb[16 + i] * (b[4 + i] >> 4) as f32;
            }
            total += d * acc + m * s;
        }
        *o = total;
    }
}

/// Decodes a Q8_0 (`q4_1 == false`) or Q4_1 row into `out` (the prefill path, where one
/// decoded row serves many activation rows). Same values as `quant::dequantize`.
pub fn decode_row(q4_1: bool, row: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::tile512::available() {
        // SAFETY: the CPU supports AVX-512F, AVX2, FMA and F16C (checked at run time).
        return unsafe { avx512::decode_row(q4_1, row, out) };
    }
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
    fn hsum(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        _mm_cvtss_f32(q)
    }

    /// # Safety
    /// AVX2, FMA and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn decode_row(q4_1: bool, row: &[u8], out: &mut [f32]) {
        // Same operations as the portable decode (a product, then a sum: not fused), so
        // the same values.
        if q4_1 {
            let mask = _mm_set1_epi8(0x0f);
            for (b, o) in row.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(QK)) {
                let (d, m) = (_mm256_set1_ps(f16_at(b, 0)), _mm256_set1_ps(f16_at(b, 2)));
                // SAFETY: 16 bytes at 4 lie inside the block; 32 floats inside `o`.
                unsafe {
                    let bytes = _mm_loadu_si128(b.as_ptr().add(4) as *const __m128i);
                    let lo = _mm_and_si128(bytes, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
                    let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
                    for (k, p) in parts.iter().enumerate() {
                        let q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(*p));
                        _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), _mm256_add_ps(_mm256_mul_ps(q, d), m));
                    }
                }
            }
        } else {
            for (b, o) in row.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
                let d = _mm256_set1_ps(f16_at(b, 0));
                for k in 0..4 {
                    // SAFETY: 8 bytes at 2 + 8k lie inside the block; 8 floats at 8k inside `o`.
                    unsafe {
                        let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().add(2 + 8 * k) as *const __m128i)));
                        _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), _mm256_mul_ps(q, d));
                    }
                }
            }
        }
    }

    /// The f16 at `p` (unaligned).
    ///
    /// # Safety
    /// F16C available; two bytes readable at `p`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn f16_ptr(p: *const u8) -> f32 {
        // SAFETY: the caller's contract.
        let bits = unsafe { (p as *const u16).read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// `M` rows of `x` (`[M, k]`) against one Q8_0 row of `k / 32` blocks. Per block and
    /// row, `p = Σ_k x_k·q_k` over its four 8-lane parts, then `acc += d·p`, with two
    /// accumulators per row (even and odd blocks) so that consecutive blocks overlap; the
    /// block's weights are converted to f32 once for all rows.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available; `x.len() >= M·k`, `k % 32 == 0`, `row` holds `k / 32`
    /// blocks, `out.len() >= M`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_rows<const M: usize>(x: &[f32], k: usize, row: &[u8], out: &mut [f32]) {
        assert!(x.len() >= M * k && row.len() >= k / QK * Q8_0_BYTES && out.len() >= M);
        let (xp, rp) = (x.as_ptr(), row.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        // One block into accumulator `$e` of every row.
        macro_rules! step {
            ($b:expr, $e:expr) => {{
                let b: usize = $b;
                // SAFETY: block b < k / 32 of `row`; 32 floats at b·32 of each row of x.
                unsafe {
                    let blk = rp.add(b * Q8_0_BYTES);
                    let q = |t: usize| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(blk.add(2 + 8 * t) as *const __m128i)));
                    let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
                    let d = _mm256_set1_ps(f16_ptr(blk));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let xb = xp.add(r * k + b * QK);
                        let p = _mm256_mul_ps(_mm256_loadu_ps(xb), q0);
                        let p = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(8)), q1, p);
                        let p = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(16)), q2, p);
                        let p = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(24)), q3, p);
                        acc_r[$e] = _mm256_fmadd_ps(p, d, acc_r[$e]);
                    }
                }
            }};
        }
        let nb = k / QK;
        let mut b = 0;
        while b + 2 <= nb {
            step!(b, 0);
            step!(b + 1, 1);
            b += 2;
        }
        if b < nb {
            step!(b, 0);
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = hsum(_mm256_add_ps(a[0], a[1]));
        }
    }

    /// As [`q8_0_rows`] for a Q4_1 row, plus `Σ m·Σx` over the blocks (one scalar per
    /// row); `sums` is `[M, k / 32]`.
    ///
    /// # Safety
    /// As [`q8_0_rows`], with `row` of Q4_1 blocks and `sums.len() >= M·k/32`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1_rows<const M: usize>(x: &[f32], k: usize, sums: &[f32], row: &[u8], out: &mut [f32]) {
        let nb = k / QK;
        assert!(x.len() >= M * k && row.len() >= nb * Q4_1_BYTES && sums.len() >= M * nb && out.len() >= M);
        let (xp, rp, sp) = (x.as_ptr(), row.as_ptr(), sums.as_ptr());
        let mask = _mm256_set1_epi8(0x0f);
        // Byte i of each 128-bit half (the 16 nibble bytes in both) into the low byte of
        // 32-bit lane i: bytes 0..8 (`spread0`) or 8..16 (`spread1`); -128 zeroes a byte.
        let z = -128i8;
        #[rustfmt::skip]
        let spread0 = _mm256_setr_epi8(0, z, z, z, 1, z, z, z, 2, z, z, z, 3, z, z, z, 4, z, z, z, 5, z, z, z, 6, z, z, z, 7, z, z, z);
        #[rustfmt::skip]
        let spread1 = _mm256_setr_epi8(8, z, z, z, 9, z, z, z, 10, z, z, z, 11, z, z, z, 12, z, z, z, 13, z, z, z, 14, z, z, z, 15, z, z, z);
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        let mut mins = [0f32; M];
        macro_rules! step {
            ($b:expr, $e:expr) => {{
                let b: usize = $b;
                // SAFETY: block b < k / 32 of `row`; 32 floats at b·32 of each row of x;
                // sum b of each row's block sums.
                unsafe {
                    let blk = rp.add(b * Q4_1_BYTES);
                    // The 16 nibble bytes in both halves (a load, no shuffle).
                    let bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128(blk.add(4) as *const __m128i));
                    let lo = _mm256_and_si256(bytes, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
                    let q = |v: __m256i, s: __m256i| _mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, s));
                    let (q0, q1, q2, q3) = (q(lo, spread0), q(lo, spread1), q(hi, spread0), q(hi, spread1));
                    let d = _mm256_set1_ps(f16_ptr(blk));
                    let mn = f16_ptr(blk.add(2));
                    for (r, (acc_r, min_r)) in acc.iter_mut().zip(mins.iter_mut()).enumerate() {
                        let xb = xp.add(r * k + b * QK);
                        let p = _mm256_mul_ps(_mm256_loadu_ps(xb), q0);
                        let p = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(8)), q1, p);
                        let p = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(16)), q2, p);
                        let p = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(24)), q3, p);
                        acc_r[$e] = _mm256_fmadd_ps(p, d, acc_r[$e]);
                        *min_r += mn * *sp.add(r * nb + b);
                    }
                }
            }};
        }
        let mut b = 0;
        while b + 2 <= nb {
            step!(b, 0);
            step!(b + 1, 1);
            b += 2;
        }
        if b < nb {
            step!(b, 0);
        }
        for ((o, a), mn) in out.iter_mut().zip(&acc).zip(&mins) {
            *o = hsum(_mm256_add_ps(a[0], a[1])) + mn;
        }
    }
}

/// The block decode sixteen lanes at a time (the batched matmuls decode every weight row
/// of a step once: about a tenth of a batch-64 decode step with AVX2 alone).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Q4_1_BYTES, Q8_0_BYTES, QK};
    use std::arch::x86_64::*;

    /// As `avx2::decode_row`, same operations per value (a product, then a sum).
    ///
    /// # Safety
    /// AVX-512F, AVX2, FMA and F16C available.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn decode_row(q4_1: bool, row: &[u8], out: &mut [f32]) {
        let scale = |b: &[u8], at: usize| _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([b[at], b[at + 1]]) as i32))));
        if q4_1 {
            let mask = _mm_set1_epi8(0x0f);
            for (b, o) in row.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(QK)) {
                let (d, m) = (scale(b, 0), scale(b, 2));
                // SAFETY: 16 bytes at 4 lie inside the block; 32 floats inside `o`.
                unsafe {
                    let bytes = _mm_loadu_si128(b.as_ptr().add(4) as *const __m128i);
                    let lo = _mm_and_si128(bytes, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
                    for (k, p) in [lo, hi].iter().enumerate() {
                        let q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(*p));
                        _mm512_storeu_ps(o.as_mut_ptr().add(16 * k), _mm512_add_ps(_mm512_mul_ps(q, d), m));
                    }
                }
            }
        } else {
            for (b, o) in row.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
                let d = scale(b, 0);
                for k in 0..2 {
                    // SAFETY: 16 bytes at 2 + 16k lie inside the block; 16 floats at 16k
                    // inside `o`.
                    unsafe {
                        let q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b.as_ptr().add(2 + 16 * k) as *const __m128i)));
                        _mm512_storeu_ps(o.as_mut_ptr().add(16 * k), _mm512_mul_ps(q, d));
                    }
                }
            }
        }
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
                let mut portable = [0f32];
                if ty == quant::GgmlType::Q8_0 { q8_0_rows_portable(&x, nb * QK, &row, &mut portable) } else { q4_1_rows_portable(&x, nb * QK, &block_sums(&x), &row, &mut portable) }
                prop_assert!((portable[0] as f64 - want).abs() <= 1e-5 * scale, "{:?} portable: {} vs {}", ty, portable[0], want);
                let mut decoded_portable = vec![0f32; nb * QK];
                decode_row_portable(ty == quant::GgmlType::Q4_1, &row, &mut decoded_portable, f16_at);
                prop_assert_eq!(&decoded_portable, &w);
                // Several rows at once: each row's bits are those of the row alone.
                for m in 1..=MAX_ROWS {
                    let xs: Vec<f32> = (0..m).flat_map(|r| x.iter().map(move |v| v * (1.0 + r as f32 * 0.25))).collect();
                    let sums: Vec<f32> = xs.chunks_exact(QK).flat_map(|b| [b.iter().sum::<f32>()]).collect();
                    let mut out = vec![0f32; m];
                    if ty == quant::GgmlType::Q8_0 { dot_q8_0_rows(&xs, &row, &mut out) } else { dot_q4_1_rows(&xs, &sums, &row, &mut out) }
                    for (r, o) in out.iter().enumerate() {
                        let xr = &xs[r * nb * QK..(r + 1) * nb * QK];
                        let alone = if ty == quant::GgmlType::Q8_0 { dot_q8_0(xr, &row) } else { dot_q4_1(xr, &block_sums(xr), &row) };
                        prop_assert_eq!(o.to_bits(), alone.to_bits(), "{:?} row {} of {}", ty, r, m);
                    }
                }
                let mut decoded = vec![0f32; nb * QK];
                decode_row(ty == quant::GgmlType::Q4_1, &row, &mut decoded);
                prop_assert_eq!(&decoded, &w);
                #[cfg(target_arch = "x86_64")]
                if super::super::matmul::has_avx2_fma() {
                    // The AVX2 decode too, when the dispatch above took the AVX-512 one.
                    let mut avx2 = vec![0f32; nb * QK];
                    // SAFETY: AVX2, FMA and F16C checked.
                    unsafe { avx2::decode_row(ty == quant::GgmlType::Q4_1, &row, &mut avx2) };
                    prop_assert_eq!(&avx2, &w);
                }
            }
        }
    }
}
