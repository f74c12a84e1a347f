//! Launch wrapper for the per-row top-k of logits ([`logits_top_k`]) and its device buffers
//! ([`TopKBuffers`]): what greedy and top-k sampling need, read back instead of whole rows.

use super::{check_len, entry_name, launch, launch_grid, to_u32};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use crate::sampling::TopLogits;
use kernel_abi::{TopKParams, TOP_K_MAX_SPLITS};
pub use kernel_abi::TOP_K_MAX;

/// Columns a split of a row covers at least.
const MIN_SPLIT_COLUMNS: usize = 2048;
/// Threads of a split's block (8 warps: eight lists to merge).
const PART_THREADS: u32 = 256;

/// The kernels' inputs, partial results and outputs for up to `max_rows` rows, allocated once.
pub struct TopKBuffers {
    max_rows: usize,
    max_parts: usize,
    inv_temperature: DeviceBuffer<f32>,
    part_ids: DeviceBuffer<u32>,
    part_values: DeviceBuffer<f32>,
    part_stats: DeviceBuffer<f32>,
    ids: DeviceBuffer<u32>,
    values: DeviceBuffer<f32>,
    stats: DeviceBuffer<f32>,
}

/// Splits per row: enough blocks for two per multiprocessor, each over at least
/// [`MIN_SPLIT_COLUMNS`] columns, at most [`TOP_K_MAX_SPLITS`]. `rows × splits` never
/// exceeds `rows + 2 × multiprocessors`.
fn choose_splits(rows: usize, vocab: usize, multiprocessors: usize) -> usize {
    (2 * multiprocessors).div_ceil(rows.max(1)).min(vocab.div_ceil(MIN_SPLIT_COLUMNS)).clamp(1, TOP_K_MAX_SPLITS)
}

impl TopKBuffers {
    pub fn new(gpu: &Gpu, max_rows: usize) -> Result<TopKBuffers, DeviceError> {
        let n = max_rows.max(1);
        let parts = n + 2 * gpu.info().multiprocessors as usize;
        Ok(TopKBuffers {
            max_rows: n,
            max_parts: parts,
            inv_temperature: gpu.zeros(n)?,
            part_ids: gpu.zeros(parts * TOP_K_MAX)?,
            part_values: gpu.zeros(parts * TOP_K_MAX)?,
            part_stats: gpu.zeros(2 * parts)?,
            ids: gpu.zeros(n * TOP_K_MAX)?,
            values: gpu.zeros(n * TOP_K_MAX)?,
            stats: gpu.zeros(2 * n)?,
        })
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Reads back the first `rows` rows' results as [`TopLogits`] (`inv_temperature[r]` is the
    /// one the kernel ran with, for the log-sum-exp).
    pub fn download(&self, gpu: &Gpu, rows: usize) -> Result<Vec<TopLogits>, DeviceError> {
        check_len("logits_top_k", "rows", self.max_rows, rows)?;
        let mut ids = vec![0u32; rows * TOP_K_MAX];
        let mut values = vec![0f32; rows * TOP_K_MAX];
        let mut stats = vec![0f32; rows * 2];
        gpu.download_range(&self.ids, 0, &mut ids)?;
        gpu.download_range(&self.values, 0, &mut values)?;
        gpu.download_range(&self.stats, 0, &mut stats)?;
        Ok((0..rows)
            .map(|r| {
                let at = r * TOP_K_MAX;
                // Missing entries (fewer finite values than TOP_K_MAX) are id u32::MAX.
                let n = ids[at..at + TOP_K_MAX].iter().take_while(|&&id| id != u32::MAX).count();
                TopLogits::from_sum(ids[at..at + n].to_vec(), values[at..at + n].to_vec(), stats[2 * r], stats[2 * r + 1])
            })
            .collect())
    }
}

/// Per row `r < inv_temperature.len()` of `logits` (row `r` at `r * row_stride`, `vocab`
/// values): the [`TOP_K_MAX`] best ids and values and the row's `Σ exp((x - max) · inv_t)`
/// into `out` (see `kernel_abi::TopKParams`). `inv_temperature` must be finite and positive
/// (1 for greedy log-probs).
pub fn logits_top_k<T: DType>(gpu: &Gpu, logits: &DeviceBuffer<T>, vocab: usize, row_stride: usize, inv_temperature: &[f32], out: &mut TopKBuffers) -> Result<(), DeviceError> {
    const K: &str = "logits_top_k";
    let rows = inv_temperature.len();
    if rows == 0 {
        return Ok(());
    }
    if vocab == 0 || row_stride < vocab {
        return Err(DeviceError::invalid(K, format!("vocab {vocab} with row stride {row_stride}")));
    }
    if let Some(t) = inv_temperature.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        return Err(DeviceError::invalid(K, format!("inverse temperature {t} (must be finite and positive)")));
    }
    check_len(K, "rows of the output buffers", out.max_rows, rows)?;
    check_len(K, "logits", logits.len(), (rows - 1) * row_stride + vocab)?;
    let splits = choose_splits(rows, vocab, gpu.info().multiprocessors as usize);
    check_len(K, "parts", out.max_parts, rows * splits)?;
    gpu.upload_range(&mut out.inv_temperature, 0, inv_temperature)?;
    let p = TopKParams {
        logits: logits.dev_ptr(gpu),
        inv_temperature: out.inv_temperature.dev_ptr(gpu),
        part_ids: out.part_ids.dev_ptr(gpu),
        part_values: out.part_values.dev_ptr(gpu),
        part_stats: out.part_stats.dev_ptr(gpu),
        out_ids: out.ids.dev_ptr(gpu),
        out_values: out.values.dev_ptr(gpu),
        out_stats: out.stats.dev_ptr(gpu),
        rows: to_u32(K, "rows", rows)?,
        vocab: to_u32(K, "vocab", vocab)?,
        row_stride: to_u32(K, "row_stride", row_stride)?,
        splits: splits as u32,
    };
    launch_grid(gpu, &entry_name(K, T::STORAGE), (p.splits, p.rows, 1), PART_THREADS, p)?;
    let merge_threads = 32 * splits.min(8) as u32;
    launch(gpu, "logits_top_k_merge", p.rows, merge_threads, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fill_the_device_and_fit_the_parts() {
        for rows in [1usize, 2, 7, 64, 131, 264, 1000] {
            for vocab in [1usize, 100, 2048, 32_000, 128_256, 151_936] {
                let s = choose_splits(rows, vocab, 132);
                assert!((1..=TOP_K_MAX_SPLITS).contains(&s));
                assert!(rows * s <= rows + 2 * 132, "rows {rows} vocab {vocab}: {s}");
                assert!(s == 1 || vocab.div_ceil(s) >= MIN_SPLIT_COLUMNS / 2, "rows {rows} vocab {vocab}: {s}");
            }
        }
        assert_eq!(choose_splits(1, 128_256, 132), 63);
        assert_eq!(choose_splits(256, 128_256, 132), 2);
    }
}
