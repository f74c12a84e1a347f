//! Typed device buffers.

use super::{DeviceError, Gpu};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};
use kernel_abi::DevPtr;

/// A device allocation of `len` elements of `T`, freed on drop.
pub struct DeviceBuffer<T> {
    slice: CudaSlice<T>,
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slice.len() == 0
    }

    /// The device address of element 0, for a kernel parameter struct.
    pub fn dev_ptr(&self, gpu: &Gpu) -> DevPtr {
        let (ptr, _sync) = self.slice.device_ptr(gpu.stream());
        DevPtr(ptr)
    }

    pub fn as_slice(&self) -> &CudaSlice<T> {
        &self.slice
    }
}

impl Gpu {
    /// Copies `data` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<DeviceBuffer<T>, DeviceError> {
        let slice = self.stream().clone_htod(data).map_err(|e| DeviceError::driver("cuMemcpyHtoD", e))?;
        Ok(DeviceBuffer { slice })
    }

    /// A new zero-filled device buffer.
    pub fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, len: usize) -> Result<DeviceBuffer<T>, DeviceError> {
        let slice = self.stream().alloc_zeros(len).map_err(|e| DeviceError::driver("cuMemAlloc", e))?;
        Ok(DeviceBuffer { slice })
    }

    /// Copies a device buffer back to the host (waits for queued work).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>, DeviceError> {
        self.stream().clone_dtoh(&buf.slice).map_err(|e| DeviceError::driver("cuMemcpyDtoH", e))
    }

    /// Fills a device buffer by repeating `pattern` (for large benchmark inputs built from a
    /// small random block).
    pub fn fill_pattern<T: DeviceRepr>(&self, buf: &mut DeviceBuffer<T>, pattern: &[T]) -> Result<(), DeviceError> {
        if pattern.is_empty() {
            return Err(DeviceError::invalid("fill_pattern", "empty pattern"));
        }
        let mut at = 0;
        while at < buf.len() {
            let n = pattern.len().min(buf.len() - at);
            let mut view = buf.slice.slice_mut(at..at + n);
            self.stream().memcpy_htod(&pattern[..n], &mut view).map_err(|e| DeviceError::driver("cuMemcpyHtoD", e))?;
            at += n;
        }
        Ok(())
    }

    /// A new device buffer of `len` elements without initialisation (every element must be
    /// written before it is read; tests poison instead).
    pub fn alloc<T: DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>, DeviceError> {
        // SAFETY: the memory is uninitialised device memory; `T: DeviceRepr` values are plain
        // bytes, and callers write before reading.
        let slice = unsafe { self.stream().alloc(len) }.map_err(|e| DeviceError::driver("cuMemAlloc", e))?;
        Ok(DeviceBuffer { slice })
    }

    /// Device-to-device copy of a whole buffer through the driver (`cuMemcpyDtoDAsync`): the
    /// copy-bandwidth baseline.
    pub fn copy_device<T: DeviceRepr>(&self, src: &DeviceBuffer<T>, dst: &mut DeviceBuffer<T>) -> Result<(), DeviceError> {
        if src.len() != dst.len() {
            return Err(DeviceError::invalid("copy_device", format!("src {} and dst {} elements differ", src.len(), dst.len())));
        }
        self.stream().memcpy_dtod(&src.slice, &mut dst.slice).map_err(|e| DeviceError::driver("cuMemcpyDtoD", e))
    }

    /// Overwrites a device buffer with host data of the same length.
    pub fn write<T: DeviceRepr>(&self, buf: &mut DeviceBuffer<T>, data: &[T]) -> Result<(), DeviceError> {
        if data.len() != buf.len() {
            return Err(DeviceError::invalid("write", format!("{} host elements for a buffer of {}", data.len(), buf.len())));
        }
        self.stream().memcpy_htod(data, &mut buf.slice).map_err(|e| DeviceError::driver("cuMemcpyHtoD", e))
    }
}

/// Checks that `offset..offset + len` lies inside a buffer of `have` elements.
fn check_range(op: &'static str, have: usize, offset: usize, len: usize) -> Result<(), DeviceError> {
    if offset.checked_add(len).is_none_or(|end| end > have) {
        return Err(DeviceError::invalid(op, format!("elements {offset}..{} are outside the buffer of {have}", offset.saturating_add(len))));
    }
    Ok(())
}

impl Gpu {
    /// Copies elements `offset..offset + out.len()` of `buf` to the host (waits for queued
    /// work, then for the copy).
    pub fn download_range<T: DeviceRepr>(&self, buf: &DeviceBuffer<T>, offset: usize, out: &mut [T]) -> Result<(), DeviceError> {
        check_range("download_range", buf.len(), offset, out.len())?;
        let view = buf.slice.slice(offset..offset + out.len());
        self.stream().memcpy_dtoh(&view, out).map_err(|e| DeviceError::driver("cuMemcpyDtoH", e))?;
        self.synchronize()
    }

    /// Overwrites elements `offset..offset + data.len()` of `buf` with host data.
    pub fn upload_range<T: DeviceRepr>(&self, buf: &mut DeviceBuffer<T>, offset: usize, data: &[T]) -> Result<(), DeviceError> {
        check_range("upload_range", buf.len(), offset, data.len())?;
        let mut view = buf.slice.slice_mut(offset..offset + data.len());
        self.stream().memcpy_htod(data, &mut view).map_err(|e| DeviceError::driver("cuMemcpyHtoD", e))
    }

    /// Copies `len` elements at `src` to `dst` inside one buffer (the ranges must not overlap).
    pub fn copy_within<T: DeviceRepr>(&self, buf: &mut DeviceBuffer<T>, src: usize, dst: usize, len: usize) -> Result<(), DeviceError> {
        const OP: &str = "copy_within";
        check_range(OP, buf.len(), src, len)?;
        check_range(OP, buf.len(), dst, len)?;
        if len == 0 || src == dst {
            return Ok(());
        }
        if src.abs_diff(dst) < len {
            return Err(DeviceError::invalid(OP, format!("source {src} and destination {dst} of {len} elements overlap")));
        }
        let mid = src.max(dst);
        let (mut lo, mut hi) = buf.slice.split_at_mut(mid);
        let r = if src < dst {
            self.stream().memcpy_dtod(&lo.slice(src..src + len), &mut hi.slice_mut(0..len))
        } else {
            self.stream().memcpy_dtod(&hi.slice(0..len), &mut lo.slice_mut(dst..dst + len))
        };
        r.map_err(|e| DeviceError::driver("cuMemcpyDtoD", e))
    }
}
