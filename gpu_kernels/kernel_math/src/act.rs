//! Activation formulas in f32, generic over the platform's transcendental functions.

use crate::Transcendentals;

/// `sqrt(2 / pi)`, the constant of the tanh GELU approximation.
pub const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// `1 / sqrt(2)`.
pub const FRAC_1_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;

/// SiLU (swish): `x * sigmoid(x)`.
#[inline(always)]
pub fn silu<T: Transcendentals>(x: f32) -> f32 {
    x / (1.0 + T::exp(-x))
}

/// GELU, tanh approximation (GPT-2's `gelu_new`, PyTorch `approximate="tanh"`).
#[inline(always)]
pub fn gelu_tanh<T: Transcendentals>(x: f32) -> f32 {
    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + T::tanh(inner))
}

/// GELU, exact form `0.5 x (1 + erf(x / sqrt 2))`.
#[inline(always)]
pub fn gelu_erf<T: Transcendentals>(x: f32) -> f32 {
    0.5 * x * (1.0 + T::erf(x * FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{erf64, Std};
    use proptest::prelude::*;

    /// Relative closeness, plus the absolute error `1 + f(x)` cancellation leaves in f32
    /// for large negative `x` (about one f32 ulp of 1, scaled by `|x|`).
    fn close(a: f32, b: f64, x: f32, rel: f64) -> bool {
        (a as f64 - b).abs() <= rel * b.abs() + 4e-7 * (x as f64).abs()
    }

    proptest! {
        #[test]
        fn silu_matches_f64(x in -60f32..60.0) {
            let xd = x as f64;
            prop_assert!(close(silu::<Std>(x), xd / (1.0 + (-xd).exp()), x, 1e-5));
        }

        #[test]
        fn gelu_tanh_matches_f64(x in -20f32..20.0) {
            let xd = x as f64;
            let inner = (2.0 / core::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3));
            prop_assert!(close(gelu_tanh::<Std>(x), 0.5 * xd * (1.0 + inner.tanh()), x, 1e-5));
        }

        #[test]
        fn gelu_erf_matches_f64(x in -20f32..20.0) {
            let xd = x as f64;
            let want = 0.5 * xd * (1.0 + erf64(xd / 2f64.sqrt()));
            prop_assert!(close(gelu_erf::<Std>(x), want, x, 1e-5));
        }
    }
}
