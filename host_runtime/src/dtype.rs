//! Element types of tensors: f32, f16 and bf16 storage with f32 math.

use kernel_abi::StorageType;

/// A tensor element type the kernels support.
pub trait DType: cudarc::driver::DeviceRepr + bytemuck::Pod + Default + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The kernels' name for this type.
    const STORAGE: StorageType;
    /// Widens to f32 (exact for every type here).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (nearest even).
    fn from_f32(v: f32) -> Self;
    /// `v` rounded to this type and back.
    fn round(v: f32) -> f32 {
        Self::from_f32(v).to_f32()
    }
    /// Relative tolerance for comparing a kernel's output with the f32 reference: a few
    /// units in the last place of this type.
    const REL_TOL: f32;
    /// Absolute tolerance as a fraction of the largest reference magnitude: the error that
    /// cancellation and subnormal flushing leave near zero.
    const ABS_TOL: f32;
}

impl DType for f32 {
    const STORAGE: StorageType = StorageType::F32;
    const REL_TOL: f32 = 1e-5;
    const ABS_TOL: f32 = 1e-6;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl DType for half::f16 {
    const STORAGE: StorageType = StorageType::F16;
    const REL_TOL: f32 = 2e-3;
    const ABS_TOL: f32 = 1e-3;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

impl DType for half::bf16 {
    const STORAGE: StorageType = StorageType::Bf16;
    const REL_TOL: f32 = 1.6e-2;
    const ABS_TOL: f32 = 8e-3;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

/// Converts a slice to f32.
pub fn to_f32_vec<T: DType>(xs: &[T]) -> Vec<f32> {
    xs.iter().map(|x| x.to_f32()).collect()
}

/// Rounds a slice of f32 to `T`.
pub fn from_f32_vec<T: DType>(xs: &[f32]) -> Vec<T> {
    xs.iter().map(|&x| T::from_f32(x)).collect()
}
