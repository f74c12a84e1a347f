//! Row softmax, one thread block per row.
//!
//! The kernel works in base 2: inputs are scaled by `scale × log2(e)`, so every
//! exponential is one `ex2.approx` (the softmax value is unchanged). Pass 1 keeps a running
//! (max, sum of 2^(x − max)) per thread, updated once per chunk, and reduces it over the
//! block; pass 2 writes `2^(x − max) / sum`. Rows of up to `CACHE × blockDim` chunks stay
//! in registers between the passes; longer rows are read again.

use crate::arch::{self, exp2_approx, unroll4};
use crate::dtype::{aligned16, load_w, store_w, Bf16, Storage, CHUNK, F16, F32};
use crate::elementwise::entry;
use crate::reduce::{block_reduce, Mergeable};
use kernel_abi::SoftmaxParams;

/// Chunks per thread kept in registers (the `unroll4!` count).
const CACHE: usize = 4;
const LOG2_E: f32 = core::f32::consts::LOG2_E;

/// Running maximum and sum of `2^(x - max)`.
#[derive(Clone, Copy)]
struct Stats2 {
    max: f32,
    sum: f32,
}

impl Mergeable for Stats2 {
    const PARTS: usize = 2;
    const IDENTITY: Self = Stats2 { max: f32::NEG_INFINITY, sum: 0.0 };
    #[inline(always)]
    fn merge(self, o: Self) -> Self {
        if o.max == f32::NEG_INFINITY {
            return self;
        }
        if self.max == f32::NEG_INFINITY {
            return o;
        }
        let max = self.max.max(o.max);
        Stats2 { max, sum: self.sum * exp2_approx(self.max - max) + o.sum * exp2_approx(o.max - max) }
    }
    #[inline(always)]
    fn to_parts(self) -> [f32; 3] {
        [self.max, self.sum, 0.0]
    }
    #[inline(always)]
    fn from_parts(p: [f32; 3]) -> Self {
        Stats2 { max: p[0], sum: p[1] }
    }
}

impl Stats2 {
    /// Adds a chunk: one rescale at most, one `ex2` per element. An all `-inf` (masked)
    /// chunk adds nothing.
    #[inline(always)]
    fn push<const W: usize>(&mut self, x: &[f32; W]) {
        let mut m = x[0];
        for v in x {
            m = m.max(*v);
        }
        if m == f32::NEG_INFINITY {
            return;
        }
        if m > self.max {
            self.sum *= exp2_approx(self.max - m);
            self.max = m;
        }
        for v in x {
            self.sum += exp2_approx(*v - self.max);
        }
    }
}

/// Chunk `c` of the row, scaled into the base-2 domain.
#[inline(always)]
unsafe fn load_scaled<S: Storage, const W: usize>(input: *const u8, c: usize, scale2: f32) -> [f32; W] {
    // SAFETY: `c` is inside the row (caller).
    let mut x = unsafe { load_w::<S, W>(input, c, false) };
    for v in x.iter_mut() {
        *v *= scale2;
    }
    x
}

/// Writes `2^(x - max) / sum` for chunk `c`.
#[inline(always)]
unsafe fn write_probs<S: Storage, const W: usize>(out: *mut u8, c: usize, x: &[f32; W], st: Stats2, inv_sum: f32) {
    let mut y = [0f32; W];
    for k in 0..W {
        y[k] = exp2_approx(x[k] - st.max) * inv_sum;
    }
    // SAFETY: `c` is inside the row (caller).
    unsafe { store_w::<S, W>(out, c, y) };
}

#[inline(always)]
unsafe fn softmax_row<S: Storage, const W: usize>(p: &SoftmaxParams, input: *const u8, out: *mut u8) {
    let n = p.cols as usize / W;
    let (tid, bd) = (arch::thread_idx() as usize, arch::block_dim() as usize);
    let scale2 = p.scale * LOG2_E;
    let cached = n <= CACHE * bd;
    let mut cache = [[0f32; W]; CACHE];
    let mut st = Stats2::IDENTITY;
    // SAFETY (this function): every chunk index used is `< n`, inside the row.
    if cached {
        unroll4!(|k| {
            let c = tid + k * bd;
            if c < n {
                cache[k] = unsafe { load_scaled::<S, W>(input, c, scale2) };
                st.push(&cache[k]);
            }
        });
    } else {
        let mut c = tid;
        while c < n {
            st.push(&unsafe { load_scaled::<S, W>(input, c, scale2) });
            c += bd;
        }
    }
    let st = block_reduce(st);
    let inv_sum = 1.0 / st.sum;
    if cached {
        unroll4!(|k| {
            let c = tid + k * bd;
            if c < n {
                unsafe { write_probs::<S, W>(out, c, &cache[k], st, inv_sum) };
            }
        });
    } else {
        let mut c = tid;
        while c < n {
            unsafe { write_probs::<S, W>(out, c, &load_scaled::<S, W>(input, c, scale2), st, inv_sum) };
            c += bd;
        }
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
