//! Reference operators over row-major f32 slices.

use rayon::prelude::*;

/// Rows per rayon task in the row-wise operators: a few rows are not worth a fork.
const ROWS_PER_TASK: usize = 8;

/// `out[t, :] = table[ids[t], :]`; an id `>= vocab` gives a zero row.
pub fn embedding(table: &[f32], hidden: usize, ids: &[u32]) -> Vec<f32> {
    let vocab = table.len() / hidden.max(1);
    let mut out = vec![0.0; ids.len() * hidden];
    for (row, &id) in out.chunks_mut(hidden.max(1)).zip(ids) {
        if (id as usize) < vocab {
            row.copy_from_slice(&table[id as usize * hidden..(id as usize + 1) * hidden]);
        }
    }
    out
}

/// `h = round(x + residual)` (or `x` without a residual): the residual stream a fused norm
/// sees and stores.
pub fn residual_sum(x: &[f32], residual: Option<&[f32]>, round: impl Fn(f32) -> f32) -> Vec<f32> {
    match residual {
        Some(r) => x.iter().zip(r).map(|(a, b)| round(a + b)).collect(),
        None => x.to_vec(),
    }
}

/// `f(out row, x row)` for each row of `cols`: in parallel when there are enough rows to be
/// worth a fork, else on the calling thread (a rayon call from outside the pool is a round
/// trip to a worker and back, which costs more than a few rows).
fn for_rows(out: &mut [f32], x: &[f32], cols: usize, f: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    if cols > 0 && out.len() < 2 * ROWS_PER_TASK * cols {
        out.chunks_mut(cols).zip(x.chunks(cols)).for_each(|(o, x)| f(o, x));
    } else {
        out.par_chunks_mut(cols).zip(x.par_chunks(cols)).with_min_len(ROWS_PER_TASK).for_each(|(o, x)| f(o, x));
    }
}

/// RMSNorm of each row of `h`: `h / sqrt(mean(h²) + eps) * weight`.
pub fn rms_norm(h: &[f32], weight: &[f32], cols: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; h.len()];
    for_rows(&mut out, h, cols, |o, x| {
        let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(weight) {
            *o = (x as f64 * inv * w as f64) as f32;
        }
    });
    out
}

/// LayerNorm of each row of `h`: `(h - mean) / sqrt(var + eps) * weight + bias`.
pub fn layer_norm(h: &[f32], weight: &[f32], bias: Option<&[f32]>, cols: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; h.len()];
    for_rows(&mut out, h, cols, |o, x| {
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, (o, &x)) in o.iter_mut().zip(x).enumerate() {
            let b = bias.map_or(0.0, |b| b[i] as f64);
            *o = ((x as f64 - mean) * inv * weight[i] as f64 + b) as f32;
        }
    });
    out
}

/// Inverse frequencies of rotary embedding, `inv_freq[j] = 1 / theta^(2j / rot_dim)`, in
/// f32 as Hugging Face computes them.
pub fn rope_inv_freq(theta: f32, rot_dim: usize) -> Vec<f32> {
    (0..rot_dim / 2).map(|j| 1.0 / theta.powf((2 * j) as f32 / rot_dim as f32)).collect()
}

/// Rotary embedding in place on `[tokens, heads]` heads of `head_dim` at `token_stride`:
/// pairs `(j, j + rot/2)` when `neox`, else `(2j, 2j + 1)`, rotated by
/// `positions[t] * inv_freq[j]` (the angle is formed in f32, as Hugging Face does).
#[allow(clippy::too_many_arguments)]
pub fn rope(x: &mut [f32], positions: &[u32], inv_freq: &[f32], heads: usize, head_dim: usize, rot_dim: usize, token_stride: usize, neox: bool) {
    let half = rot_dim / 2;
    if positions.is_empty() || token_stride == 0 {
        return;
    }
    // One token per chunk (the last may be shorter than the stride, never than its heads).
    let x = &mut x[..(positions.len() - 1) * token_stride + heads * head_dim];
    let one = |sin_cos: &mut Vec<(f64, f64)>, (tok, &pos): (&mut [f32], &u32)| {
        // The angle's sine and cosine, once per pair for all heads.
        sin_cos.clear();
        sin_cos.extend(inv_freq[..half].iter().map(|&f| ((pos as f32 * f) as f64).sin_cos()));
        for h in 0..heads {
            let head = &mut tok[h * head_dim..][..head_dim];
            for (j, &(s, c)) in sin_cos.iter().enumerate() {
                let (a, b) = if neox { (j, j + half) } else { (2 * j, 2 * j + 1) };
                let (xa, xb) = (head[a] as f64, head[b] as f64);
                head[a] = (xa * c - xb * s) as f32;
                head[b] = (xb * c + xa * s) as f32;
            }
        }
    };
    if positions.len() < 2 * ROWS_PER_TASK {
        let mut sin_cos = Vec::new();
        x.chunks_mut(token_stride).zip(positions).for_each(|t| one(&mut sin_cos, t));
    } else {
        x.par_chunks_mut(token_stride).zip(positions.par_iter()).with_min_len(ROWS_PER_TASK).for_each_init(Vec::new, one);
    }
}

