//! Errors of the device layer, each saying what to do about it.

use cudarc::driver::DriverError;
use kernel_abi::manifest::PtxArch;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no CUDA driver found (libcuda.so could not be loaded); run on the CPU backend with `--device cpu`, or install the NVIDIA driver")]
    NoDriver,
    #[error("the CUDA driver reports no GPU; run on the CPU backend with `--device cpu`")]
    NoDevice,
    #[error("GPU ordinal {ordinal} does not exist: this machine has {count} GPU(s)")]
    BadOrdinal { ordinal: usize, count: usize },
    #[error("this binary was built without GPU kernels: run `cargo xtask build-kernels`, then rebuild (or use `--device cpu`)")]
    KernelsNotBuilt,
    #[error("GPU {name} has compute capability {major}.{minor}, which the kernels do not support: they need sm_80 or newer (this binary holds PTX for {built})")]
    UnsupportedArch { name: String, major: u32, minor: u32, built: String },
    #[error("the kernel module for sm_{arch} lacks entry point `{name}` listed in kernel_abi's manifest: rebuild with `cargo xtask build-kernels`")]
    MissingKernel { arch: PtxArch, name: String },
    #[error("loading the sm_{arch} kernel module failed: {source}")]
    ModuleLoad { arch: PtxArch, source: DriverError },
    #[error("INFLIGHT_PTX_ARCH={0:?} names no PTX target: use e.g. 80, sm_90 or sm_90a")]
    BadPtxArch(String),
    #[error("INFLIGHT_PTX_ARCH asks for sm_{forced} PTX, which this binary lacks or which does not load on compute capability {major}.{minor} (this binary holds PTX for {built})")]
    ForcedArchUnavailable { forced: PtxArch, major: u32, minor: u32, built: String },
    #[error("{op} failed: {source}")]
    Driver { op: &'static str, source: DriverError },
    #[error("invalid kernel arguments for {kernel}: {reason}")]
    InvalidArgument { kernel: &'static str, reason: String },
}

impl DeviceError {
    pub(crate) fn driver(op: &'static str, source: DriverError) -> Self {
        DeviceError::Driver { op, source }
    }

    pub(crate) fn invalid(kernel: &'static str, reason: impl Into<String>) -> Self {
        DeviceError::InvalidArgument { kernel, reason: reason.into() }
    }
}
