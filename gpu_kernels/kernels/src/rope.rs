//! Rotary position embedding, in place on Q and K: one thread block per token, its threads
//! over (head, rotation pair). NeoX (half-split) and GPT-J (interleaved) pairings, partial
//! rotary dimension, per-pair inverse frequencies supplied by the host (θ and scaling).

use crate::arch::{self, Libdevice};
use crate::dtype::{Bf16, Storage, F16, F32};
use crate::elementwise::entry;
use kernel_abi::RopeParams;
use kernel_math::rope::{pair_indices, rotate};
use kernel_math::Transcendentals;

#[inline(always)]
unsafe fn rope<S: Storage>(p: RopeParams) {
    let t = arch::block_idx() as usize;
    if t >= p.num_tokens as usize {
        return;
    }
    let half = (p.rot_dim / 2) as usize;
    let k_heads = if p.k.is_null() { 0 } else { p.num_k_heads as usize };
    let total = (p.num_q_heads as usize + k_heads) * half;
    // SAFETY: `t < num_tokens`; positions holds one u32 per token.
    let pos = unsafe { *p.positions.as_ptr::<u32>().add(t) } as f32;
    let mut idx = arch::thread_idx() as usize;
    while idx < total {
        let (h, j) = (idx / half, idx % half);
        let (base, stride, head) = if h < p.num_q_heads as usize {
            (p.q.as_mut_ptr::<u8>(), p.q_token_stride as usize, h)
        } else {
            (p.k.as_mut_ptr::<u8>(), p.k_token_stride as usize, h - p.num_q_heads as usize)
        };
        let head_ptr = base.wrapping_add((t * stride + head * p.head_dim as usize) * S::SIZE);
        let (a, b) = pair_indices(p.style, p.rot_dim, j as u32);
        // SAFETY: `j < rot_dim / 2`, inv_freq holds rot_dim / 2 f32; `a, b < rot_dim <=
        // head_dim`, inside this head (host-validated layout).
        unsafe {
            let theta = pos * *p.inv_freq.as_ptr::<f32>().add(j);
            let (sin, cos) = Libdevice::sin_cos(theta);
            let (ya, yb) = rotate(S::load(head_ptr, a as usize), S::load(head_ptr, b as usize), cos, sin);
            S::store(head_ptr, a as usize, ya);
            S::store(head_ptr, b as usize, yb);
        }
        idx += arch::block_dim() as usize;
    }
}

entry!(rope_f32, RopeParams, |p| rope::<F32>(p));
entry!(rope_f16, RopeParams, |p| rope::<F16>(p));
entry!(rope_bf16, RopeParams, |p| rope::<Bf16>(p));
