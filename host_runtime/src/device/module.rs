//! The kernel module: the embedded PTX for the device's architecture, loaded (JIT-compiled
//! by the driver) once, with every manifest entry point resolved at load time.

use super::DeviceError;
use cudarc::driver::{CudaContext, CudaFunction};
use kernel_abi::manifest::PtxArch;
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

include!(concat!(env!("OUT_DIR"), "/embedded_ptx.rs"));

/// The PTX targets this binary holds.
pub fn embedded_arches() -> Vec<PtxArch> {
    EMBEDDED_PTX.iter().map(|(a, _)| *a).collect()
}

/// The newest of `available` that loads on compute capability `cc` (PTX for sm_X runs on
/// any device of capability ≥ X; sm_Xa only on capability X: [`PtxArch::runs_on`]), so
/// sm_90a wins on an H100/H200 and is skipped elsewhere; or exactly `forced` when given
/// (`INFLIGHT_PTX_ARCH`, used to test older PTX on a newer GPU), still only where it loads.
fn select_ptx<T: Copy>(available: &[(PtxArch, T)], cc: u32, forced: Option<PtxArch>) -> Option<(PtxArch, T)> {
    available.iter().filter(|(a, _)| a.runs_on(cc) && forced.is_none_or(|f| f == *a)).max_by_key(|(a, _)| *a).copied()
}

/// `INFLIGHT_PTX_ARCH` (`80`, `sm_90`, `90a`, …), if set; a value that names no target is an
/// error rather than silently ignored.
fn forced_arch() -> Result<Option<PtxArch>, DeviceError> {
    match std::env::var("INFLIGHT_PTX_ARCH") {
        Ok(v) if !v.trim().is_empty() => PtxArch::parse(&v).map(Some).ok_or(DeviceError::BadPtxArch(v)),
        _ => Ok(None),
    }
}

/// Loaded kernels by entry-point name.
pub struct KernelModule {
    arch: PtxArch,
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
        let forced = forced_arch()?;
        let Some((arch, ptx)) = select_ptx(EMBEDDED_PTX, cc, forced).filter(|_| cc >= 80) else {
            let built = embedded_arches().iter().map(|a| format!("sm_{a}")).collect::<Vec<_>>().join(", ");
            if let Some(forced) = forced.filter(|_| cc >= 80) {
                return Err(DeviceError::ForcedArchUnavailable { forced, major: cc / 10, minor: cc % 10, built });
            }
            return Err(DeviceError::UnsupportedArch { name: device_name.to_owned(), major: cc / 10, minor: cc % 10, built });
        };
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|source| DeviceError::ModuleLoad { arch, source })?;
        let mut functions = HashMap::new();
        for name in arch.entry_points() {
            let f = module.load_function(name).map_err(|_| DeviceError::MissingKernel { arch, name: name.to_owned() })?;
            functions.insert(name, f);
        }
        Ok(KernelModule { arch, functions, occupancy: Mutex::new(HashMap::new()) })
    }

    /// The target of the loaded PTX.
    pub fn arch(&self) -> PtxArch {
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

#[cfg(test)]
mod tests {
    use super::*;

    const BUILT: [(PtxArch, u8); 3] = [(PtxArch::SM80, 0), (PtxArch::SM90, 1), (PtxArch::SM90A, 2)];

    #[test]
    fn sm90a_loads_on_capability_90_only() {
        assert_eq!(select_ptx(&BUILT, 90, None), Some((PtxArch::SM90A, 2)));
        // Blackwell (100) and Ada (89) never get the Hopper-specific PTX.
        assert_eq!(select_ptx(&BUILT, 100, None), Some((PtxArch::SM90, 1)));
        assert_eq!(select_ptx(&BUILT, 89, None), Some((PtxArch::SM80, 0)));
        assert_eq!(select_ptx(&BUILT, 75, None), None);
        assert_eq!(select_ptx(&BUILT[..2], 90, None), Some((PtxArch::SM90, 1)));
    }

    #[test]
    fn a_forced_target_is_taken_only_where_it_loads() {
        assert_eq!(select_ptx(&BUILT, 90, Some(PtxArch::SM90)), Some((PtxArch::SM90, 1)));
        assert_eq!(select_ptx(&BUILT, 90, Some(PtxArch::SM80)), Some((PtxArch::SM80, 0)));
        assert_eq!(select_ptx(&BUILT, 100, Some(PtxArch::SM90A)), None);
        assert_eq!(select_ptx(&BUILT, 90, Some(PtxArch { cc: 86, specific: false })), None);
    }
}
