//! The inflight GPU kernels: `no_std` Rust compiled for `nvptx64-nvidia-cuda`.
//!
//! Every entry point takes one `#[repr(C)]` parameter struct from `kernel_abi` and is listed
//! in `kernel_abi::manifest::ENTRY_POINTS`. Kernels never allocate. Storage types are
//! generic ([`dtype::Storage`]); each entry point is a thin non-generic wrapper (the
//! `entry!` macro) that instantiates one storage type. Math is f32 whatever the storage.
//!
//! Build with `cargo xtask build-kernels` (see `xtask/src/build_kernels.rs`).
#![no_std]
#![feature(abi_ptx, stdarch_nvptx, asm_experimental_arch, link_llvm_intrinsics, f16)]
#![allow(internal_features)]
#![cfg_attr(not(target_arch = "nvptx64"), allow(dead_code, unused_imports))]

#[cfg(target_arch = "nvptx64")]
mod arch;
#[cfg(target_arch = "nvptx64")]
mod dtype;
#[cfg(target_arch = "nvptx64")]
mod reduce;
#[cfg(target_arch = "nvptx64")]
mod elementwise;
#[cfg(target_arch = "nvptx64")]
mod embedding;
#[cfg(target_arch = "nvptx64")]
mod norm;
#[cfg(target_arch = "nvptx64")]
mod rope;
#[cfg(target_arch = "nvptx64")]
mod softmax;
#[cfg(target_arch = "nvptx64")]
mod attention;
#[cfg(target_arch = "nvptx64")]
mod context_attention;
#[cfg(target_arch = "nvptx64")]
mod tensor_core;
#[cfg(target_arch = "nvptx64")]
mod gemm;
#[cfg(all(target_arch = "nvptx64", target_feature = "sm_90a"))]
mod gemm_wgmma;
#[cfg(target_arch = "nvptx64")]
mod random;
#[cfg(target_arch = "nvptx64")]
mod top_k;

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` aborts the kernel; the host sees a launch failure.
    unsafe { core::arch::nvptx::trap() }
}
