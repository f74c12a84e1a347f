//! Row softmax, one thread block per row.
//!
//! The kernel works in base 2: inputs are scaled by `scale × log2(e)`, so every
//! exponential is one `ex2.approx` (the softmax value is unchanged). Pass 1 keeps a running
//! (max, sum of 2^(x − max)) per thread, updated once per chunk, and reduces it over the
//! block; pass 2 writes `2^(x − max) / sum`. Rows of up to `CACHE × blockDim` 16-byte
//! chunks stay in registers (as raw words) between the passes; longer rows are read again.

use crate::arch::{self, exp2_approx, unroll4};
use crate::dtype::{aligned16, store_w, Bf16, Storage, CHUNK, F16, F32};
use crate::elementwise::entry;
use crate::reduce::{block_reduce, Mergeable};
use kernel_abi::SoftmaxParams;

/// 16-byte chunks per thread kept in registers (two `unroll4!`s).
const CACHE: usize = 8;
const LOG2_E: f32 = core::f32::consts::LOG2_E;

/// Running maximum and sum of `2^(x - max)` (also the top-k kernel's log-sum-exp).
#[derive(Clone, Copy)]
pub(crate) struct Stats2 {
    pub max: f32,
    pub sum: f32,
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
    pub fn push<const W: usize>(&mut self, x: &[f32; W]) {
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

/// Raw 16-byte chunk `c` of the row (its words), the form kept in registers: half the
/// registers of decoded f32 for 16-bit types.
#[inline(always)]
unsafe fn load_raw(input: *const u8, c: usize) -> [u32; 4] {
    // SAFETY: `c` is inside the row and the row is 16-byte aligned (caller).
    unsafe { arch::ld_v4(input.add(16 * c), false).0 }
}

/// Decodes a raw chunk and scales it into the base-2 domain.
#[inline(always)]
fn decode_scaled<S: Storage, const W: usize>(raw4: &[u32; 4], scale2: f32) -> [f32; W] {
    let raw = [raw4[0], raw4[1], raw4[2], raw4[3], 0, 0, 0, 0];
    let mut x = [0f32; W];
    for (k, v) in x.iter_mut().enumerate() {
        *v = S::decode(&raw, k) * scale2;
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

/// The vector path: `W` elements make 16 bytes; rows of up to `CACHE × blockDim` chunks
/// stay in registers as raw words.
#[inline(always)]
unsafe fn softmax_row_vec<S: Storage, const W: usize>(p: &SoftmaxParams, input: *const u8, out: *mut u8) {
    let n = p.cols as usize / W;
    let (tid, bd) = (arch::thread_idx() as usize, arch::block_dim() as usize);
    let scale2 = p.scale * LOG2_E;
    let mut st = Stats2::IDENTITY;
    if n <= CACHE * bd {
        let mut cache = [[0u32; 4]; CACHE];
        unroll4!(|k| {
            let c = tid + k * bd;
            if c < n {
                // SAFETY: the chunk index is below n, inside the row.
                cache[k] = unsafe { load_raw(input, c) };
            }
        });
        unroll4!(|k| {
            let c = tid + (k + 4) * bd;
            if c < n {
                // SAFETY: the chunk index is below n, inside the row.
                cache[k + 4] = unsafe { load_raw(input, c) };
            }
        });
        unroll4!(|k| {
            if tid + k * bd < n {
                st.push(&decode_scaled::<S, W>(&cache[k], scale2));
            }
        });
        unroll4!(|k| {
            if tid + (k + 4) * bd < n {
                st.push(&decode_scaled::<S, W>(&cache[k + 4], scale2));
            }
        });
        let st = block_reduce(st);
        let inv_sum = 1.0 / st.sum;
        unroll4!(|k| {
            let c = tid + k * bd;
            if c < n {
                // SAFETY: the chunk index is below n, inside the row.
                unsafe { write_probs::<S, W>(out, c, &decode_scaled::<S, W>(&cache[k], scale2), st, inv_sum) };
            }
        });
        unroll4!(|k| {
            let c = tid + (k + 4) * bd;
            if c < n {
                // SAFETY: the chunk index is below n, inside the row.
                unsafe { write_probs::<S, W>(out, c, &decode_scaled::<S, W>(&cache[k + 4], scale2), st, inv_sum) };
            }
        });
    } else {
        let mut c = tid;
        while c < n {
            // SAFETY: the chunk index is below n, inside the row.
            st.push(&decode_scaled::<S, W>(&unsafe { load_raw(input, c) }, scale2));
            c += bd;
        }
        let st = block_reduce(st);
        let inv_sum = 1.0 / st.sum;
        let mut c = tid;
        while c < n {
            // SAFETY: the chunk index is below n, inside the row.
            unsafe { write_probs::<S, W>(out, c, &decode_scaled::<S, W>(&load_raw(input, c), scale2), st, inv_sum) };
            c += bd;
        }
    }
}

/// The scalar path (odd lengths or misaligned rows): two passes over global memory.
#[inline(always)]
unsafe fn softmax_row_scalar<S: Storage>(p: &SoftmaxParams, input: *const u8, out: *mut u8) {
    let n = p.cols as usize;
    let (tid, bd) = (arch::thread_idx() as usize, arch::block_dim() as usize);
    let scale2 = p.scale * LOG2_E;
    let mut st = Stats2::IDENTITY;
    let mut i = tid;
    while i < n {
        // SAFETY: `i < cols`, inside the row.
        st.push(&[unsafe { S::load(input, i) } * scale2]);
        i += bd;
    }
    let st = block_reduce(st);
    let inv_sum = 1.0 / st.sum;
    let mut i = tid;
    while i < n {
        // SAFETY: as above.
        unsafe { S::store(out, i, exp2_approx(S::load(input, i) * scale2 - st.max) * inv_sum) };
        i += bd;
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
        if vec { softmax_row_vec::<S, W>(&p, input, out) } else { softmax_row_scalar::<S>(&p, input, out) }
    }
}

entry!(softmax_f32, SoftmaxParams, |p| softmax::<F32, 4>(p));
entry!(softmax_f16, SoftmaxParams, |p| softmax::<F16, CHUNK>(p));
entry!(softmax_bf16, SoftmaxParams, |p| softmax::<Bf16, CHUNK>(p));
