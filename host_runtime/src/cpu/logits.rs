//! Reductions over a row of logits for the samplers: the largest logit and `Σ exp(x − m)`,
//! vectorised with AVX2 (eight lanes; the Cephes `expf` of the attention kernel), else
//! portable loops. A greedy step over a 49k-token vocabulary is one pass of each.

/// The largest logit that is not NaN (`-inf` when there is none).
pub fn max_logit(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx2_fma() {
        // SAFETY: AVX2 checked at run time.
        return unsafe { avx2::max_logit(x) };
    }
    x.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `Σ exp(x − m)` (f64 sum of f32 exponentials) over the logits above `-inf` (NaN and
/// masked entries count nothing). `m` is finite, at least every such logit.
pub fn sum_exp(x: &[f32], m: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx2_fma() {
        // SAFETY: AVX2 and FMA checked at run time.
        return unsafe { avx2::sum_exp(x, m) };
    }
    x.iter().filter(|&&v| v > f32::NEG_INFINITY).map(|&v| f64::from((v - m).exp())).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_logit(x: &[f32]) -> f32 {
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in chunks {
            // SAFETY: `c` holds 8 floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            // `max(v, acc)` is `v > acc ? v : acc` per lane: a NaN in `v` keeps `acc`.
            acc = _mm256_max_ps(v, acc);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
    }

    /// # Safety
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_exp(x: &[f32], m: f32) -> f64 {
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        let (vm, ninf) = (_mm256_set1_ps(m), _mm256_set1_ps(f32::NEG_INFINITY));
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for c in chunks {
            // SAFETY: `c` holds 8 floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(v, ninf);
            let e = _mm256_and_ps(crate::cpu::attention::avx2::exp_ps(_mm256_sub_ps(v, vm)), keep);
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        }
        let mut lanes = [0f64; 4];
        // SAFETY: `lanes` holds 4 doubles.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo, hi)) };
        let tail: f64 = rest.iter().filter(|&&v| v > f32::NEG_INFINITY).map(|&v| f64::from((v - m).exp())).sum();
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against f64 references, with NaN and masked (`-inf`) entries at odd lengths.
        #[test]
        fn max_and_sum_exp_match_reference(v in proptest::collection::vec(prop_oneof![8 => -40f32..40.0, 1 => Just(f32::NEG_INFINITY), 1 => Just(f32::NAN)], 0..300)) {
            let want_m = v.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
            let m = max_logit(&v);
            prop_assert_eq!(m, want_m);
            if m.is_finite() {
                let want: f64 = v.iter().filter(|x| **x > f32::NEG_INFINITY).map(|&x| (f64::from(x) - f64::from(m)).exp()).sum();
                let got = sum_exp(&v, m);
                prop_assert!((got - want).abs() <= 1e-6 * want, "{} vs {}", got, want);
            }
        }
    }
}
