//! The CPU reference backend: operators in f32 math (f64 where a reduction needs it), the
//! reference every GPU kernel is checked against and the backend used when there is no GPU.
//! Storage rounding is explicit: an operator that stores an intermediate in the tensor
//! dtype takes the rounding function `round` for it.

mod alloc;
mod attention;
mod gemm;
mod logits;
mod matmul;
mod ops;
mod paged;
pub mod qdot;
mod random;
#[cfg(target_arch = "x86_64")]
mod tile512;

pub use alloc::keep_large_allocations_in_heap;
pub use attention::{attend_row, attend_rows};
pub use gemm::{gate_up_silu_f64, gemm_f64};
pub use logits::{max_logit, sum_exp};
pub use matmul::{dot, matmul_dot, matmul_nt, matmul_nt_rows, WeightRows};
pub use ops::*;
pub use paged::{ContextSeq, PagedBatch, PagedKvStore};
pub use random::fill_uniform;
