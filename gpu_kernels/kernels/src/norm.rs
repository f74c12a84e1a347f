//! RMSNorm and LayerNorm with an optional fused residual add, one thread block per row.
//!
//! Pass 1 forms `h = input (+ residual)` (rounded to the storage type, as an unfused add
//! would store it), writes it to `residual_out` when asked, and reduces the row statistics;
//! pass 2 normalises and scales. Rows of up to `CACHE × blockDim` chunks keep `h` in
//! registers between the passes; longer rows re-read it.

use crate::arch::{self, unroll4};
use crate::dtype::{aligned16, load_w, store_w, Bf16, Storage, CHUNK, F16, F32};
use crate::elementwise::entry;
use crate::reduce::{block_reduce, rsqrt, welford_of, Sum};
use kernel_abi::NormParams;
use kernel_math::reduce::Welford;

/// Chunks per thread kept in registers between the two passes (the `unroll4!` count).
const CACHE: usize = 4;

/// One row's operands, as byte pointers to the row start.
struct Row {
    input: *const u8,
    residual: *const u8,
    residual_out: *mut u8,
    weight: *const u8,
    bias: *const u8,
    out: *mut u8,
}

impl Row {
    /// `h` for chunk `c` (pass 1): input plus residual, stored to `residual_out` if any.
    #[inline(always)]
    unsafe fn load_h<S: Storage, const W: usize>(&self, c: usize) -> [f32; W] {
        // SAFETY: chunk `c` is inside the row (caller); optional operands checked for null.
        unsafe {
            let mut h = load_w::<S, W>(self.input, c, false);
            if !self.residual.is_null() {
                let r = load_w::<S, W>(self.residual, c, false);
                for k in 0..W {
                    h[k] = S::round(h[k] + r[k]);
                }
                if !self.residual_out.is_null() {
                    store_w::<S, W>(self.residual_out, c, h);
                }
            }
            h
        }
    }

    /// `h` for chunk `c` again (pass 2 of long rows): from `residual_out` once written
    /// (it may alias an input), else recomputed.
    #[inline(always)]
    unsafe fn reload_h<S: Storage, const W: usize>(&self, c: usize) -> [f32; W] {
        // SAFETY: as for `load_h`.
        unsafe {
            if !self.residual.is_null() && !self.residual_out.is_null() {
                return load_w::<S, W>(self.residual_out, c, false);
            }
            let mut h = load_w::<S, W>(self.input, c, false);
            if !self.residual.is_null() {
                let r = load_w::<S, W>(self.residual, c, false);
                for k in 0..W {
                    h[k] = S::round(h[k] + r[k]);
                }
            }
            h
        }
    }
}

/// Row statistics: what pass 2 needs to normalise.
#[derive(Clone, Copy)]
struct Stats {
    sum_sq: f32,
    welford: Welford,
}

impl Stats {
    #[inline(always)]
    fn add<const LAYER: bool, const W: usize>(&mut self, h: &[f32; W]) {
        if LAYER {
            self.welford = self.welford.merge(welford_of(h));
        } else {
            for v in h {
                self.sum_sq += v * v;
            }
        }
    }
}

/// Writes `out = (h - mean) * inv * weight (+ bias)` for chunk `c`.
#[inline(always)]
unsafe fn write_normed<S: Storage, const LAYER: bool, const W: usize>(row: &Row, c: usize, h: &[f32; W], (mean, inv): (f32, f32)) {
    // SAFETY: `c` is inside the row; weight (and bias when non-null) hold `cols` elements.
    unsafe {
        let w = load_w::<S, W>(row.weight, c, true);
        let mut y = [0f32; W];
        for k in 0..W {
            y[k] = (h[k] - mean) * inv * w[k];
        }
        if LAYER && !row.bias.is_null() {
            let b = load_w::<S, W>(row.bias, c, true);
            for k in 0..W {
                y[k] += b[k];
            }
        }
        store_w::<S, W>(row.out, c, y);
    }
}

#[inline(always)]
unsafe fn norm_row<S: Storage, const LAYER: bool, const W: usize>(p: &NormParams, row: &Row) {
    let n = p.cols as usize / W;
    let (tid, bd) = (arch::thread_idx() as usize, arch::block_dim() as usize);
    let cached = n <= CACHE * bd;
    let mut cache = [[0f32; W]; CACHE];
    let mut st = Stats { sum_sq: 0.0, welford: Welford::default() };
    if cached {
        unroll4!(|k| {
            let c = tid + k * bd;
            if c < n {
                // SAFETY: the chunk index is below n, inside the row.
                cache[k] = unsafe { row.load_h::<S, W>(c) };
                st.add::<LAYER, W>(&cache[k]);
            }
        });
    } else {
        let mut c = tid;
        while c < n {
            // SAFETY: the chunk index is below n, inside the row.
            let h = unsafe { row.load_h::<S, W>(c) };
            st.add::<LAYER, W>(&h);
            c += bd;
        }
    }
    let (mean, inv) = if LAYER {
        let w = block_reduce(st.welford);
        (w.mean, rsqrt(w.variance() + p.eps))
    } else {
        let s = block_reduce(Sum(st.sum_sq)).0;
        (0.0, rsqrt(s / p.cols as f32 + p.eps))
    };
    let stats = (mean, inv);
    if cached {
        unroll4!(|k| {
            let c = tid + k * bd;
            if c < n {
                // SAFETY: the chunk index is below n, inside the row.
                unsafe { write_normed::<S, LAYER, W>(row, c, &cache[k], stats) };
            }
        });
    } else {
        let mut c = tid;
        while c < n {
            // SAFETY: the chunk index is below n, inside the row.
            unsafe { write_normed::<S, LAYER, W>(row, c, &row.reload_h::<S, W>(c), stats) };
            c += bd;
        }
    }
}

#[inline(always)]
unsafe fn norm<S: Storage, const LAYER: bool, const W: usize>(p: NormParams) {
    let r = arch::block_idx() as usize;
    if r >= p.rows as usize {
        return;
    }
    let off = r * p.cols as usize * S::SIZE;
    let at = |d: kernel_abi::DevPtr| if d.is_null() { core::ptr::null_mut() } else { d.as_mut_ptr::<u8>().wrapping_add(off) };
    let row = Row {
        input: at(p.input),
        residual: at(p.residual),
        residual_out: at(p.residual_out),
        weight: p.weight.as_ptr(),
        bias: p.bias.as_ptr(),
        out: at(p.out),
    };
    let vec = p.cols as usize % W == 0 && aligned16(&[p.input.0, p.residual.0, p.residual_out.0, p.weight.0, p.bias.0, p.out.0]);
    // SAFETY: the vector path only when every row start is 16-byte aligned (W × size = 16).
    unsafe {
        if vec { norm_row::<S, LAYER, W>(&p, &row) } else { norm_row::<S, LAYER, 1>(&p, &row) }
    }
}

entry!(rms_norm_f32, NormParams, |p| norm::<F32, false, 4>(p));
entry!(rms_norm_f16, NormParams, |p| norm::<F16, false, CHUNK>(p));
entry!(rms_norm_bf16, NormParams, |p| norm::<Bf16, false, CHUNK>(p));
entry!(layer_norm_f32, NormParams, |p| norm::<F32, true, 4>(p));
entry!(layer_norm_f16, NormParams, |p| norm::<F16, true, CHUNK>(p));
entry!(layer_norm_bf16, NormParams, |p| norm::<Bf16, true, CHUNK>(p));
