//! Errors of the GPU backend: device failures, models or shapes the GPU path does not run,
//! and KV sizing that cannot fit. Each becomes a [`BackendError`] for the executor.

use host_runtime::executor::BackendError;
use host_runtime::kv::KvSizingError;
use host_runtime::DeviceError;

/// Why the GPU backend could not be built or could not run a step.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The model (or a part of it) is not supported on the GPU yet.
    #[error("not on the GPU yet: {0}")]
    Unsupported(String),
    /// A configuration or input that cannot work (the message says which value).
    #[error("{0}")]
    Invalid(String),
    #[error("GPU KV cache: {0}")]
    KvSizing(#[from] KvSizingError),
}

impl From<GpuError> for BackendError {
    fn from(e: GpuError) -> Self {
        BackendError(format!("gpu: {e}"))
    }
}
