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

/// RMSNorm of each row of `h`: `h / sqrt(mean(h²) + eps) * weight`.
pub fn rms_norm(h: &[f32], weight: &[f32], cols: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; h.len()];
    out.par_chunks_mut(cols).zip(h.par_chunks(cols)).with_min_len(ROWS_PER_TASK).for_each(|(o, x)| {
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
    out.par_chunks_mut(cols).zip(h.par_chunks(cols)).with_min_len(ROWS_PER_TASK).for_each(|(o, x)| {
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
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let head = &mut x[t * token_stride + h * head_dim..][..head_dim];
            for j in 0..half {
                let (a, b) = if neox { (j, j + half) } else { (2 * j, 2 * j + 1) };
                let theta = (pos as f32 * inv_freq[j]) as f64;
                let (s, c) = theta.sin_cos();
                let (xa, xb) = (head[a] as f64, head[b] as f64);
                head[a] = (xa * c - xb * s) as f32;
                head[b] = (xb * c + xa * s) as f32;
            }
        }
    }
}

/// `silu(gate) * up`, elementwise.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| {
        let g = g as f64;
        (g / (1.0 + (-g).exp()) * u as f64) as f32
    }).collect()
}

/// GELU, tanh approximation.
pub fn gelu_tanh(x: &[f32]) -> Vec<f32> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    x.iter().map(|&v| {
        let v = v as f64;
        (0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())) as f32
    }).collect()
}

/// GELU, erf form.
pub fn gelu_erf(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| {
        let v = v as f64;
        (0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2))) as f32
    }).collect()
}

/// Softmax of each row of `scale * x`.
pub fn softmax(x: &[f32], cols: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(cols).zip(x.par_chunks(cols)).with_min_len(ROWS_PER_TASK).for_each(|(o, x)| {
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
