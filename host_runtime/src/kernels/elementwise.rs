//! Launch wrappers for the elementwise kernels: copy, casts, GELU and SiLU·mul.

use super::{check_len, elementwise_grid, entry_name, launch, to_u32, ELEMENTWISE_THREADS};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::{CastParams, CopyParams, GatedActParams, UnaryParams};

/// Copies `src` into `dst` with the copy kernel (both the same length, whole 16-byte units):
/// the kernel-side probe of copy bandwidth.
pub fn copy_bytes<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, src: &DeviceBuffer<T>, dst: &mut DeviceBuffer<T>) -> Result<(), DeviceError> {
    let bytes = src.len() * size_of::<T>();
    if dst.len() != src.len() || bytes % 16 != 0 {
        return Err(DeviceError::invalid("copy_bytes", format!("src {} and dst {} elements must match and be whole 16-byte units", src.len(), dst.len())));
    }
    let p = CopyParams { src: src.dev_ptr(gpu), dst: dst.dev_ptr(gpu), n_bytes: bytes as u64 };
    launch(gpu, "copy_bytes", elementwise_grid(gpu, bytes / 2), ELEMENTWISE_THREADS, p)
}

/// `dst = src` converted from `S` to `D` (round to nearest even); same lengths, `S != D`.
pub fn cast<S: DType, D: DType>(gpu: &Gpu, src: &DeviceBuffer<S>, dst: &mut DeviceBuffer<D>) -> Result<(), DeviceError> {
    if S::STORAGE == D::STORAGE {
        return Err(DeviceError::invalid("cast", "source and destination types are the same: copy instead"));
    }
    if dst.len() != src.len() {
        return Err(DeviceError::invalid("cast", format!("src has {} elements, dst {}", src.len(), dst.len())));
    }
    let name = format!("cast_{}_{}", S::STORAGE.suffix(), D::STORAGE.suffix());
    let p = CastParams { src: src.dev_ptr(gpu), dst: dst.dev_ptr(gpu), n: src.len() as u64 };
    launch(gpu, &name, elementwise_grid(gpu, src.len()), ELEMENTWISE_THREADS, p)
}

/// The GELU variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (GPT-2's `gelu_new`).
    Tanh,
    /// `0.5 x (1 + erf(x / √2))`.
    Erf,
}

impl Gelu {
    fn family(self) -> &'static str {
        match self {
            Gelu::Tanh => "gelu_tanh",
            Gelu::Erf => "gelu_erf",
        }
    }
}

/// `out = gelu(input)`, same lengths.
pub fn gelu<T: DType>(gpu: &Gpu, kind: Gelu, input: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>) -> Result<(), DeviceError> {
    if out.len() != input.len() {
        return Err(DeviceError::invalid("gelu", format!("input has {} elements, out {}", input.len(), out.len())));
    }
    let p = UnaryParams { input: input.dev_ptr(gpu), out: out.dev_ptr(gpu), n: input.len() as u64 };
    launch(gpu, &entry_name(kind.family(), T::STORAGE), elementwise_grid(gpu, input.len()), ELEMENTWISE_THREADS, p)
}

/// `x = gelu(x)` in place.
pub fn gelu_in_place<T: DType>(gpu: &Gpu, kind: Gelu, x: &mut DeviceBuffer<T>) -> Result<(), DeviceError> {
    let ptr = x.dev_ptr(gpu);
    let p = UnaryParams { input: ptr, out: ptr, n: x.len() as u64 };
    launch(gpu, &entry_name(kind.family(), T::STORAGE), elementwise_grid(gpu, x.len()), ELEMENTWISE_THREADS, p)
}

/// Rows of a matrix inside a buffer: row `r` starts at element `offset + r * stride`.
#[derive(Clone, Copy)]
pub struct Rows<'a, T> {
    pub buf: &'a DeviceBuffer<T>,
    pub offset: usize,
    pub stride: usize,
}

impl<'a, T: DType> Rows<'a, T> {
    /// A contiguous `[rows, cols]` matrix.
    pub fn contiguous(buf: &'a DeviceBuffer<T>, cols: usize) -> Self {
        Rows { buf, offset: 0, stride: cols }
    }

    /// The two halves of a `[rows, 2 * cols]` matrix (e.g. a fused gate/up projection:
    /// gate first, then up).
    pub fn halves(buf: &'a DeviceBuffer<T>, cols: usize) -> (Self, Self) {
        (Rows { buf, offset: 0, stride: 2 * cols }, Rows { buf, offset: cols, stride: 2 * cols })
    }

    pub(crate) fn check(&self, kernel: &'static str, what: &str, rows: usize, cols: usize) -> Result<(), DeviceError> {
        if rows > 0 && self.stride < cols {
            return Err(DeviceError::invalid(kernel, format!("{what} row stride {} is below cols {cols}", self.stride)));
        }
        let need = if rows == 0 { 0 } else { self.offset + (rows - 1) * self.stride + cols };
        check_len(kernel, what, self.buf.len(), need)
    }
}

/// `out[r, c] = silu(gate[r, c]) * up[r, c]` for a `rows × cols` matrix; `out` contiguous.
pub fn silu_mul<T: DType>(gpu: &Gpu, gate: Rows<T>, up: Rows<T>, out: &mut DeviceBuffer<T>, rows: usize, cols: usize) -> Result<(), DeviceError> {
    const K: &str = "silu_mul";
    gate.check(K, "gate", rows, cols)?;
    up.check(K, "up", rows, cols)?;
    check_len(K, "out", out.len(), rows * cols)?;
    let elem = size_of::<T>() as u64;
    let p = GatedActParams {
        gate: gate.buf.dev_ptr(gpu).offset_bytes(gate.offset as u64 * elem),
        up: up.buf.dev_ptr(gpu).offset_bytes(up.offset as u64 * elem),
        out: out.dev_ptr(gpu),
        rows: to_u32(K, "rows", rows)?,
        cols: to_u32(K, "cols", cols)?,
        gate_row_stride: to_u32(K, "gate stride", gate.stride)?,
        up_row_stride: to_u32(K, "up stride", up.stride)?,
        out_row_stride: to_u32(K, "cols", cols)?,
        _pad: 0,
    };
    launch(gpu, &entry_name(K, T::STORAGE), elementwise_grid(gpu, rows * cols), super::ELEMENTWISE_THREADS, p)
}
