//! Reference GEMMs for the tensor-core kernels: `x · wᵀ (+ bias) (+ residual)` and the fused
//! gate/up `silu(x · w_gᵀ) * (x · w_uᵀ)`, accumulated in f64 over the (already 16-bit
//! rounded) inputs, with no intermediate rounding: the exact value the kernels approximate
//! with f32 accumulation and one rounding on store.

use rayon::prelude::*;

/// f64 dot product of two equal-length rows.
fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// `out[i, j] = Σ_t x[i, t] w[j, t] (+ bias[j]) (+ residual[i, j])` for `x` `[m, k]`, `w`
/// `[n, k]`, row-major; f64 accumulation, rounded to f32 once.
pub fn gemm_f64(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, bias: Option<&[f32]>, residual: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
        let xr = &x[i * k..(i + 1) * k];
        for (j, o) in row.iter_mut().enumerate() {
            let mut v = dot64(xr, &w[j * k..(j + 1) * k]);
            v += bias.map_or(0.0, |b| b[j] as f64);
            v += residual.map_or(0.0, |r| r[i * n + j] as f64);
            *o = v as f32;
        }
    });
    out
}

/// `out[i, j] = silu(g) · u` with `g = x[i] · w[j]`, `u = x[i] · w[inter + j]` for
/// `w_gate_up` `[2 inter, k]` (gate rows, then up rows); f64 throughout.
pub fn gate_up_silu_f64(x: &[f32], w_gate_up: &[f32], m: usize, inter: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * inter];
    out.par_chunks_mut(inter.max(1)).enumerate().for_each(|(i, row)| {
        let xr = &x[i * k..(i + 1) * k];
        for (j, o) in row.iter_mut().enumerate() {
            let g = dot64(xr, &w_gate_up[j * k..(j + 1) * k]);
            let u = dot64(xr, &w_gate_up[(inter + j) * k..(inter + j + 1) * k]);
            *o = (g / (1.0 + (-g).exp()) * u) as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_gemm_by_hand() {
        // x = [[1, 2], [3, 4]], w = [[1, 0], [0, 1], [1, 1]].
        let (x, w) = ([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(gemm_f64(&x, &w, 2, 3, 2, None, None), vec![1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
        let bias = [0.5, 0.0, -1.0];
        let res = [1.0; 6];
        assert_eq!(gemm_f64(&x, &w, 2, 3, 2, Some(&bias), Some(&res)), vec![2.5, 3.0, 3.0, 4.5, 5.0, 7.0]);
    }

    #[test]
    fn gate_up_is_silu_of_gate_times_up() {
        let x = [1.0, -2.0];
        // inter = 1: gate row [1, 0] → g = 1; up row [0, 1] → u = -2.
        let got = gate_up_silu_f64(&x, &[1.0, 0.0, 0.0, 1.0], 1, 1, 2);
        let want = (1.0 / (1.0 + (-1f64).exp()) * -2.0) as f32;
        assert_eq!(got, vec![want]);
    }
}
