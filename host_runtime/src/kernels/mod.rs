//! Typed launch wrappers: the only place kernels are launched.
//!
//! Each wrapper checks the shapes against the buffers' lengths (and the limits of the
//! parameter types), builds the `kernel_abi` parameter struct, picks the launch geometry and
//! launches on the [`Gpu`]'s stream. Errors name the kernel and the offending argument.

mod attention;
mod context_attention;
mod elementwise;
mod embedding;
mod gemm;
mod norm;
mod random;
mod rope;
mod softmax;
mod top_k;

pub use attention::{choose_splits, decode_attention, kv_append, AppendSlots, AttentionWorkspace, BlockTables, DecodeShape, KvPools, MultiBlock, PagedKvShape};
pub use context_attention::{context_attention, ContextSeqs};
pub use elementwise::{cast, copy_bytes, gelu, gelu_in_place, silu_mul, Gelu, Rows};
pub use embedding::embedding;
pub use kernel_abi::gemm::SKINNY_MAX_M;
pub use gemm::{check_gemm, choose_path, gate_up_silu, gate_up_silu_on_path, gemm, gemm_on_path, GemmEpilogue, GemmLens, GemmOp, GemmPath};
pub use norm::{layer_norm, rms_norm, rms_norm_rows, Residual};
pub use random::fill_uniform;
pub use rope::{rope, RopeShape, RopeStyle};
pub use softmax::softmax;
pub use top_k::{logits_top_k, TopKBuffers, TOP_K_MAX};

use crate::device::{DeviceError, Gpu};
use cudarc::driver::{sys, CudaFunction, DeviceRepr, LaunchConfig};
use kernel_abi::*;

/// Parameter structs that may be passed to a kernel (all from `kernel_abi`).
pub(crate) trait KernelParams: Copy {}
impl KernelParams for CastParams {}
impl KernelParams for CopyParams {}
impl KernelParams for EmbeddingParams {}
impl KernelParams for NormParams {}
impl KernelParams for RopeParams {}
impl KernelParams for GatedActParams {}
impl KernelParams for UnaryParams {}
impl KernelParams for SoftmaxParams {}
impl KernelParams for KvAppendParams {}
impl KernelParams for DecodeAttentionParams {}
impl KernelParams for AttentionMergeParams {}
impl KernelParams for GemmParams {}
impl KernelParams for ContextAttentionParams {}
impl KernelParams for TopKParams {}

/// The parameter struct as the launch's single by-value argument.
#[repr(transparent)]
struct Param<P>(P);
// SAFETY: every `KernelParams` type is a `#[repr(C)]` struct of integers, floats and device
// addresses with explicit padding, identical to the kernel's parameter (same crate).
unsafe impl<P: KernelParams> DeviceRepr for Param<P> {}

/// Threads per block for the grid-stride elementwise kernels.
pub(crate) const ELEMENTWISE_THREADS: u32 = 256;

/// Launches `name` with a 1-D grid.
pub(crate) fn launch<P: KernelParams>(gpu: &Gpu, name: &str, grid: u32, block: u32, params: P) -> Result<(), DeviceError> {
    launch_grid(gpu, name, (grid.max(1), 1, 1), block, params)
}

