//! Counter-based random numbers: element `i` of a seeded stream is a pure function of
//! `(seed, i)` (a SplitMix64 finaliser over the two), so a device kernel and the host
//! reference produce bit-identical values whatever the launch geometry.

/// The SplitMix64 finaliser of `seed` mixed with counter `i`.
#[inline(always)]
pub fn hash64(seed: u64, i: u64) -> u64 {
    let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform value in `[-1, 1)` with 24 random bits (exact in f32): `(k - 2^23) / 2^23`.
#[inline(always)]
pub fn uniform_pm1(seed: u64, i: u64) -> f32 {
    let k = (hash64(seed, i) >> 40) as i32;
    (k - (1 << 23)) as f32 * (1.0 / (1u32 << 23) as f32)
}

/// Element `i` of the fill: `center + half_width × uniform_pm1(seed, i)` (multiply, then add,
/// never fused, so host and device agree bit for bit).
#[inline(always)]
pub fn fill_value(seed: u64, i: u64, center: f32, half_width: f32) -> f32 {
    let scaled = half_width * uniform_pm1(seed, i);
    center + scaled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_in_range_and_look_uniform() {
        let n = 100_000u64;
        let (mut sum, mut sum2) = (0f64, 0f64);
        for i in 0..n {
            let u = uniform_pm1(42, i);
            assert!((-1.0..1.0).contains(&u), "{u}");
            sum += u as f64;
            sum2 += (u as f64) * (u as f64);
        }
        let mean = sum / n as f64;
        let var = sum2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn seeds_and_counters_give_different_streams() {
        let a: [f32; 8] = core::array::from_fn(|i| uniform_pm1(1, i as u64));
        let b: [f32; 8] = core::array::from_fn(|i| uniform_pm1(2, i as u64));
        assert_ne!(a, b);
        assert!(a.windows(2).all(|w| w[0] != w[1]));
        assert_eq!(fill_value(3, 9, 1.0, 0.0), 1.0);
        assert!((fill_value(3, 9, 0.0, 0.5) - 0.5 * uniform_pm1(3, 9)).abs() == 0.0);
    }
}
