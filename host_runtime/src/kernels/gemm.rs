//! Launch wrappers for the tensor-core GEMM ([`gemm`]: `out = x · wᵀ (+ bias) (+ residual)`,
//! `w` in `nn.Linear` layout `[n, k]`) and the fused MLP gate/up product ([`gate_up_silu`]:
//! `out = silu(x · w_gᵀ) * (x · w_uᵀ)` from one `[2 inter, k]` weight buffer).
//!
//! Paths, shape rules and launch geometry are defined once in [`kernel_abi::gemm`]: bf16 and
//! f16 only, any `m`, `n` and `k` multiples of 8. [`check_gemm`] validates a call without a
//! GPU (every error names the kernel and the argument); the `*_on_path` variants run a chosen
//! path (tests and benchmarks), the plain ones let [`choose_path`] pick by shape.
//! No path needs a workspace: the skinny (decode) path splits `k` inside a CTA only. The
//! tile128 and wgmma paths opt in to dynamic shared memory per launch; the wgmma path exists
//! only in the sm_90a PTX (H100/H200), and asking for it elsewhere is an error.

use super::{check_len, launch_clustered, launch_grid};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::LaunchConfig;
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::gemm::{self as abi, ALIGN, SKINNY_MAX_M};
use kernel_abi::{GemmParams, StorageType};

pub use kernel_abi::gemm::{choose_path, GemmOp, GemmPath};

/// The optional epilogue operands of [`gemm`]: `bias` `[n]` and `residual` `[m, n]`, added in
/// f32 before the single rounding of the output.
pub struct GemmEpilogue<'a, T> {
    pub bias: Option<&'a DeviceBuffer<T>>,
    pub residual: Option<&'a DeviceBuffer<T>>,
}

impl<T> GemmEpilogue<'_, T> {
    /// No bias, no residual.
    pub fn none() -> Self {
        GemmEpilogue { bias: None, residual: None }
    }
}

impl<T> Default for GemmEpilogue<'_, T> {
    fn default() -> Self {
        Self::none()
    }
}

impl<T> Clone for GemmEpilogue<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for GemmEpilogue<'_, T> {}

/// Buffer lengths (in elements) of one call, for [`check_gemm`]; `None` = operand absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct GemmLens {
    pub x: usize,
    pub w: usize,
    pub out: usize,
    pub bias: Option<usize>,
    pub residual: Option<usize>,
}

fn kernel(op: GemmOp) -> &'static str {
    match op {
        GemmOp::Gemm => "gemm",
        GemmOp::GateUpSilu => "gate_up_silu",
    }
}