/// Launches `name` with a 3-D grid (each dimension at least 1).
pub(crate) fn launch_grid<P: KernelParams>(gpu: &Gpu, name: &str, grid: (u32, u32, u32), block: u32, params: P) -> Result<(), DeviceError> {
    let cfg = LaunchConfig { grid_dim: (grid.0.max(1), grid.1.max(1), grid.2.max(1)), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
    launch_cfg(gpu, gpu.module().function(name)?, cfg, params)
}

/// Launches `f` on the [`Gpu`]'s stream, with programmatic stream serialization when
/// [`Gpu::programmatic_launch`] is on (every kernel of that PTX waits for its predecessor
/// itself, so it may be scheduled before the predecessor has finished).
pub(crate) fn launch_cfg<P: KernelParams>(gpu: &Gpu, f: &CudaFunction, cfg: LaunchConfig, params: P) -> Result<(), DeviceError> {
    launch_clustered(gpu, f, cfg, 1, params)
}

/// [`launch_cfg`] with clusters of `cluster_x` CTAs along x (1: no clusters; the grid's x
/// must be a multiple of it, ≤ 8: the portable cluster size).
pub(crate) fn launch_clustered<P: KernelParams>(gpu: &Gpu, f: &CudaFunction, cfg: LaunchConfig, cluster_x: u32, params: P) -> Result<(), DeviceError> {
    let mut p = Param(params);
    gpu.context().bind_to_thread().map_err(|e| DeviceError::driver("cuCtxSetCurrent", e))?;
    let blank = || sys::CUlaunchAttribute { id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, pad: [0; 4], value: sys::CUlaunchAttributeValue { pad: [0; 64] } };
    let mut attrs = [blank(), blank()];
    let mut n = 0;
    if cluster_x > 1 {
        attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attrs[n].value.clusterDim = sys::CUlaunchAttributeValue_union__bindgen_ty_1 { x: cluster_x, y: 1, z: 1 };
        n += 1;
    }
    if gpu.programmatic_launch() {
        attrs[n].value.programmaticStreamSerializationAllowed = 1;
        n += 1;
    }
    let ex = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: gpu.stream().cu_stream(),
        attrs: attrs.as_mut_ptr(),
        numAttrs: n as u32,
    };
    let mut args = [(&raw mut p).cast::<std::ffi::c_void>()];
    // The caller checked that every address in `p` points to an allocation large enough for
    // the shape it passes, and gave the launch the dynamic shared memory the kernel needs and
    // a grid that is a multiple of the cluster.
    // SAFETY: `p` matches the kernel's single parameter (see `Param`) and outlives the call
    // (the driver copies it at launch); `attrs` lives until the call returns.
    unsafe { sys::cuLaunchKernelEx(&ex, f.cu_function(), args.as_mut_ptr(), std::ptr::null_mut()) }
        .result()
        .map_err(|e| DeviceError::driver("cuLaunchKernelEx", e))
}

/// Blocks for a grid-stride elementwise kernel over `n` elements: enough for 4 chunks of 8
/// per thread, capped at 16 blocks per multiprocessor.
pub(crate) fn elementwise_grid(gpu: &Gpu, n: usize) -> u32 {
    let per_block = ELEMENTWISE_THREADS as usize * 8 * 4;
    let cap = gpu.info().multiprocessors as usize * 16;
    n.div_ceil(per_block).clamp(1, cap.max(1)) as u32
}

/// Threads for a one-block-per-row kernel whose row is `units` chunks, each thread keeping
/// up to 4 in registers: a multiple of 32 between 32 and 1024 (longer rows re-read).
pub(crate) fn row_threads(units: usize) -> u32 {
    (units.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Chunks in a row of `cols` elements of `T`: 16-byte vectors when the row divides into
/// them, else single elements (the kernels' scalar path).
pub(crate) fn row_units<T>(cols: usize) -> usize {
    let w = 16 / size_of::<T>();
    if cols % w == 0 { cols / w } else { cols }
}

/// Converts a size to the `u32` a parameter struct holds.
pub(crate) fn to_u32(kernel: &'static str, what: &str, v: usize) -> Result<u32, DeviceError> {
    u32::try_from(v).map_err(|_| DeviceError::invalid(kernel, format!("{what} = {v} exceeds the kernel limit of {}", u32::MAX)))
}

/// Checks that a buffer holds at least `need` elements.
pub(crate) fn check_len(kernel: &'static str, what: &str, have: usize, need: usize) -> Result<(), DeviceError> {
    if have < need {
        return Err(DeviceError::invalid(kernel, format!("{what} holds {have} elements, the shape needs {need}")));
    }
    Ok(())
}

/// Entry-point name `<family>_<dtype>`.
pub(crate) fn entry_name(family: &str, t: StorageType) -> String {
    format!("{family}_{}", t.suffix())
}
