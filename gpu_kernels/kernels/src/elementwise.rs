//! Elementwise kernels: the copy probe, dtype casts, GELU (tanh, erf) and SiLU·mul.
//!
//! Each thread walks the tensor in 8-element chunks with a grid-stride loop, `UNROLL`
//! chunks in flight per iteration (16-byte loads and stores); misaligned tensors and the
//! tail past the last whole chunk take a scalar path.

use crate::arch::{self, unroll4, Libdevice, V4};
use crate::dtype::{aligned16, load_w, store_w, Bf16, Storage, CHUNK, F16, F32};
use kernel_abi::{CastParams, CopyParams, GatedActParams, UnaryParams};
use kernel_math::act;

/// Chunks in flight per thread and iteration (the `unroll4!` count).
const UNROLL: usize = 4;

#[inline(always)]
fn global_thread() -> usize {
    (arch::block_idx() * arch::block_dim() + arch::thread_idx()) as usize
}

#[inline(always)]
fn grid_threads() -> usize {
    (arch::block_dim() * arch::grid_dim()) as usize
}

/// `out[i] = f(input[i])` for `i < n`, converting storage types, `W` elements per access
/// (16 bytes on the wider side: 4 when either side is f32, else 8).
#[inline(always)]
unsafe fn map<I: Storage, O: Storage, const W: usize>(input: *const u8, out: *mut u8, n: usize, f: impl Fn(f32) -> f32) {
    let stride = grid_threads();
    let tid = global_thread();
    let chunks = if aligned16(&[input as u64, out as u64]) { n / W } else { 0 };
    let mut c = tid;
    while c + (UNROLL - 1) * stride < chunks {
        let mut v = [[0f32; W]; UNROLL];
        unroll4!(|k| {
            // SAFETY: chunk in bounds (loop condition), tensors aligned (checked above).
            v[k] = unsafe { load_w::<I, W>(input, c + k * stride, false) };
        });
        unroll4!(|k| {
            // SAFETY: as above.
            unsafe { store_w::<O, W>(out, c + k * stride, v[k].map(&f)) };
        });
        c += UNROLL * stride;
    }
    while c < chunks {
        // SAFETY: as above.
        unsafe { store_w::<O, W>(out, c, load_w::<I, W>(input, c, false).map(&f)) };
        c += stride;
    }
    let mut i = chunks * W + tid;
    while i < n {
        // SAFETY: `i < n`.
        unsafe { O::store(out, i, f(I::load(input, i))) };
        i += stride;
    }
}

/// Elements per access for a map from `I` to `O`: 16 bytes on the wider side.
const fn width(i: usize, o: usize) -> usize {
    if i == 4 || o == 4 { 4 } else { CHUNK }
}

/// Copies `n_bytes` (a multiple of 16, both addresses 16-byte aligned).
#[inline(always)]
unsafe fn copy(p: CopyParams) {
    let (src, dst) = (p.src.as_ptr::<u8>(), p.dst.as_mut_ptr::<u8>());
    let n = (p.n_bytes / 16) as usize;
    let stride = grid_threads();
    let mut c = global_thread();
    while c + (UNROLL - 1) * stride < n {
        let mut v = [V4::default(); UNROLL];
        unroll4!(|k| {
            // SAFETY: in bounds by the loop condition; alignment is the host's contract.
            v[k] = unsafe { arch::ld_v4(src.add(16 * (c + k * stride)), true) };
        });
        unroll4!(|k| {
            // SAFETY: as above.
            unsafe { arch::st_v4(dst.add(16 * (c + k * stride)), v[k]) };
        });
        c += UNROLL * stride;
    }
    while c < n {
        // SAFETY: as above.
        unsafe { arch::st_v4(dst.add(16 * c), arch::ld_v4(src.add(16 * c), true)) };
        c += stride;
    }
}

