//! The GPU device layer over `cudarc`'s driver API.
//!
//! `libcuda` is opened at run time (`dynamic-loading`), so building needs no CUDA toolkit and
//! a machine without a GPU gets a clear [`DeviceError`] rather than a crash. One [`Gpu`] owns
//! a context, one stream and the kernel module; all work is ordered on that stream.

mod buffer;
mod error;
mod module;
mod timing;

pub use buffer::DeviceBuffer;
pub use error::DeviceError;
pub use module::{embedded_arches, KernelModule};
pub use timing::Timing;

use cudarc::driver::{CudaContext, CudaStream, sys::CUdevice_attribute};
pub use kernel_abi::manifest::PtxArch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the driver says about the device in use.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability as `major * 10 + minor` (90 for an H100).
    pub compute_capability: u32,
    pub total_memory_bytes: usize,
    pub multiprocessors: u32,
    /// The PTX target loaded for this device (displays as `90a`, `80`: print it as `sm_{}`).
    pub ptx_arch: PtxArch,
}

/// One GPU: context, stream, kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: KernelModule,
    info: DeviceInfo,
    /// Programmatic dependent launch: `None` where the PTX lacks it (before sm_90), else the
    /// policy (see [`Gpu::programmatic_launch`]).
    pdl: Option<PdlPolicy>,
    /// Whether the work being queued is latency-bound ([`Gpu::set_latency_bound`]).
    latency_bound: AtomicBool,
}

/// When kernels are launched with programmatic dependent launch (`INFLIGHT_PDL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PdlPolicy {
    /// `INFLIGHT_PDL=0`.
    Never,
    /// `INFLIGHT_PDL=1`.
    Always,
    /// Unset: while the queued work is latency-bound ([`Gpu::set_latency_bound`]).
    LatencyBound,
}

/// Number of CUDA devices, or why there are none usable.
pub fn device_count() -> Result<usize, DeviceError> {
    // SAFETY: only tries to open the driver library; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(DeviceError::NoDriver);
    }
    let n = CudaContext::device_count().map_err(|e| DeviceError::driver("cuDeviceGetCount", e))?;
    Ok(n.max(0) as usize)
}

impl Gpu {
    /// Opens device `ordinal` and loads the kernels for its architecture.
    pub fn new(ordinal: usize) -> Result<Gpu, DeviceError> {
        let count = device_count()?;
        if count == 0 {
            return Err(DeviceError::NoDevice);
        }
        if ordinal >= count {
            return Err(DeviceError::BadOrdinal { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| DeviceError::driver("cuCtxCreate", e))?;
        // SAFETY: every buffer of this Gpu is used on its single stream, so stream order
        // already orders all accesses; cross-stream event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(|e| DeviceError::driver("cuDeviceGetAttribute", e))?;
        let cc = (major * 10 + minor) as u32;
        let name = ctx.name().map_err(|e| DeviceError::driver("cuDeviceGetName", e))?;
        let module = KernelModule::load(&ctx, cc, &name)?;
        let info = DeviceInfo {
            ordinal,
            name,
            compute_capability: cc,
            total_memory_bytes: ctx.total_mem().map_err(|e| DeviceError::driver("cuDeviceTotalMem", e))?,
            multiprocessors: ctx
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .map_err(|e| DeviceError::driver("cuDeviceGetAttribute", e))? as u32,
            ptx_arch: module.arch(),
        };
        let stream = ctx.default_stream();
        let pdl = (module.arch().cc >= 90).then(|| match std::env::var("INFLIGHT_PDL").as_deref() {
            Ok("0") => PdlPolicy::Never,
            Ok("1") => PdlPolicy::Always,
            _ => PdlPolicy::LatencyBound,
        });
        Ok(Gpu { ctx, stream, module, info, pdl, latency_bound: AtomicBool::new(false) })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub(crate) fn module(&self) -> &KernelModule {
        &self.module
    }

    /// Whether kernels are launched with programmatic dependent launch now: each may start
    /// its blocks while the previous kernel finishes, and waits inside for it
    /// (`griddepcontrol`, in every kernel of the sm_90 PTX). That hides launch latency and
    /// lets a skinny GEMM stream its first weights early, but the waiting blocks slow a
    /// compute-bound predecessor (H200: batch-1 decode 5.33 → 4.97 ms/token, batch-128 decode
    /// 15.8 → 23.4 ms/step), so by default it is on only while [`Gpu::set_latency_bound`] says
    /// so; `INFLIGHT_PDL=1` turns it on always, `INFLIGHT_PDL=0` off. Never before sm_90.
    pub fn programmatic_launch(&self) -> bool {
        match self.pdl {
            None | Some(PdlPolicy::Never) => false,
            Some(PdlPolicy::Always) => true,
            Some(PdlPolicy::LatencyBound) => self.latency_bound.load(Ordering::Relaxed),
        }
    }

    /// Declares whether the kernels queued from now on are latency-bound (e.g. a decode step
    /// of a few tokens), which turns programmatic dependent launch on under the default
    /// policy ([`Gpu::programmatic_launch`]).
    pub fn set_latency_bound(&self, on: bool) {
        self.latency_bound.store(on, Ordering::Relaxed);
    }

    /// Blocks of `threads` threads of entry point `name` that fit on one multiprocessor at
    /// once (the driver's occupancy calculator, cached per kernel and block size).
    pub fn resident_blocks_per_sm(&self, name: &str, threads: u32) -> Result<u32, DeviceError> {
        self.ctx.bind_to_thread().map_err(|e| DeviceError::driver("cuCtxSetCurrent", e))?;
        self.module.resident_blocks_per_sm(name, threads)
    }

    /// Waits for all queued work; reports an earlier asynchronous failure (e.g. a kernel trap).
    pub fn synchronize(&self) -> Result<(), DeviceError> {
        self.stream.synchronize().map_err(|e| DeviceError::driver("cuStreamSynchronize", e))
    }

    /// Free and total device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize), DeviceError> {
        self.ctx.mem_get_info().map_err(|e| DeviceError::driver("cuMemGetInfo", e))
    }
}
