//! The CPU reference backend: operators in f32 math (f64 where a reduction needs it), the
//! reference every GPU kernel is checked against and the backend used when there is no GPU.
//! Storage rounding is explicit: an operator that stores an intermediate in the tensor
//! dtype takes the rounding function `round` for it.

mod alloc;
mod matmul;
mod ops;
mod paged;
pub mod qdot;

pub use alloc::keep_large_allocations_in_heap;
pub use matmul::{dot, matmul_dot, matmul_nt, matmul_nt_rows, WeightRows};
pub use ops::*;
pub use paged::{PagedBatch, PagedKvStore};