/// Elements per rayon task of the elementwise operators.
const ELEMS_PER_TASK: usize = 4096;

/// `f` of each element of `x` (in parallel for long inputs; the same values either way).
fn map_elems(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for_rows(&mut out, x, ELEMS_PER_TASK / ROWS_PER_TASK, |o, x| {
        for (o, &v) in o.iter_mut().zip(x) {
            *o = f(v);
        }
    });
    out
}

/// `silu(gate) * up`, elementwise, in f64: `g / (1 + exp(-g)) · u`.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let n = gate.len().min(up.len());
    let mut out = vec![0.0; n];
    let chunk = |(o, (gate, up)): (&mut [f32], (&[f32], &[f32]))| {
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if super::matmul::has_avx2_fma() {
            // SAFETY: AVX2 and FMA available (checked at run time).
            done = unsafe { avx2::silu_mul(gate, up, o) };
        }
        for ((o, &g), &u) in o[done..].iter_mut().zip(&gate[done..]).zip(&up[done..]) {
            *o = silu_mul_one(g, u);
        }
    };
    if n <= ELEMS_PER_TASK {
        chunk((&mut out, (&gate[..n], &up[..n])));
    } else {
        out.par_chunks_mut(ELEMS_PER_TASK).zip(gate[..n].par_chunks(ELEMS_PER_TASK).zip(up[..n].par_chunks(ELEMS_PER_TASK))).for_each(chunk);
    }
    out
}

fn silu_mul_one(g: f32, u: f32) -> f32 {
    let g = g as f64;
    (g / (1.0 + (-g).exp()) * u as f64) as f32
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `exp(x)` of four f64 for `|x| <= 708`: `x = n·ln2 + r` (`|r| <= ln2/2`, Cody–Waite
    /// with a two-part ln2), a degree-12 Taylor polynomial of `e^r` (truncation below
    /// 2e-16), times `2^n` built in the exponent bits. Within about an ulp of libm.
    #[target_feature(enable = "avx2,fma")]
    fn exp_pd(x: __m256d) -> __m256d {
        const LN2_HI: f64 = 0.693_147_180_369_123_8;
        const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
        let n = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_pd(x, _mm256_set1_pd(std::f64::consts::LOG2_E)));
        let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(LN2_HI), x);
        let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(LN2_LO), r);
        // 1/i! for i = 12 down to 0.
        const C: [f64; 13] = [
            1.0 / 479_001_600.0,
            1.0 / 39_916_800.0,
            1.0 / 3_628_800.0,
            1.0 / 362_880.0,
            1.0 / 40_320.0,
            1.0 / 5_040.0,
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ];
        let mut p = _mm256_set1_pd(C[0]);
        for c in &C[1..] {
            p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(*c));
        }
        let e = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023));
        _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64::<52>(e)))
    }

    /// [`super::silu_mul_one`] over groups of four while every gate in the group has
    /// `|g| <= 708` (so the fast exp applies); returns how many elements were done.
    ///
    /// # Safety
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) -> usize {
        let n = gate.len().min(up.len()).min(out.len()) & !3;
        let (lim, one) = (_mm256_set1_pd(708.0), _mm256_set1_pd(1.0));
        let mut i = 0;
        while i < n {
            // SAFETY: i + 4 <= n, inside the three slices.
            unsafe {
                let g = _mm256_cvtps_pd(_mm_loadu_ps(gate.as_ptr().add(i)));
                // |g| <= 708 (false for NaN): else the scalar path from here.
                let abs = _mm256_andnot_pd(_mm256_set1_pd(-0.0), g);
                if _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_LE_OQ>(abs, lim)) != 0xf {
                    return i;
                }
                let u = _mm256_cvtps_pd(_mm_loadu_ps(up.as_ptr().add(i)));
                let e = exp_pd(_mm256_sub_pd(_mm256_setzero_pd(), g));
                let v = _mm256_mul_pd(_mm256_div_pd(g, _mm256_add_pd(one, e)), u);
                _mm_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtpd_ps(v));
            }
            i += 4;
        }
        i
    }
}

/// GELU, tanh approximation.
pub fn gelu_tanh(x: &[f32]) -> Vec<f32> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    map_elems(x, |v| {
        let v = v as f64;
        (0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())) as f32
    })
}

/// GELU, erf form.
pub fn gelu_erf(x: &[f32]) -> Vec<f32> {
    map_elems(x, |v| {
        let v = v as f64;
        (0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2))) as f32
    })
}

