//! Launch wrapper for rotary position embedding.

use super::{check_len, entry_name, launch, to_u32};
use crate::device::{DeviceBuffer, DeviceError, Gpu};
use crate::dtype::DType;
use kernel_abi::{rope_style, DevPtr, RopeParams};

/// Which elements pair up for rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// GPT-NeoX / Hugging Face Llama: `i` with `i + rot_dim/2`.
    Neox,
    /// GPT-J / llama.cpp interleaved: `2i` with `2i + 1`.
    Gptj,
}

/// The layout of Q and K: token `t`, head `h`, element `e` at
/// `t * token_stride + h * head_dim + e`.
#[derive(Clone, Copy, Debug)]
pub struct RopeShape {
    pub num_tokens: usize,
    pub num_q_heads: usize,
    pub num_k_heads: usize,
    pub head_dim: usize,
    /// Leading elements of each head that rotate (even, ≤ head_dim): partial rotary.
    pub rot_dim: usize,
    pub q_token_stride: usize,
    pub k_token_stride: usize,
    pub style: RopeStyle,
}

/// Rotates Q (and K if given) in place by `positions[t] * inv_freq[j]` (see
/// [`crate::cpu::rope_inv_freq`] for the frequencies from θ).
pub fn rope<T: DType>(gpu: &Gpu, q: &mut DeviceBuffer<T>, k: Option<&mut DeviceBuffer<T>>, positions: &DeviceBuffer<u32>, inv_freq: &DeviceBuffer<f32>, s: &RopeShape) -> Result<(), DeviceError> {
    const K: &str = "rope";
    if s.rot_dim == 0 || s.rot_dim % 2 != 0 || s.rot_dim > s.head_dim || s.rot_dim > 2048 {
        return Err(DeviceError::invalid(K, format!("rot_dim {} must be even, > 0, <= head_dim {} and <= 2048", s.rot_dim, s.head_dim)));
    }
    check_len(K, "positions", positions.len(), s.num_tokens)?;
    check_len(K, "inv_freq", inv_freq.len(), s.rot_dim / 2)?;
    let span = |heads: usize, stride: usize, what: &str| -> Result<usize, DeviceError> {
        if heads * s.head_dim > stride {
            return Err(DeviceError::invalid(K, format!("{what} token stride {stride} is below heads × head_dim = {}", heads * s.head_dim)));
        }
        Ok(if s.num_tokens == 0 { 0 } else { (s.num_tokens - 1) * stride + heads * s.head_dim })
    };
    check_len(K, "q", q.len(), span(s.num_q_heads, s.q_token_stride, "q")?)?;
    let k_ptr = match &k {
        Some(kb) => {
            check_len(K, "k", kb.len(), span(s.num_k_heads, s.k_token_stride, "k")?)?;
            kb.dev_ptr(gpu)
        }
        None => DevPtr::NULL,
    };
    let p = RopeParams {
        q: q.dev_ptr(gpu),
        k: k_ptr,
        positions: positions.dev_ptr(gpu),
        inv_freq: inv_freq.dev_ptr(gpu),
        num_tokens: to_u32(K, "tokens", s.num_tokens)?,
        num_q_heads: to_u32(K, "q heads", s.num_q_heads)?,
        num_k_heads: to_u32(K, "k heads", if k.is_some() { s.num_k_heads } else { 0 })?,
        head_dim: to_u32(K, "head_dim", s.head_dim)?,
        rot_dim: to_u32(K, "rot_dim", s.rot_dim)?,
        q_token_stride: to_u32(K, "q stride", s.q_token_stride)?,
        k_token_stride: to_u32(K, "k stride", s.k_token_stride)?,
        style: match s.style {
            RopeStyle::Neox => rope_style::NEOX,
            RopeStyle::Gptj => rope_style::GPTJ,
        },
    };
    // A thread owns one or two rotation pairs of every head it visits; a block covers whole
    // heads (enough threads for the one-pair path), about 256 threads.
    let per_head = s.rot_dim / 2;
    let heads_per_block = (256 / per_head).clamp(1, (s.num_q_heads + s.num_k_heads).max(1));
    let threads = ((per_head * heads_per_block).div_ceil(32) * 32).clamp(32, 1024) as u32;
    launch(gpu, &entry_name(K, T::STORAGE), p.num_tokens, threads, p)
}
