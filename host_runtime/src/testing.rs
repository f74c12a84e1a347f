//! Helpers for tests that compare a kernel with its CPU reference: seeded random data,
//! poisoned outputs, per-dtype tolerant comparison, and the GPU test runner that reports
//! "skipped: no CUDA device" on machines without one.

use crate::device::{DeviceError, Gpu};
use crate::dtype::DType;

/// A small deterministic generator (splitmix64) for test data: tests draw a seed from
/// proptest and expand it here, so large inputs cost nothing to shrink.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// `n` values uniform in `[lo, hi)`, rounded to `T`.
    pub fn vec<T: DType>(&mut self, n: usize, lo: f32, hi: f32) -> Vec<T> {
        (0..n).map(|_| T::from_f32(self.uniform(lo, hi))).collect()
    }
}

/// The value written into outputs before a launch: NaN, so an element the kernel does not
/// write fails the comparison.
pub fn poison<T: DType>(n: usize) -> Vec<T> {
    vec![T::from_f32(f32::NAN); n]
}

/// Compares a kernel output with its reference: each element must satisfy
/// `|got - want| <= rel × |want| + T::ABS_TOL × max|want|` (the absolute part covers the
/// error that cancellation and subnormal flushing leave near zero). NaN in the output where
/// the reference is finite always fails: it marks an unwritten (poisoned) element.
pub fn assert_close<T: DType>(what: &str, got: &[T], want: &[f32], rel: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} elements, expected {}", got.len(), want.len()));
    }
    let scale = want.iter().filter(|v| v.is_finite()).fold(0f32, |m, v| m.max(v.abs()));
    let abs = T::ABS_TOL * scale;
    for (i, (g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f32();
        if w.is_nan() {
            continue;
        }
        if g.is_nan() {
            return Err(format!("{what}: element {i} is NaN (unwritten or invalid), expected {w}"));
        }
        if (g - w).abs() > rel * w.abs() + abs {
            return Err(format!("{what}: element {i} = {g} vs reference {w} (|error| {:.3e} > {rel:.1e} × |ref| + {abs:.3e}; {} elements)", (g - w).abs(), want.len()));
        }
    }
    Ok(())
}

/// Bit-exact comparison (for copies, gathers and casts).
pub fn assert_bits_eq<T: DType>(what: &str, got: &[T], want: &[T]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} elements, expected {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (gf, wf) = (g.to_f32(), w.to_f32());
        if bytemuck::bytes_of(g) != bytemuck::bytes_of(w) && !(gf.is_nan() && wf.is_nan()) {
            return Err(format!("{what}: element {i} = {gf:?} ({:02x?}), expected {wf:?} ({:02x?})", bytemuck::bytes_of(g), bytemuck::bytes_of(w)));
        }
    }
    Ok(())
}

/// Why a GPU test run could not start: no device (skip) or a real failure.
pub enum GpuAvailability {
    Ready(Box<Gpu>),
    NoDevice(DeviceError),
    Broken(DeviceError),
}

/// Opens GPU 0 for the tests. No driver or no device means "skip"; anything else (kernels
/// not built, unsupported architecture, a missing kernel) is a failure.
pub fn open_test_gpu() -> GpuAvailability {
    match Gpu::new(0) {
        Ok(g) => GpuAvailability::Ready(Box::new(g)),
        Err(e @ (DeviceError::NoDriver | DeviceError::NoDevice)) => GpuAvailability::NoDevice(e),
        Err(e) => GpuAvailability::Broken(e),
    }
}