/// Softmax of each row of `scale * x`.
pub fn softmax(x: &[f32], cols: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for_rows(&mut out, x, cols, |o, x| {
        let max = x.iter().map(|&v| (v * scale) as f64).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = x.iter().map(|&v| ((v * scale) as f64 - max).exp()).sum();
        for (o, &v) in o.iter_mut().zip(x) {
            *o = (((v * scale) as f64 - max).exp() / sum) as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn softmax_rows_sum_to_one(rows in 1usize..5, cols in 1usize..300, seed in any::<u64>(), scale in 0.01f32..4.0) {
            let x: Vec<f32> = (0..rows * cols).map(|i| ((i as u64 ^ seed).wrapping_mul(2654435761) % 2000) as f32 / 100.0 - 10.0).collect();
            let y = softmax(&x, cols, scale);
            for r in y.chunks(cols) {
                let s: f64 = r.iter().map(|&v| v as f64).sum();
                prop_assert!((s - 1.0).abs() < 1e-5);
                prop_assert!(r.iter().all(|v| *v >= 0.0));
            }
        }

        /// The vector path (with its own exp) against libm's, element by element: at most
        /// one f32 ulp apart, and the same non-finite and extreme cases.
        #[test]
        fn silu_mul_matches_scalar(n in 0usize..200, seed in any::<u64>(), scale in prop::sample::select(vec![0.01f32, 1.0, 30.0, 300.0, 1e4])) {
            let f = |i: usize, s: u64| (((i as u64 + 1).wrapping_mul(s | 1).wrapping_mul(2654435761) >> 16) % 20001) as f32 / 10000.0 - 1.0;
            let mut g: Vec<f32> = (0..n).map(|i| f(i, seed) * scale).collect();
            let u: Vec<f32> = (0..n).map(|i| f(i, seed ^ 0x5555) * 3.0).collect();
            if n > 10 {
                g[3] = f32::NAN;
                g[7] = f32::INFINITY;
                g[9] = -800.0;
            }
            let y = silu_mul(&g, &u);
            for i in 0..n {
                let want = silu_mul_one(g[i], u[i]);
                let ok = y[i].to_bits() == want.to_bits() || (y[i].is_nan() && want.is_nan()) || (y[i] - want).abs() <= f32::EPSILON * want.abs();
                prop_assert!(ok, "{}: silu_mul({}, {}) = {} vs {}", i, g[i], u[i], y[i], want);
            }
        }

        #[test]
        fn rms_norm_output_has_unit_rms_with_unit_weight(cols in 1usize..500, seed in any::<u64>()) {
            let x: Vec<f32> = (0..cols).map(|i| ((i as u64 + 1).wrapping_mul(seed | 1) % 1000) as f32 / 37.0 - 13.0).collect();
            prop_assume!(x.iter().any(|v| v.abs() > 1e-3));
            let y = rms_norm(&x, &vec![1.0; cols], cols, 0.0);
            let ms: f64 = y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
            prop_assert!((ms - 1.0).abs() < 1e-4, "{}", ms);
        }

        #[test]
        fn layer_norm_output_has_zero_mean_unit_variance(cols in 2usize..500, seed in any::<u64>(), offset in -1e3f32..1e3) {
            let x: Vec<f32> = (0..cols).map(|i| ((i as u64 + 7).wrapping_mul(seed | 1) % 1000) as f32 / 37.0 + offset).collect();
            let spread = x.iter().cloned().fold(f32::MIN, f32::max) - x.iter().cloned().fold(f32::MAX, f32::min);
            prop_assume!(spread > 1.0);
            let y = layer_norm(&x, &vec![1.0; cols], None, cols, 0.0);
            let mean: f64 = y.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
            let var: f64 = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
            prop_assert!(mean.abs() < 1e-3 && (var - 1.0).abs() < 1e-3, "mean {} var {}", mean, var);
        }

        #[test]
        fn rope_is_a_rotation(head_dim in (1usize..32).prop_map(|h| 2 * h), pos in 0u32..100_000, neox in any::<bool>()) {
            let x: Vec<f32> = (0..head_dim).map(|i| i as f32 * 0.37 - 3.0).collect();
            let mut y = x.clone();
            let inv = rope_inv_freq(10_000.0, head_dim);
            rope(&mut y, &[pos], &inv, 1, head_dim, head_dim, head_dim, neox);
            let n0: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
            let n1: f64 = y.iter().map(|&v| (v as f64).powi(2)).sum();
            prop_assert!((n0 - n1).abs() < 1e-4 * n0);
        }
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_partial_dims_are_untouched() {
        let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let mut y = x.clone();
        rope(&mut y, &[0], &rope_inv_freq(1e4, 8), 1, 16, 8, 16, true);
        assert_eq!(x, y);
        let mut z = x.clone();
        rope(&mut z, &[5], &rope_inv_freq(1e4, 8), 1, 16, 8, 16, false);
        assert_eq!(&z[8..], &x[8..]);
        assert_ne!(&z[..8], &x[..8]);
    }

    #[test]
    fn known_values() {
        assert!((gelu_erf(&[1.0])[0] - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_tanh(&[1.0])[0] - 0.841_192).abs() < 1e-5);
        assert!((silu_mul(&[1.0], &[2.0])[0] - 2.0 * 0.731_058_6).abs() < 1e-6);
        assert_eq!(embedding(&[1.0, 2.0, 3.0, 4.0], 2, &[1, 0, 9]), vec![3.0, 4.0, 1.0, 2.0, 0.0, 0.0]);
    }
}