/// `out = silu(gate) * up` over `rows × cols` with row strides, `W` elements per step.
#[inline(always)]
unsafe fn silu_mul_w<S: Storage, const W: usize>(p: &GatedActParams) {
    let (g, u, o) = (p.gate.as_ptr::<u8>(), p.up.as_ptr::<u8>(), p.out.as_mut_ptr::<u8>());
    let per_row = p.cols as usize / W;
    let total = p.rows as usize * per_row;
    let stride = grid_threads();
    let mut idx = global_thread();
    while idx < total {
        let (r, c) = (idx / per_row, idx % per_row);
        // SAFETY: row `r < rows`, chunk `c < cols / W`; strides in elements are multiples of
        // W on the vector path, so each row start is chunk-aligned.
        unsafe {
            let gv = load_w::<S, W>(g.add(r * p.gate_row_stride as usize * S::SIZE), c, false);
            let uv = load_w::<S, W>(u.add(r * p.up_row_stride as usize * S::SIZE), c, false);
            let mut ov = [0f32; W];
            for k in 0..W {
                ov[k] = act::silu::<Libdevice>(gv[k]) * uv[k];
            }
            store_w::<S, W>(o.add(r * p.out_row_stride as usize * S::SIZE), c, ov);
        }
        idx += stride;
    }
}

#[inline(always)]
unsafe fn silu_mul<S: Storage, const W: usize>(p: GatedActParams) {
    let strides = (p.cols | p.gate_row_stride | p.up_row_stride | p.out_row_stride) as usize;
    let vec = strides % W == 0 && aligned16(&[p.gate.0, p.up.0, p.out.0]);
    // SAFETY: the vector path only when every row start is 16-byte aligned (W × size = 16).
    unsafe {
        if vec { silu_mul_w::<S, W>(&p) } else { silu_mul_w::<S, 1>(&p) }
    }
}

/// A kernel entry point. The plain form waits for the grids it depends on (programmatic
/// dependent launch, `arch::grid_dependency_wait`) before its body and then lets the next
/// kernel start; `@early` leaves both to the body, which must wait before touching anything
/// but constant data (the skinny GEMM streams its first weights before waiting).
macro_rules! entry {
    ($name:ident, $params:ty, $body:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: $params) {
            $crate::arch::grid_dependency_wait();
            $crate::arch::launch_dependents();
            // SAFETY: the host launch wrapper validated the parameters (sizes, alignment,
            // non-null operands) against the buffers it passes.
            unsafe { ($body)(p) }
        }
    };
    (@early $name:ident, $params:ty, $body:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: $params) {
            // SAFETY: as above; the body waits for its dependencies itself.
            unsafe { ($body)(p) }
        }
    };
}
pub(crate) use entry;

entry!(copy_bytes, CopyParams, |p| copy(p));

macro_rules! cast_entry {
    ($name:ident, $i:ty, $o:ty) => {
        entry!($name, CastParams, |p: CastParams| map::<$i, $o, { width(<$i>::SIZE, <$o>::SIZE) }>(p.src.as_ptr(), p.dst.as_mut_ptr(), p.n as usize, |x| x));
    };
}
cast_entry!(cast_f32_f16, F32, F16);
cast_entry!(cast_f32_bf16, F32, Bf16);
cast_entry!(cast_f16_f32, F16, F32);
cast_entry!(cast_bf16_f32, Bf16, F32);
cast_entry!(cast_f16_bf16, F16, Bf16);
cast_entry!(cast_bf16_f16, Bf16, F16);

macro_rules! unary_entry {
    ($name:ident, $t:ty, $f:path) => {
        entry!($name, UnaryParams, |p: UnaryParams| map::<$t, $t, { width(<$t>::SIZE, <$t>::SIZE) }>(p.input.as_ptr(), p.out.as_mut_ptr(), p.n as usize, $f));
    };
}
unary_entry!(gelu_tanh_f32, F32, act::gelu_tanh::<Libdevice>);
unary_entry!(gelu_tanh_f16, F16, act::gelu_tanh::<Libdevice>);
unary_entry!(gelu_tanh_bf16, Bf16, act::gelu_tanh::<Libdevice>);
unary_entry!(gelu_erf_f32, F32, act::gelu_erf::<Libdevice>);
unary_entry!(gelu_erf_f16, F16, act::gelu_erf::<Libdevice>);
unary_entry!(gelu_erf_bf16, Bf16, act::gelu_erf::<Libdevice>);

entry!(silu_mul_f32, GatedActParams, |p| silu_mul::<F32, 4>(p));
entry!(silu_mul_f16, GatedActParams, |p| silu_mul::<F16, CHUNK>(p));
entry!(silu_mul_bf16, GatedActParams, |p| silu_mul::<Bf16, CHUNK>(p));
