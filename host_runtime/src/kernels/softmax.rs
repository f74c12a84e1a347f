//! Launch wrapper for row softmax.

use super::{check_len, entry_name, launch, row_units, to_u32};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::SoftmaxParams;

/// `out[r, :] = softmax(scale * input[r, :])` over contiguous rows of `cols`.
pub fn softmax<T: DType>(gpu: &Gpu, input: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, cols: usize, scale: f32) -> Result<(), DeviceError> {
    const K: &str = "softmax";
    if cols == 0 || input.len() % cols != 0 {
        return Err(DeviceError::invalid(K, format!("input of {} elements is not a whole number of rows of {cols}", input.len())));
    }
    if !scale.is_finite() {
        return Err(DeviceError::invalid(K, format!("scale must be finite, got {scale}")));
    }
    check_len(K, "out", out.len(), input.len())?;
    let c = to_u32(K, "cols", cols)?;
    let p = SoftmaxParams { input: input.dev_ptr(gpu), out: out.dev_ptr(gpu), rows: to_u32(K, "rows", input.len() / cols)?, cols: c, in_row_stride: c, out_row_stride: c, scale, _pad: 0 };
    // The kernel keeps up to 8 chunks per thread in registers; 512 threads at most so that
    // two blocks fit on a multiprocessor and one's reduction overlaps the other's loads.
    let threads = (row_units::<T>(cols).div_ceil(8).div_ceil(32) * 32).clamp(32, 512) as u32;
    launch(gpu, &entry_name(K, T::STORAGE), p.rows, threads, p)
}
