//! Errors of the device layer, each saying what to do about it.

use cudarc::driver::DriverError;

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
    MissingKernel { arch: u32, name: String },
    #[error("loading the sm_{arch} kernel module failed: {source}")]
    ModuleLoad { arch: u32, source: DriverError },
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
