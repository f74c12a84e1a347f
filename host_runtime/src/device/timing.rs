//! Device-event timing for benchmarks: warm-up, then the median of many timed runs, each
//! bracketed by events on the stream (no host clock involved).

use super::{DeviceError, Gpu};
use cudarc::driver::sys::CUevent_flags;

/// Timing statistics of one benchmark case, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub median_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub runs: usize,
}

impl Gpu {
    /// Runs `f(i)` `warmup` times, then `runs` times between two events each; `i` counts up
    /// so the caller can rotate inputs. Returns the median and extremes.
    pub fn time_runs(&self, warmup: usize, runs: usize, mut f: impl FnMut(usize) -> Result<(), DeviceError>) -> Result<Timing, DeviceError> {
        for i in 0..warmup {
            f(i)?;
        }
        self.synchronize()?;
        let ev = |_| self.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| DeviceError::driver("cuEventCreate", e));
        let (start, end) = (ev(())?, ev(())?);
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            start.record(self.stream()).map_err(|e| DeviceError::driver("cuEventRecord", e))?;
            f(warmup + i)?;
            end.record(self.stream()).map_err(|e| DeviceError::driver("cuEventRecord", e))?;
            end.synchronize().map_err(|e| DeviceError::driver("cuEventSynchronize", e))?;
            times.push(start.elapsed_ms(&end).map_err(|e| DeviceError::driver("cuEventElapsedTime", e))? as f64 * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok(Timing { median_us: times[times.len() / 2], min_us: times[0], max_us: times[times.len() - 1], runs })
    }
}
