//! Launch wrapper for the embedding gather.

use super::{check_len, entry_name, launch, row_threads, to_u32};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::EmbeddingParams;

/// `out[t, :] = table[ids[t], :]` for a `[vocab, hidden]` table. Ids must be `< vocab`
/// (callers validate token ids at admission); the kernel writes zeros for any that is not.
pub fn embedding<T: DType>(gpu: &Gpu, table: &DeviceBuffer<T>, vocab: usize, hidden: usize, ids: &DeviceBuffer<u32>, out: &mut DeviceBuffer<T>) -> Result<(), DeviceError> {
    const K: &str = "embedding";
    check_len(K, "table", table.len(), vocab * hidden)?;
    check_len(K, "out", out.len(), ids.len() * hidden)?;
    let p = EmbeddingParams {
        table: table.dev_ptr(gpu),
        ids: ids.dev_ptr(gpu),
        out: out.dev_ptr(gpu),
        num_tokens: to_u32(K, "tokens", ids.len())?,
        hidden: to_u32(K, "hidden", hidden)?,
        vocab: to_u32(K, "vocab", vocab)?,
        _pad: 0,
    };
    let units = (hidden * size_of::<T>()).div_ceil(16);
    launch(gpu, &entry_name(K, T::STORAGE), p.num_tokens, row_threads(units * 4).min(256), p)
}
