//! Rotary-embedding index math: which two elements of a head form rotation pair `j`.

/// The element indices `(a, b)` of rotation pair `j` in a head whose first `rot_dim`
/// elements rotate. NeoX style (`style == 0`) pairs `j` with `j + rot_dim/2`; GPT-J style
/// (`style == 1`) pairs `2j` with `2j + 1`. The rotation is
/// `(x_a, x_b) ← (x_a cos θ − x_b sin θ, x_b cos θ + x_a sin θ)` with `θ = pos · inv_freq[j]`.
#[inline(always)]
pub const fn pair_indices(style: u32, rot_dim: u32, j: u32) -> (u32, u32) {
    if style == 0 { (j, j + rot_dim / 2) } else { (2 * j, 2 * j + 1) }
}

/// Rotates the pair `(xa, xb)` by the angle whose cosine and sine are given.
#[inline(always)]
pub fn rotate(xa: f32, xb: f32, cos: f32, sin: f32) -> (f32, f32) {
    (xa * cos - xb * sin, xb * cos + xa * sin)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec;

    proptest! {
        /// Every element below rot_dim belongs to exactly one pair, in both styles.
        #[test]
        fn pairs_partition_the_rotated_dims(half in 1u32..64, style in 0u32..2) {
            let rot = 2 * half;
            let mut seen = vec![0u8; rot as usize];
            for j in 0..half {
                let (a, b) = pair_indices(style, rot, j);
                seen[a as usize] += 1;
                seen[b as usize] += 1;
            }
            prop_assert!(seen.iter().all(|&c| c == 1));
        }

        #[test]
        fn rotation_preserves_norm(xa in -1e3f32..1e3, xb in -1e3f32..1e3, t in -100f32..100.0) {
            let (s, c) = t.sin_cos();
            let (ya, yb) = rotate(xa, xb, c, s);
            let n0 = (xa as f64).hypot(xb as f64);
            let n1 = (ya as f64).hypot(yb as f64);
            prop_assert!((n0 - n1).abs() <= 1e-5 * n0.max(1.0));
        }
    }
}
