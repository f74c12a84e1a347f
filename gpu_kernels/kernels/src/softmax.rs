//! Row softmax, one thread block per row: pass 1 reduces the running max and sum of
//! exponentials (`OnlineSoftmax`), pass 2 writes `exp(x - max) / sum`. Both passes walk the
//! row in tiles of `CACHE × blockDim` chunks; a row of one tile stays in registers between
//! the passes, longer rows are read again.

use crate::arch::{self, unroll4, Libdevice};
use crate::dtype::{aligned16, load_w, store_w, Bf16, Storage, CHUNK, F16, F32};
use crate::elementwise::entry;
use crate::reduce::block_reduce;
use kernel_abi::SoftmaxParams;
use kernel_math::reduce::OnlineSoftmax;
use kernel_math::Transcendentals;

/// Chunks per thread kept in registers (the `unroll4!` count).
const CACHE: usize = 4;

/// Chunk `c` of the row, scaled.
#[inline(always)]
unsafe fn load_scaled<S: Storage, const W: usize>(input: *const u8, c: usize, scale: f32) -> [f32; W] {
    // SAFETY: `c` is inside the row (caller).
    let mut x = unsafe { load_w::<S, W>(input, c, false) };
    for v in x.iter_mut() {
        *v *= scale;
    }
    x
}

/// Writes `exp(x - max) / sum` for chunk `c`.
#[inline(always)]
unsafe fn write_probs<S: Storage, const W: usize>(out: *mut u8, c: usize, x: &[f32; W], st: OnlineSoftmax, inv_sum: f32) {
    let mut y = [0f32; W];
    for k in 0..W {
        y[k] = Libdevice::exp(x[k] - st.max) * inv_sum;
    }
    // SAFETY: `c` is inside the row (caller).
    unsafe { store_w::<S, W>(out, c, y) };
}

#[inline(always)]
fn push_all<const W: usize>(st: &mut OnlineSoftmax, x: &[f32; W]) {
    for v in x {
        st.push::<Libdevice>(*v);
    }
}

#[inline(always)]
unsafe fn softmax_row<S: Storage, const W: usize>(p: &SoftmaxParams, input: *const u8, out: *mut u8) {
    let n = p.cols as usize / W;
    let (tid, bd) = (arch::thread_idx() as usize, arch::block_dim() as usize);
    let tile = CACHE * bd;
    let mut cache = [[0f32; W]; CACHE];
    let mut st = OnlineSoftmax::default();
    // SAFETY (this function): every chunk index used is `< n`, inside the row.
    let mut base = 0;
    while base < n {
        unroll4!(|k| {
            let c = base + tid + k * bd;
            if c < n {
                cache[k] = unsafe { load_scaled::<S, W>(input, c, p.scale) };
            }
        });
        unroll4!(|k| {
            if base + tid + k * bd < n {
                push_all(&mut st, &cache[k]);
            }
        });
        base += tile;
    }
    let st = block_reduce(st);
    let inv_sum = 1.0 / st.sum;
    let mut base = 0;
    while base < n {
        // A row of one tile is still in registers; longer rows re-read it.
        if n > tile {
            unroll4!(|k| {
                let c = base + tid + k * bd;
                if c < n {
                    cache[k] = unsafe { load_scaled::<S, W>(input, c, p.scale) };
                }
            });
        }
        unroll4!(|k| {
            let c = base + tid + k * bd;
            if c < n {
                unsafe { write_probs::<S, W>(out, c, &cache[k], st, inv_sum) };
            }
        });
        base += tile;
    }
}

#[inline(always)]
unsafe fn softmax<S: Storage, const W: usize>(p: SoftmaxParams) {
    let r = arch::block_idx() as usize;
    if r >= p.rows as usize {
        return;
    }
    let input = p.input.as_ptr::<u8>().wrapping_add(r * p.in_row_stride as usize * S::SIZE);
    let out = p.out.as_mut_ptr::<u8>().wrapping_add(r * p.out_row_stride as usize * S::SIZE);
    let vec = (p.cols | p.in_row_stride | p.out_row_stride) as usize % W == 0 && aligned16(&[p.input.0, p.out.0]);
    // SAFETY: the vector path only when every row start is 16-byte aligned (W × size = 16).
    unsafe {
        if vec { softmax_row::<S, W>(&p, input, out) } else { softmax_row::<S, 1>(&p, input, out) }
    }
}

entry!(softmax_f32, SoftmaxParams, |p| softmax::<F32, 4>(p));
entry!(softmax_f16, SoftmaxParams, |p| softmax::<F16, CHUNK>(p));
entry!(softmax_bf16, SoftmaxParams, |p| softmax::<Bf16, CHUNK>(p));
