//! The inflight engine's runtime.
//!
//! - [`device`]: the GPU device layer over `cudarc` (driver API, loaded at run time): device
//!   discovery, context and stream, typed device buffers, the embedded PTX module with every
//!   entry point checked at load.
//! - [`kernels`]: typed launch wrappers, the only `unsafe` surface for kernel launches; they
//!   validate shapes against the buffers before building a `kernel_abi` parameter struct.
//! - [`cpu`]: the CPU reference backend's operators (f32 math), the reference every GPU
//!   kernel is tested against.
//! - [`dtype`]: the element types tensors are stored in.
//!
//! Invariants: kernels never allocate; a launch wrapper never launches with parameters it has
//! not checked against the buffers' lengths.

pub mod cpu;
pub mod device;
pub mod dtype;
pub mod executor;
pub mod kernels;
pub mod kv;
pub mod sampling;
pub mod scheduler;
pub mod testing;

pub use device::{DeviceBuffer, DeviceError, Gpu};
pub use dtype::DType;
