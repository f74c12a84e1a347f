//! Launch wrapper for the counter-based uniform fill (synthetic weights for performance work).

use super::{elementwise_grid, entry_name, launch, KernelParams, ELEMENTWISE_THREADS};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::FillUniformParams;

impl KernelParams for FillUniformParams {}

/// Fills `out` with `center + half_width × u`, `u` uniform in `[-1, 1)` from `(seed, index)`
/// ([`kernel_math::random::fill_value`]; [`crate::cpu::fill_uniform`] is the reference),
/// rounded to `T`.
pub fn fill_uniform<T: DType>(gpu: &Gpu, out: &mut DeviceBuffer<T>, seed: u64, center: f32, half_width: f32) -> Result<(), DeviceError> {
    const K: &str = "fill_uniform";
    if !(center.is_finite() && half_width.is_finite()) {
        return Err(DeviceError::invalid(K, format!("center {center} and half_width {half_width} must be finite")));
    }
    if out.is_empty() {
        return Ok(());
    }
    let p = FillUniformParams { out: out.dev_ptr(gpu), n: out.len() as u64, seed, center, half_width };
    launch(gpu, &entry_name(K, T::STORAGE), elementwise_grid(gpu, out.len()), ELEMENTWISE_THREADS, p)
}
