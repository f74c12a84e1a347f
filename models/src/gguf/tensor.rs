//! GGUF tensor infos (name, dims fastest first, GGML type, data offset) parsed with checked
//! arithmetic, and the layout checks over all of them: alignment, bounds, no overlap.

use super::reader::Cursor;
use crate::error::LoadError;
use quant::GgmlType;
use std::path::Path;

/// Most dims a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// The fewest bytes one tensor info takes in the file (empty name, one dim).
pub(crate) const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// One tensor of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` varies fastest (a row-major `[out][in]` matrix is `[in, out]`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
    n_bytes: u64,
}

impl TensorInfo {
    /// Product of the dims (checked at parse time to fit in an `i64`).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).unwrap_or(u64::MAX)
    }

    /// Size of the data in bytes.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// Reads the info of tensor number `index`.
pub(crate) fn read_tensor_info(cur: &mut Cursor, index: usize) -> Result<TensorInfo, LoadError> {
    let name = cur.string(&format!("tensor #{index} name"))?;
    let n_dims = cur.u32(&name)?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(cur.err(&name, format!("n_dims is {n_dims}, expected 1..={MAX_DIMS}")));
    }
    cur.charge_items::<u64>(n_dims as usize, &name)?;
    let mut dims = Vec::with_capacity(n_dims as usize);
    for i in 0..n_dims {
        let d = cur.u64(&name)?;
        if d == 0 || d > i64::MAX as u64 {
            return Err(cur.err(&name, format!("dims[{i}] is {d}, expected 1..=2^63-1")));
        }
        dims.push(d);
    }
    let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
    let Some(n_elements) = n_elements else {
        return Err(cur.err(&name, format!("element count of dims {dims:?} overflows")));
    };
    let type_id = cur.u32(&name)?;
    let Some(ty) = GgmlType::from_u32(type_id) else {
        return Err(LoadError::unsupported(cur.file(), format!("ggml type of tensor {name}"), format!("unknown id {type_id}")));
    };
    // Blocks never straddle rows, so the row length (not only the element count) must be
    // a whole number of blocks.
    let bs = ty.block_size() as u64;
    let row = dims.first().copied().unwrap_or(1);
    if row % bs != 0 {
        return Err(cur.err(&name, format!("dims[0] = {row} is not a multiple of {}'s block size {bs}", ty.name())));
    }
    let Some(n_bytes) = ty.bytes_for(n_elements) else {
        return Err(cur.err(&name, format!("byte size of {n_elements} {} elements overflows", ty.name())));
    };
    let offset = cur.u64(&name)?;
    Ok(TensorInfo { name, dims, ty, offset, n_bytes })
}

/// Checks every tensor's offset is aligned and its data lies inside the file, and that no
/// two tensors' data overlap. `order` is scratch space (its capacity already charged).
pub(crate) fn check_layout(file: &Path, tensors: &[TensorInfo], data_start: u64, file_len: u64, alignment: u64, order: &mut Vec<u32>) -> Result<(), LoadError> {
    for t in tensors {
        if alignment == 0 || t.offset % alignment != 0 {
            return Err(LoadError::invalid(file, &t.name, format!("data offset {} is not a multiple of the alignment {alignment}", t.offset)));
        }
        let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|end| end > file_len) {
            let msg = format!("data (offset {} + {} bytes, data section at {data_start}) lies outside the file of {file_len} bytes", t.offset, t.n_bytes);
            return Err(LoadError::invalid(file, &t.name, msg));
        }
    }
    order.clear();
    order.extend(0..tensors.len() as u32);
    order.sort_unstable_by_key(|&i| tensors.get(i as usize).map_or(0, |t| t.offset));
    for w in order.windows(2) {
        let (Some(a), Some(b)) = (tensors.get(w[0] as usize), tensors.get(w[1] as usize)) else { continue };
        // Both ends were bounded by the file length above: no overflow.
        if a.offset.saturating_add(a.n_bytes) > b.offset {
            let msg = format!("data at offset {} overlaps tensor {} (offset {}, {} bytes)", b.offset, a.name, a.offset, a.n_bytes);
            return Err(LoadError::invalid(file, &b.name, msg));
        }
    }
    Ok(())
}
