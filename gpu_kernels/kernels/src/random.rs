//! `fill_uniform_<t>`: counter-based uniform fill for synthetic weights. Element `i` is
//! `kernel_math::random::fill_value(seed, i, ..)`, so any grid gives the same tensor and the
//! host reference reproduces it bit for bit. Grid-stride over 16-byte chunks when the
//! output is aligned, scalar for the tail.

use crate::arch;
use crate::dtype::{aligned16, store_w, Bf16, Storage, F16, F32};
use crate::elementwise::entry;
use kernel_abi::FillUniformParams;
use kernel_math::random::fill_value;

#[inline(always)]
unsafe fn fill<S: Storage, const W: usize>(p: FillUniformParams) {
    let out = p.out.as_mut_ptr::<u8>();
    let n = p.n as usize;
    let stride = (arch::block_dim() * arch::grid_dim()) as usize;
    let tid = (arch::block_idx() * arch::block_dim() + arch::thread_idx()) as usize;
    let value = |i: usize| fill_value(p.seed, i as u64, p.center, p.half_width);
    let chunks = if aligned16(&[p.out.0]) { n / W } else { 0 };
    let mut c = tid;
    while c < chunks {
        let v: [f32; W] = core::array::from_fn(|k| value(c * W + k));
        // SAFETY: chunk `c < n / W`, the output is 16-byte aligned (checked above).
        unsafe { store_w::<S, W>(out, c, v) };
        c += stride;
    }
    let mut i = chunks * W + tid;
    while i < n {
        // SAFETY: `i < n`, the length the host validated.
        unsafe { S::store(out, i, value(i)) };
        i += stride;
    }
}

entry!(fill_uniform_f32, FillUniformParams, |p| fill::<F32, 4>(p));
entry!(fill_uniform_f16, FillUniformParams, |p| fill::<F16, 8>(p));
entry!(fill_uniform_bf16, FillUniformParams, |p| fill::<Bf16, 8>(p));
