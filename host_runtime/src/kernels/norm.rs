//! Launch wrappers for RMSNorm and LayerNorm with the optional fused residual add.

use super::{check_len, entry_name, launch, row_threads, row_units, to_u32};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::{DevPtr, NormParams};

/// What happens to a residual stream before the norm.
pub enum Residual<'a, T> {
    /// Normalise the input alone.
    None,
    /// Normalise `input + residual`; the residual is not modified.
    Add(&'a DeviceBuffer<T>),
    /// Normalise `input + residual` and store that sum back into `residual` (the usual
    /// transformer-block step: the residual stream advances in place).
    AddInPlace(&'a mut DeviceBuffer<T>),
}

#[allow(clippy::too_many_arguments)]
fn norm<T: DType>(
    gpu: &Gpu,
    kernel: &'static str,
    input: &DeviceBuffer<T>,
    residual: Residual<T>,
    weight: &DeviceBuffer<T>,
    bias: Option<&DeviceBuffer<T>>,
    out: &mut DeviceBuffer<T>,
    cols: usize,
    eps: f32,
    rows: Option<usize>,
) -> Result<(), DeviceError> {
    if cols == 0 || (rows.is_none() && !input.len().is_multiple_of(cols)) {
        return Err(DeviceError::invalid(kernel, format!("input of {} elements is not a whole number of rows of {cols}", input.len())));
    }
    if !eps.is_finite() || eps < 0.0 {
        return Err(DeviceError::invalid(kernel, format!("eps must be finite and >= 0, got {eps}")));
    }
    let rows = rows.unwrap_or(input.len() / cols);
    let n = rows.checked_mul(cols).ok_or_else(|| DeviceError::invalid(kernel, format!("{rows} rows of {cols} overflow")))?;
    check_len(kernel, "input", input.len(), n)?;
    check_len(kernel, "weight", weight.len(), cols)?;
    if let Some(b) = bias {
        check_len(kernel, "bias", b.len(), cols)?;
    }
    check_len(kernel, "out", out.len(), n)?;
    let (res, res_out) = match &residual {
        Residual::None => (DevPtr::NULL, DevPtr::NULL),
        Residual::Add(r) => {
            check_len(kernel, "residual", r.len(), n)?;
            (r.dev_ptr(gpu), DevPtr::NULL)
        }
        Residual::AddInPlace(r) => {
            check_len(kernel, "residual", r.len(), n)?;
            (r.dev_ptr(gpu), r.dev_ptr(gpu))
        }
    };
    let p = NormParams {
        input: input.dev_ptr(gpu),
        residual: res,
        residual_out: res_out,
        weight: weight.dev_ptr(gpu),
        bias: bias.map_or(DevPtr::NULL, |b| b.dev_ptr(gpu)),
        out: out.dev_ptr(gpu),
        rows: to_u32(kernel, "rows", rows)?,
        cols: to_u32(kernel, "cols", cols)?,
        eps,
        _pad: 0,
    };
    launch(gpu, &entry_name(kernel, T::STORAGE), p.rows, row_threads(row_units::<T>(cols)), p)
}

/// RMSNorm over rows of `cols`: `out = h / sqrt(mean(h²) + eps) * weight`, `h` the input
/// plus the residual (see [`Residual`]).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm<T: DType>(gpu: &Gpu, input: &DeviceBuffer<T>, residual: Residual<T>, weight: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, cols: usize, eps: f32) -> Result<(), DeviceError> {
    norm(gpu, "rms_norm", input, residual, weight, None, out, cols, eps, None)
}

/// [`rms_norm`] of the first `rows` rows only (buffers allocated for a larger batch).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_rows<T: DType>(gpu: &Gpu, input: &DeviceBuffer<T>, residual: Residual<T>, weight: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, rows: usize, cols: usize, eps: f32) -> Result<(), DeviceError> {
    norm(gpu, "rms_norm", input, residual, weight, None, out, cols, eps, Some(rows))
}

/// LayerNorm over rows of `cols`: `out = (h - mean) / sqrt(var + eps) * weight + bias`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm<T: DType>(gpu: &Gpu, input: &DeviceBuffer<T>, residual: Residual<T>, weight: &DeviceBuffer<T>, bias: Option<&DeviceBuffer<T>>, out: &mut DeviceBuffer<T>, cols: usize, eps: f32) -> Result<(), DeviceError> {
    norm(gpu, "layer_norm", input, residual, weight, bias, out, cols, eps, None)
}
