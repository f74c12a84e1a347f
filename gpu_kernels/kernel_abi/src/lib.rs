//! The contract between the host and the device kernels.
//!
//! Every kernel takes exactly one argument: a `#[repr(C)]` parameter struct defined here.
//! The device crate (`gpu_kernels/kernels`, built for `nvptx64-nvidia-cuda`) and the host
//! launch wrappers (`host_runtime::kernels`) both use these definitions, so the layout of a
//! launch cannot drift between the two sides. [`manifest::ENTRY_POINTS`] lists every kernel
//! entry point: `cargo xtask build-kernels` fails if one is missing from the PTX, and the host
//! checks each one when it loads the module.
//!
//! Conventions:
//! - device addresses are [`DevPtr`] (a plain `u64`; [`DevPtr::NULL`] means "absent" for the
//!   optional operands documented per field);
//! - element counts that can exceed 2³² are `u64`, row/column counts are `u32`;
//! - 16-bit floating-point storage (f16, bf16) is computed in f32 inside the kernels.
#![no_std]

pub mod gemm;
pub mod manifest;
pub mod paged;
pub mod params;

pub use params::*;

/// A device address as a kernel parameter. `0` is the null pointer (an absent operand).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DevPtr(pub u64);

impl DevPtr {
    /// The null device pointer: marks an optional operand as absent.
    pub const NULL: DevPtr = DevPtr(0);

    /// True for [`DevPtr::NULL`].
    #[inline(always)]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// This address plus `bytes`.
    #[inline(always)]
    pub const fn offset_bytes(self, bytes: u64) -> DevPtr {
        DevPtr(self.0 + bytes)
    }

    /// The address as a typed pointer (device side).
    #[inline(always)]
    pub const fn as_ptr<T>(self) -> *const T {
        self.0 as usize as *const T
    }

    /// The address as a typed mutable pointer (device side).
    #[inline(always)]
    pub const fn as_mut_ptr<T>(self) -> *mut T {
        self.0 as usize as *mut T
    }
}

/// Storage types of tensors the kernels read and write. The discriminants are part of the
/// ABI only through the entry-point names (see [`manifest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageType {
    F32,
    F16,
    Bf16,
}

impl StorageType {
    /// Size of one element in bytes.
    pub const fn size_bytes(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::F16 | StorageType::Bf16 => 2,
        }
    }

    /// The suffix used in kernel entry-point names (`rms_norm_bf16`, …).
    pub const fn suffix(self) -> &'static str {
        match self {
            StorageType::F32 => "f32",
            StorageType::F16 => "f16",
            StorageType::Bf16 => "bf16",
        }
    }

    /// Every storage type, in manifest order.
    pub const ALL: [StorageType; 3] = [StorageType::F32, StorageType::F16, StorageType::Bf16];
}

/// Bytes moved by one vectorised access (one `ld.global.v4.u32`).
pub const VECTOR_BYTES: usize = 16;
