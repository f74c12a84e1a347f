//! Reference of the counter-based uniform fill (`kernels::fill_uniform`).

/// `n` values `center + half_width × u(seed, i)`, exactly as the kernel computes them before
/// rounding to its storage type.
pub fn fill_uniform(n: usize, seed: u64, center: f32, half_width: f32) -> Vec<f32> {
    (0..n as u64).map(|i| kernel_math::random::fill_value(seed, i, center, half_width)).collect()
}
