//! Rotary position embedding, in place on Q and K, one thread block per token.
//!
//! A thread owns `V` consecutive rotation pairs of every head it visits: it computes their
//! angles' sines and cosines once, then walks the heads (`blockDim / (rot_dim / 2V)` heads
//! per step). With `V = 2` the pairs are read with 4-byte (NeoX) or 8-byte (GPT-J)
//! accesses; `V = 1` is the scalar path for odd or misaligned layouts. The inverse
//! frequencies come from the host (θ and any RoPE scaling).

use crate::arch::{self, Libdevice};
use crate::dtype::{aligned, load_w, store_w, Bf16, Storage, F16, F32};
use crate::elementwise::entry;
use kernel_abi::{rope_style, RopeParams};
use kernel_math::rope::rotate;
use kernel_math::Transcendentals;

/// Pairs per thread on the vector path.
const V: usize = 2;

#[inline(always)]
unsafe fn rope_token<S: Storage, const V: usize, const TWO_V: usize>(p: &RopeParams, t: usize) {
    let half = (p.rot_dim / 2) as usize;
    let groups = half / V; // threads per head
    let (tid, bd) = (arch::thread_idx() as usize, arch::block_dim() as usize);
    let k_heads = if p.k.is_null() { 0 } else { p.num_k_heads as usize };
    let heads = p.num_q_heads as usize + k_heads;
    let neox = p.style == rope_style::NEOX;
    let heads_per_step = bd / groups;
    if heads_per_step == 0 || tid >= heads_per_step * groups {
        return;
    }
    let g = tid % groups;
    // SAFETY: `t < num_tokens` (caller); positions holds one u32 per token.
    let pos = unsafe { *p.positions.as_ptr::<u32>().add(t) } as f32;
    let mut cs = [(0f32, 0f32); V];
    for (v, c) in cs.iter_mut().enumerate() {
        // SAFETY: `g * V + v < half`; inv_freq holds `half` f32.
        let theta = pos * unsafe { *p.inv_freq.as_ptr::<f32>().add(g * V + v) };
        let (s, c2) = Libdevice::sin_cos(theta);
        *c = (c2, s);
    }
    let mut h = tid / groups;
    while h < heads {
        let (base, stride, head) = if h < p.num_q_heads as usize {
            (p.q.as_mut_ptr::<u8>(), p.q_token_stride as usize, h)
        } else {
            (p.k.as_mut_ptr::<u8>(), p.k_token_stride as usize, h - p.num_q_heads as usize)
        };
        let hp = base.wrapping_add((t * stride + head * p.head_dim as usize) * S::SIZE);
        // SAFETY: every element touched is below rot_dim <= head_dim, inside this head;
        // the vector path runs only on aligned layouts (checked by the caller).
        unsafe {
            if neox {
                let a = load_w::<S, V>(hp, g, false);
                let b = load_w::<S, V>(hp.add(half * S::SIZE), g, false);
                let (mut ya, mut yb) = ([0f32; V], [0f32; V]);
                for v in 0..V {
                    (ya[v], yb[v]) = rotate(a[v], b[v], cs[v].0, cs[v].1);
                }
                store_w::<S, V>(hp, g, ya);
                store_w::<S, V>(hp.add(half * S::SIZE), g, yb);
            } else if V == 1 {
                // Scalar path: the pair may not be 2-element aligned.
                let (ya, yb) = rotate(S::load(hp, 2 * g), S::load(hp, 2 * g + 1), cs[0].0, cs[0].1);
                S::store(hp, 2 * g, ya);
                S::store(hp, 2 * g + 1, yb);
            } else {
                let x = load_w::<S, TWO_V>(hp, g, false);
                let mut y = [0f32; TWO_V];
                for v in 0..V {
                    (y[2 * v], y[2 * v + 1]) = rotate(x[2 * v], x[2 * v + 1], cs[v].0, cs[v].1);
                }
                store_w::<S, TWO_V>(hp, g, y);
            }
        }
        h += heads_per_step;
    }
}

#[inline(always)]
unsafe fn rope<S: Storage>(p: RopeParams) {
    let t = arch::block_idx() as usize;
    if t >= p.num_tokens as usize {
        return;
    }
    let half = (p.rot_dim / 2) as usize;
    // The vector path needs whole groups of V pairs and every accessed group aligned to its
    // width (2V elements for GPT-J, V elements for NeoX).
    let width = (2 * V * S::SIZE) as u64;
    let layout = (p.q_token_stride | p.k_token_stride | p.head_dim) as usize;
    let vec = half % V == 0 && layout % (2 * V) == 0 && aligned(&[p.q.0, p.k.0], width);
    // SAFETY: the layout was validated by the host wrapper; alignment checked above.
    unsafe {
        if vec { rope_token::<S, V, { 2 * V }>(&p, t) } else { rope_token::<S, 1, 2>(&p, t) }
    }
}

entry!(rope_f32, RopeParams, |p| rope::<F32>(p));
entry!(rope_f16, RopeParams, |p| rope::<F16>(p));
entry!(rope_bf16, RopeParams, |p| rope::<Bf16>(p));
