//! Embedding gather: one thread block per token copies its table row (16-byte chunks when
//! the row and both tensors are 16-byte aligned, elements otherwise).

use crate::arch;
use crate::dtype::{aligned16, Bf16, Storage, F16, F32};
use crate::elementwise::entry;
use kernel_abi::EmbeddingParams;

#[inline(always)]
unsafe fn embedding<S: Storage>(p: EmbeddingParams) {
    let t = arch::block_idx() as usize;
    if t >= p.num_tokens as usize {
        return;
    }
    // SAFETY: `t < num_tokens`; `ids` holds `num_tokens` u32.
    let id = unsafe { *p.ids.as_ptr::<u32>().add(t) };
    let row_bytes = p.hidden as usize * S::SIZE;
    let dst = p.out.as_mut_ptr::<u8>().wrapping_add(t * row_bytes);
    let valid = id < p.vocab;
    let src = p.table.as_ptr::<u8>().wrapping_add(id as usize * row_bytes);
    let mut i = arch::thread_idx() as usize;
    if row_bytes % 16 == 0 && aligned16(&[p.table.0, p.out.0]) {
        while i < row_bytes / 16 {
            // SAFETY: chunk `i` of an in-range row; rows are 16-byte aligned here.
            unsafe {
                let v = if valid { arch::ld_v4(src.add(16 * i), true) } else { arch::V4::default() };
                arch::st_v4(dst.add(16 * i), v);
            }
            i += arch::block_dim() as usize;
        }
    } else {
        while i < p.hidden as usize {
            // SAFETY: element `i` of an in-range row.
            unsafe { S::store(dst, i, if valid { S::load(src, i) } else { 0.0 }) };
            i += arch::block_dim() as usize;
        }
    }
}

entry!(embedding_f32, EmbeddingParams, |p| embedding::<F32>(p));
entry!(embedding_f16, EmbeddingParams, |p| embedding::<F16>(p));
entry!(embedding_bf16, EmbeddingParams, |p| embedding::<Bf16>(p));
