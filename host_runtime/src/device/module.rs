//! The kernel module: the embedded PTX for the device's architecture, loaded (JIT-compiled
//! by the driver) once, with every manifest entry point resolved at load time.

use super::DeviceError;
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

include!(concat!(env!("OUT_DIR"), "/embedded_ptx.rs"));

/// Architectures (`major * 10 + minor`) whose PTX this binary holds.
pub fn embedded_arches() -> Vec<u32> {
    EMBEDDED_PTX.iter().map(|(a, _)| *a).collect()
}

/// The newest embedded PTX that runs on compute capability `cc` (PTX for sm_X runs on any
/// device of capability ≥ X), or exactly `forced` when given (`INFLIGHT_PTX_ARCH`, used to
/// test older PTX on a newer GPU).
fn select_ptx(cc: u32, forced: Option<u32>) -> Option<(u32, &'static str)> {
    EMBEDDED_PTX.iter().filter(|(a, _)| *a <= cc && forced.is_none_or(|f| f == *a)).max_by_key(|(a, _)| *a).copied()
}

/// Loaded kernels by entry-point name.
pub struct KernelModule {
    arch: u32,
    functions: HashMap<&'static str, CudaFunction>,
    /// Resident blocks per multiprocessor by (entry point, threads per block), as the
    /// driver's occupancy calculator reports them (cached: launch wrappers ask every launch).
    occupancy: Mutex<HashMap<(&'static str, u32), u32>>,
}

impl KernelModule {
    pub(super) fn load(ctx: &Arc<CudaContext>, cc: u32, device_name: &str) -> Result<Self, DeviceError> {
        if EMBEDDED_PTX.is_empty() {
            return Err(DeviceError::KernelsNotBuilt);
        }
        let forced = std::env::var("INFLIGHT_PTX_ARCH").ok().and_then(|v| v.trim_start_matches("sm_").parse().ok());
        let Some((arch, ptx)) = select_ptx(cc, forced).filter(|_| cc >= 80) else {
            let built = embedded_arches().iter().map(|a| format!("sm_{a}")).collect::<Vec<_>>().join(", ");
            return Err(DeviceError::UnsupportedArch { name: device_name.to_owned(), major: cc / 10, minor: cc % 10, built });
        };
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|source| DeviceError::ModuleLoad { arch, source })?;
        let mut functions = HashMap::new();
        for &name in kernel_abi::manifest::ENTRY_POINTS {
            let f = module.load_function(name).map_err(|_| DeviceError::MissingKernel { arch, name: name.to_owned() })?;
            functions.insert(name, f);
        }
        Ok(KernelModule { arch, functions, occupancy: Mutex::new(HashMap::new()) })
    }

    /// The architecture of the loaded PTX.
    pub fn arch(&self) -> u32 {
        self.arch
    }

    /// How many blocks of `threads` threads (no dynamic shared memory) of entry point `name`
    /// fit on one multiprocessor at once (registers, shared memory, warps).
    pub fn resident_blocks_per_sm(&self, name: &str, threads: u32) -> Result<u32, DeviceError> {
        let (&key, f) = self.functions.get_key_value(name).ok_or_else(|| DeviceError::MissingKernel { arch: self.arch, name: name.to_owned() })?;
        let mut cache = self.occupancy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&n) = cache.get(&(key, threads)) {
            return Ok(n);
        }
        let n = f.occupancy_max_active_blocks_per_multiprocessor(threads, 0, None).map_err(|e| DeviceError::driver("cuOccupancyMaxActiveBlocksPerMultiprocessor", e))?;
        cache.insert((key, threads), n);
        Ok(n)
    }

    /// The entry point `name` (every manifest name was resolved at load).
    pub fn function(&self, name: &str) -> Result<&CudaFunction, DeviceError> {
        self.functions.get(name).ok_or_else(|| DeviceError::MissingKernel { arch: self.arch, name: name.to_owned() })
    }
}
