//! Pure per-thread math used by the device kernels, compiled for the host too so that it is
//! unit- and property-tested on the CPU.
//!
//! Nothing here touches warps, barriers or memory spaces: only scalar arithmetic. Functions
//! that need transcendental functions take them through [`Transcendentals`], implemented on
//! the device with libdevice and in the tests with `std`.
#![no_std]

pub mod codec;
pub mod reduce;
pub mod act;
pub mod attention;
pub mod fmha;
pub mod gemm;
pub mod wgmma;
pub mod rope;
pub mod random;

/// The transcendental functions a formula needs, supplied by the caller's platform.
pub trait Transcendentals {
    fn exp(x: f32) -> f32;
    fn tanh(x: f32) -> f32;
    fn erf(x: f32) -> f32;
    fn sin_cos(x: f32) -> (f32, f32);
    /// `1 / sqrt(x)`, correctly rounded or close to it.
    fn rsqrt(x: f32) -> f32;
}

/// `ceil(a / b)` for `b > 0`.
#[inline(always)]
pub const fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

#[cfg(test)]
pub(crate) mod host {
    //! `std`-backed transcendentals for the host tests.
    extern crate std;
    pub struct Std;
    impl super::Transcendentals for Std {
        fn exp(x: f32) -> f32 {
            std::primitive::f32::exp(x)
        }
        fn tanh(x: f32) -> f32 {
            std::primitive::f32::tanh(x)
        }
        fn erf(x: f32) -> f32 {
            erf64(x as f64) as f32
        }
        fn sin_cos(x: f32) -> (f32, f32) {
            std::primitive::f32::sin_cos(x)
        }
        fn rsqrt(x: f32) -> f32 {
            1.0 / std::primitive::f32::sqrt(x)
        }
    }

    /// erf to f64 accuracy (ample for f32 checks): Taylor series below 2, the continued
    /// fraction of erfc above.
    pub fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 2.0 {
            let (mut sum, mut term) = (0.0f64, a);
            for n in 0..60u32 {
                sum += term / (2 * n + 1) as f64;
                term *= -a * a / (n + 1) as f64;
            }
            2.0 / core::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(a) = exp(-a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + …))))
            let mut tail = a;
            for n in (1..120u32).rev() {
                tail = a + (n as f64 / 2.0) / tail;
            }
            1.0 - (-a * a).exp() / core::f64::consts::PI.sqrt() / tail
        };
        r * x.signum()
    }
}
