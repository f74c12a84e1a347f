//! Warp- and block-wide reductions (sum, max, Welford, online softmax) through shuffles and
//! a small static shared-memory scratch. Every thread of the block must call a block
//! reduction, and every thread receives the result.

use crate::arch::{self, shfl_xor, sync_threads};
use kernel_math::reduce::{OnlineSoftmax, Welford};
use kernel_math::Transcendentals;

const MAX_WARPS: usize = 32;

#[unsafe(link_section = ".nvptx.shared")]
static mut SCRATCH: [[f32; MAX_WARPS]; 3] = [[0.0; MAX_WARPS]; 3];

/// A value that can be combined across lanes: packed into up to three f32 for shuffling.
pub trait Mergeable: Copy {
    /// How many of the three parts carry data (only those are shuffled).
    const PARTS: usize;
    const IDENTITY: Self;
    fn merge(self, other: Self) -> Self;
    fn to_parts(self) -> [f32; 3];
    fn from_parts(p: [f32; 3]) -> Self;
}

#[derive(Clone, Copy)]
pub struct Sum(pub f32);
impl Mergeable for Sum {
    const PARTS: usize = 1;
    const IDENTITY: Self = Sum(0.0);
    #[inline(always)]
    fn merge(self, o: Self) -> Self { Sum(self.0 + o.0) }
    #[inline(always)]
    fn to_parts(self) -> [f32; 3] { [self.0, 0.0, 0.0] }
    #[inline(always)]
    fn from_parts(p: [f32; 3]) -> Self { Sum(p[0]) }
}

impl Mergeable for Welford {
    const PARTS: usize = 3;
    const IDENTITY: Self = Welford { count: 0.0, mean: 0.0, m2: 0.0 };
    #[inline(always)]
    fn merge(self, o: Self) -> Self { Welford::merge(self, o) }
    #[inline(always)]
    fn to_parts(self) -> [f32; 3] { [self.count, self.mean, self.m2] }
    #[inline(always)]
    fn from_parts(p: [f32; 3]) -> Self { Welford { count: p[0], mean: p[1], m2: p[2] } }
}

impl Mergeable for OnlineSoftmax {
    const PARTS: usize = 2;
    const IDENTITY: Self = OnlineSoftmax { max: f32::NEG_INFINITY, sum: 0.0 };
    #[inline(always)]
    fn merge(self, o: Self) -> Self { OnlineSoftmax::merge::<arch::Libdevice>(self, o) }
    #[inline(always)]
    fn to_parts(self) -> [f32; 3] { [self.max, self.sum, 0.0] }
    #[inline(always)]
    fn from_parts(p: [f32; 3]) -> Self { OnlineSoftmax { max: p[0], sum: p[1] } }
}

/// Combines `v` across the 32 lanes of the warp; every lane gets the result.
#[inline(always)]
pub fn warp_reduce<M: Mergeable>(v: M) -> M {
    let mut v = v;
    let mut mask = 16;
    while mask > 0 {
        let p = v.to_parts();
        let mut q = [0f32; 3];
        for k in 0..M::PARTS {
            q[k] = shfl_xor(p[k], mask);
        }
        let o = M::from_parts(q);
        v = v.merge(o);
        mask >>= 1;
    }
    v
}

/// Combines `v` across the thread block (blockDim a multiple of 32, at most 1024).
#[inline(always)]
pub fn block_reduce<M: Mergeable>(v: M) -> M {
    let v = warp_reduce(v);
    let lane = (arch::thread_idx() % 32) as usize;
    let warp = (arch::thread_idx() / 32) as usize;
    let warps = arch::block_dim().div_ceil(32) as usize;
    let scratch = &raw mut SCRATCH;
    if lane == 0 {
        let p = v.to_parts();
        // SAFETY: `warp < 32`; each warp writes its own slot.
        unsafe {
            (*scratch)[0][warp] = p[0];
            (*scratch)[1][warp] = p[1];
            (*scratch)[2][warp] = p[2];
        }
    }
    sync_threads();
    let mine = if lane < warps {
        // SAFETY: slots below `warps` were written before the barrier.
        unsafe { M::from_parts([(*scratch)[0][lane], (*scratch)[1][lane], (*scratch)[2][lane]]) }
    } else {
        M::IDENTITY
    };
    let total = warp_reduce(mine);
    // The scratch is reused by the next reduction: wait until every warp has read it.
    sync_threads();
    total
}

/// Row statistics helpers shared by the normalisation kernels.
#[inline(always)]
pub fn welford_of<const W: usize>(x: &[f32; W]) -> Welford {
    let mut s = 0.0f32;
    for v in x {
        s += *v;
    }
    let mean = s / W as f32;
    let mut m2 = 0.0f32;
    for v in x {
        m2 += (*v - mean) * (*v - mean);
    }
    Welford { count: W as f32, mean, m2 }
}

/// `1/sqrt(x)` through libdevice.
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    arch::Libdevice::rsqrt(x)
}