/// Validates a call of `op` (output `m × n`; for gate/up `n` is `inter`) on element type `t`
/// against the buffer lengths. `m = 0` is valid (nothing to do).
pub fn check_gemm(op: GemmOp, t: StorageType, m: usize, n: usize, k: usize, lens: &GemmLens) -> Result<(), DeviceError> {
    let kn = kernel(op);
    if !abi::GEMM_TYPES.contains(&t) {
        return Err(DeviceError::invalid(kn, format!("element type {} is not supported: bf16 and f16 only", t.suffix())));
    }
    let n_name = if op == GemmOp::GateUpSilu { "inter" } else { "n" };
    for (what, v) in [(n_name, n), ("k", k)] {
        if v == 0 || v % ALIGN != 0 {
            return Err(DeviceError::invalid(kn, format!("{what} = {v} must be a positive multiple of {ALIGN}")));
        }
    }
    for (what, v) in [("m", m), (n_name, n), ("k", k)] {
        if v > i32::MAX as usize {
            return Err(DeviceError::invalid(kn, format!("{what} = {v} exceeds the kernel limit of {}", i32::MAX)));
        }
    }
    let w_rows = if op == GemmOp::GateUpSilu { 2 * n } else { n };
    let mul = |a: usize, b: usize, what: &str| a.checked_mul(b).ok_or_else(|| DeviceError::invalid(kn, format!("{what} does not fit the address space")));
    check_len(kn, "x", lens.x, mul(m, k, "x")?)?;
    check_len(kn, if op == GemmOp::GateUpSilu { "w_gate_up" } else { "w" }, lens.w, mul(w_rows, k, "w")?)?;
    check_len(kn, "out", lens.out, mul(m, n, "out")?)?;
    if let Some(b) = lens.bias {
        check_len(kn, "bias", b, n)?;
    }
    if let Some(r) = lens.residual {
        check_len(kn, "residual", r, m * n)?;
    }
    Ok(())
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) (+ residual[m, n])`, bf16 or f16, f32
/// accumulation; the path is chosen by shape.
pub fn gemm<T: DType>(gpu: &Gpu, x: &DeviceBuffer<T>, w: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, m: usize, n: usize, k: usize, epi: GemmEpilogue<'_, T>) -> Result<(), DeviceError> {
    let path = choose_path(GemmOp::Gemm, m, n, gpu.info().multiprocessors as usize, choice_arch(gpu));
    gemm_on_path(gpu, path, x, w, out, m, n, k, epi)
}

/// [`gemm`] on a given path (any path computes any valid shape, except that the skinny path
/// takes `m ≤` [`SKINNY_MAX_M`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_on_path<T: DType>(gpu: &Gpu, path: GemmPath, x: &DeviceBuffer<T>, w: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, m: usize, n: usize, k: usize, epi: GemmEpilogue<'_, T>) -> Result<(), DeviceError> {
    let lens = GemmLens { x: x.len(), w: w.len(), out: out.len(), bias: epi.bias.map(|b| b.len()), residual: epi.residual.map(|r| r.len()) };
    check_gemm(GemmOp::Gemm, T::STORAGE, m, n, k, &lens)?;
    let ptr = |b: Option<&DeviceBuffer<T>>| b.map_or(kernel_abi::DevPtr::NULL, |b| b.dev_ptr(gpu));
    let p = GemmParams { x: x.dev_ptr(gpu), w: w.dev_ptr(gpu), bias: ptr(epi.bias), residual: ptr(epi.residual), out: out.dev_ptr(gpu), m: m as u32, n: n as u32, k: k as u32, _pad: 0 };
    launch(gpu, GemmOp::Gemm, path, T::STORAGE, p)
}

/// `out[m, inter] = silu(x · w_gᵀ) * (x · w_uᵀ)` where `w_gate_up` is `[2 inter, k]` (rows
/// `0 .. inter` gate, `inter .. 2 inter` up): one launch, bf16 or f16.
pub fn gate_up_silu<T: DType>(gpu: &Gpu, x: &DeviceBuffer<T>, w_gate_up: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, m: usize, inter: usize, k: usize) -> Result<(), DeviceError> {
    let path = choose_path(GemmOp::GateUpSilu, m, inter, gpu.info().multiprocessors as usize, choice_arch(gpu));
    gate_up_silu_on_path(gpu, path, x, w_gate_up, out, m, inter, k)
}

/// [`gate_up_silu`] on a given path.
#[allow(clippy::too_many_arguments)]
pub fn gate_up_silu_on_path<T: DType>(gpu: &Gpu, path: GemmPath, x: &DeviceBuffer<T>, w_gate_up: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>, m: usize, inter: usize, k: usize) -> Result<(), DeviceError> {
    let lens = GemmLens { x: x.len(), w: w_gate_up.len(), out: out.len(), bias: None, residual: None };
    check_gemm(GemmOp::GateUpSilu, T::STORAGE, m, inter, k, &lens)?;
    let p = GemmParams { x: x.dev_ptr(gpu), w: w_gate_up.dev_ptr(gpu), out: out.dev_ptr(gpu), m: m as u32, n: inter as u32, k: k as u32, ..GemmParams::default() };
    launch(gpu, GemmOp::GateUpSilu, path, T::STORAGE, p)
}

/// The PTX target the automatic path choice assumes: the loaded one, except that
/// `INFLIGHT_GEMM_WGMMA=0` leaves the wgmma path out (the sm_90 paths instead; explicit
/// `*_on_path` calls still reach it).
fn choice_arch(gpu: &Gpu) -> kernel_abi::manifest::PtxArch {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let arch = gpu.info().ptx_arch;
    if arch.has_wgmma() && *OFF.get_or_init(|| std::env::var("INFLIGHT_GEMM_WGMMA").is_ok_and(|v| v == "0")) { kernel_abi::manifest::PtxArch::SM90 } else { arch }
}

/// Launches a validated call.
fn launch(gpu: &Gpu, op: GemmOp, path: GemmPath, t: StorageType, p: GemmParams) -> Result<(), DeviceError> {
    let (m, n) = (p.m as usize, p.n as usize);
    if m == 0 {
        return Ok(());
    }
    if path == GemmPath::Skinny && m > SKINNY_MAX_M {
        return Err(DeviceError::invalid(kernel(op), format!("the skinny path takes m ≤ {SKINNY_MAX_M}, got m = {m}")));
    }
    let arch = gpu.info().ptx_arch;
    if !path.available(arch) {
        return Err(DeviceError::invalid(kernel(op), format!("the {} path needs the sm_90a PTX (an H100/H200 and a binary built with it); the loaded PTX is sm_{arch}", path.tag())));
    }
    let (gx, gy) = abi::grid(op, path, m, n);
    if gx > i32::MAX as usize || gy > 65_535 {
        return Err(DeviceError::invalid(kernel(op), format!("m = {m}, n = {n} need {gx} × {gy} CTAs, more than a grid holds")));
    }
    let name = abi::entry_name(op, path, t).ok_or_else(|| DeviceError::invalid(kernel(op), "no entry point for this type"))?;
    let smem = abi::tile_smem_bytes(path);
    if path == GemmPath::Skinny {
        return launch_grid(gpu, name, (gx as u32, gy as u32, 1), skinny_threads(gpu, name, gx)?, p);
    }
    if smem == 0 {
        return launch_grid(gpu, name, (gx as u32, gy as u32, 1), path.threads(), p);
    }
    // tile128 and wgmma keep their pipelines in dynamic shared memory (64 and 161 KiB, over
    // the 48 KiB a launch gets without opting in); the kernels write nothing with less.
    let f = gpu.module().function(name)?;
    f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32).map_err(|e| DeviceError::driver("cuFuncSetAttribute", e))?;
    // wgmma at small grids: clusters of `split` CTAs per tile share its k.
    let split = if path == GemmPath::Wgmma { wgmma_split(op, m, n, p.k as usize, gpu.info().multiprocessors as usize) } else { 1 };
    let gx = gx * split;
    if gx > i32::MAX as usize {
        return Err(DeviceError::invalid(kernel(op), format!("m = {m}, n = {n} need {gx} CTAs, more than a grid holds")));
    }
    let cfg = LaunchConfig { grid_dim: (gx as u32, gy.max(1) as u32, 1), block_dim: (path.threads(), 1, 1), shared_mem_bytes: smem };
    launch_clustered(gpu, f, cfg, split as u32, p)
}

/// CTAs per tile of a wgmma launch ([`abi::wgmma_split`]); `INFLIGHT_WGMMA_SPLIT` (1, 2 or
/// 4) overrides it for benchmarks.
fn wgmma_split(op: GemmOp, m: usize, n: usize, k: usize, sms: usize) -> usize {
    static FORCED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| std::env::var("INFLIGHT_WGMMA_SPLIT").ok().and_then(|v| v.parse().ok()).filter(|s| [1, 2, 4].contains(s)));
    forced.unwrap_or_else(|| abi::wgmma_split(op, m, n, k, sms))
}

/// Block size of a skinny launch of `ctas` CTAs ([`abi::skinny_threads`]);
/// `INFLIGHT_SKINNY_THREADS` (128 or 256) overrides it for benchmarks.
fn skinny_threads(gpu: &Gpu, name: &str, ctas: usize) -> Result<u32, DeviceError> {
    static FORCED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        std::env::var("INFLIGHT_SKINNY_THREADS").ok().and_then(|v| v.parse().ok()).filter(|t| [abi::SKINNY_THREADS, abi::SKINNY_MAX_THREADS].contains(t))
    });
    if let Some(t) = forced {
        return Ok(t);
    }
    let wide = gpu.resident_blocks_per_sm(name, abi::SKINNY_MAX_THREADS)? as usize;
    Ok(abi::skinny_threads(ctas, wide, gpu.info().multiprocessors as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(m: usize, n: usize, k: usize) -> GemmLens {
        GemmLens { x: m * k, w: n * k, out: m * n, bias: None, residual: None }
    }

    fn err(r: Result<(), DeviceError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into())
    }

    #[test]
    fn valid_shapes_pass() {
        let t = StorageType::Bf16;
        assert!(check_gemm(GemmOp::Gemm, t, 1, 8, 8, &lens(1, 8, 8)).is_ok());
        assert!(check_gemm(GemmOp::Gemm, StorageType::F16, 17, 4096, 4096, &lens(17, 4096, 4096)).is_ok());
        assert!(check_gemm(GemmOp::Gemm, t, 0, 8, 8, &lens(0, 8, 8)).is_ok());
        let gl = GemmLens { x: 3 * 64, w: 2 * 16 * 64, out: 3 * 16, ..GemmLens::default() };
        assert!(check_gemm(GemmOp::GateUpSilu, t, 3, 16, 64, &gl).is_ok());
    }

    #[test]
    fn bad_shapes_name_the_argument() {
        let t = StorageType::Bf16;
        assert!(err(check_gemm(GemmOp::Gemm, StorageType::F32, 1, 8, 8, &lens(1, 8, 8))).contains("f32"));
        assert!(err(check_gemm(GemmOp::Gemm, t, 1, 12, 8, &lens(1, 12, 8))).contains("n = 12"));
        assert!(err(check_gemm(GemmOp::Gemm, t, 1, 8, 20, &lens(1, 8, 20))).contains("k = 20"));
        assert!(err(check_gemm(GemmOp::Gemm, t, 1, 8, 0, &lens(1, 8, 0))).contains("k = 0"));
        let short_x = GemmLens { x: 7, ..lens(1, 8, 8) };
        assert!(err(check_gemm(GemmOp::Gemm, t, 1, 8, 8, &short_x)).contains("x holds 7"));
        let short_w = GemmLens { w: 63, ..lens(1, 8, 8) };
        assert!(err(check_gemm(GemmOp::Gemm, t, 1, 8, 8, &short_w)).contains("w holds 63"));
        let short_out = GemmLens { out: 15, ..lens(2, 8, 8) };
        assert!(err(check_gemm(GemmOp::Gemm, t, 2, 8, 8, &short_out)).contains("out holds 15"));
        let short_bias = GemmLens { bias: Some(7), ..lens(2, 8, 8) };
        assert!(err(check_gemm(GemmOp::Gemm, t, 2, 8, 8, &short_bias)).contains("bias holds 7"));
        let short_res = GemmLens { residual: Some(8), ..lens(2, 8, 8) };
        assert!(err(check_gemm(GemmOp::Gemm, t, 2, 8, 8, &short_res)).contains("residual holds 8"));
        // gate/up: the weight holds 2 × inter rows.
        let gl = GemmLens { x: 64, w: 16 * 64, out: 16, ..GemmLens::default() };
        assert!(err(check_gemm(GemmOp::GateUpSilu, t, 1, 16, 64, &gl)).contains("w_gate_up holds 1024"));
        assert!(err(check_gemm(GemmOp::GateUpSilu, t, 1, 20, 64, &gl)).contains("inter = 20"));
    }
}
