//! CPU matrix multiply for the reference backend: `y = x · wᵀ` with `x` `[m, k]` row-major
//! and `w` `[n, k]` row-major (the layout of every linear layer's weight), f32 with f32
//! accumulation in 8 independent lanes (so the compiler vectorises the dot products),
//! parallel over blocks of output columns with rayon.

use rayon::prelude::*;

/// Output columns per rayon task: big enough to amortise scheduling, small enough to
/// balance two to a few dozen cores.
const COLS_PER_TASK: usize = 64;

/// Dot product of two equal-length slices, 8 lanes wide.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// `y[i, j] = Σ_k x[i, k] · w[j, k]` (+ `bias[j]`), `y` is `[m, n]`.
pub fn matmul_nt(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "matmul_nt: x is not [m, k]");
    assert_eq!(w.len(), n * k, "matmul_nt: w is not [n, k]");
    // Computed transposed ([n, m]) so each task owns a contiguous block of output columns
    // and reads its rows of `w` once for all `m` rows of `x`.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(COLS_PER_TASK * m).enumerate().for_each(|(task, block)| {
        let j0 = task * COLS_PER_TASK;
        for (jj, col) in block.chunks_mut(m).enumerate() {
            let j = j0 + jj;
            let wr = &w[j * k..(j + 1) * k];
            let b = bias.map_or(0.0, |b| b[j]);
            for (i, out) in col.iter_mut().enumerate() {
                *out = dot(&x[i * k..(i + 1) * k], wr) + b;
            }
        }
    });
    let mut y = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            y[i * n + j] = yt[j * m + i];
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive(m in 1usize..6, k in 1usize..70, n in 1usize..150, seed in any::<u32>()) {
            let f = |i: usize| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0;
            let x: Vec<f32> = (0..m * k).map(f).collect();
            let w: Vec<f32> = (0..n * k).map(|i| f(i + 7919)).collect();
            let bias: Vec<f32> = (0..n).map(|i| f(i + 31)).collect();
            let y = matmul_nt(&x, &w, Some(&bias), m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() + bias[j] as f64;
                    prop_assert!((y[i * n + j] as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
                }
            }
        }
    }
}
