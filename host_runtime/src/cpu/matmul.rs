//! CPU matrix multiply for the reference backend: `y = x · wᵀ` with `x` `[m, k]` row-major
//! and `w` `[n, k]` row-major (the layout of every linear layer's weight), f32 with f32
//! accumulation in 8 independent lanes (so the compiler vectorises the dot products),
//! parallel over blocks of output columns with rayon.

use rayon::prelude::*;

/// Output columns per rayon task: big enough to amortise scheduling, small enough to
/// balance two to a few dozen cores.
const COLS_PER_TASK: usize = 64;

/// Dot product of two equal-length slices: AVX2+FMA when the CPU has them (checked once),
/// else 8 portable lanes.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"))
}

/// AVX2 + FMA dot product: four 8-wide accumulators.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats at an index + 8 <= n of both slices.
    unsafe {
        while i + 32 <= n {
            for (k, acc_k) in acc.iter_mut().enumerate() {
                *acc_k = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * k)), _mm256_loadu_ps(pb.add(i + 8 * k)), *acc_k);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let hi = _mm256_extractf128_ps(s, 1);
        let lo = _mm256_castps256_ps128(s);
        let q = _mm_add_ps(hi, lo);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        let mut total = _mm_cvtss_f32(q);
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }
}

/// Dot product, 8 portable lanes (vectorised by the compiler for the baseline target).
#[inline]
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
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

/// The rows of a weight matrix `[n, k]`, however they are stored: the hook for weight
/// formats other than f32 (a quantised matrix decodes row `j` into `scratch`).
pub trait WeightRows: Sync {
    /// Row `j` as `k` f32 values.
    fn row<'a>(&'a self, j: usize, scratch: &'a mut [f32]) -> &'a [f32];

    /// True when [`WeightRows::fused_dot`] has a kernel for this format.
    fn has_fused_dot(&self) -> bool {
        false
    }

    /// `x · row j` without materialising the row (`block_sums`: Σx per 32-element block),
    /// for formats with a kernel (see [`super::qdot`]).
    fn fused_dot(&self, _j: usize, _x: &[f32], _block_sums: &[f32]) -> f32 {
        unreachable!("fused_dot without has_fused_dot")
    }
}

/// Up to this many activation rows, a format with a fused dot decodes each weight row once
/// per activation row in registers; above it, decoding the row once into f32 is cheaper.
const FUSED_MAX_ROWS: usize = 4;

/// A row-major f32 matrix.
struct F32Rows<'w> {
    w: &'w [f32],
    k: usize,
}

impl WeightRows for F32Rows<'_> {
    fn row<'a>(&'a self, j: usize, _scratch: &'a mut [f32]) -> &'a [f32] {
        &self.w[j * self.k..(j + 1) * self.k]
    }
}

/// `y[i, j] = Σ_k x[i, k] · w[j, k]` (+ `bias[j]`), `y` is `[m, n]`.
pub fn matmul_nt(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(w.len(), n * k, "matmul_nt: w is not [n, k]");
    matmul_nt_rows(x, bias, m, k, n, &F32Rows { w, k })
}

/// As [`matmul_nt`] with the weight rows from any [`WeightRows`].
pub fn matmul_nt_rows(x: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize, rows: &dyn WeightRows) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "matmul_nt: x is not [m, k]");
    // Computed transposed ([n, m]) so each task owns a contiguous block of output columns
    // and reads its rows of `w` once for all `m` rows of `x`.
    let fused = m <= FUSED_MAX_ROWS && rows.has_fused_dot();
    let sums: Vec<Vec<f32>> = if fused { (0..m).map(|i| super::qdot::block_sums(&x[i * k..(i + 1) * k])).collect() } else { Vec::new() };
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(COLS_PER_TASK * m).enumerate().for_each(|(task, block)| {
        let j0 = task * COLS_PER_TASK;
        let mut scratch = vec![0f32; k];
        for (jj, col) in block.chunks_mut(m).enumerate() {
            let j = j0 + jj;
            let b = bias.map_or(0.0, |b| b[j]);
            if fused {
                for (i, out) in col.iter_mut().enumerate() {
                    *out = rows.fused_dot(j, &x[i * k..(i + 1) * k], &sums[i]) + b;
                }
                continue;
            }
            let wr = rows.row(j, &mut scratch);
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
        fn dot_paths_agree(n in 0usize..300, seed in any::<u32>()) {
            let f = |i: usize| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0;
            let a: Vec<f32> = (0..n).map(f).collect();
            let b: Vec<f32> = (0..n).map(|i| f(i + 5)).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            prop_assert!((dot(&a, &b) as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
            prop_assert!((dot_portable(&a, &b) as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
        }

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
