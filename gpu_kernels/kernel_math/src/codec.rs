//! Bit-level codecs for 16-bit floats, identical on host and device.
//!
//! On the device, f32→bf16 uses the hardware `cvt.rn.bf16.f32`; [`f32_to_bf16_bits`] is the
//! bit-exact software definition of the same rounding, tested here against the `half` crate.

/// bf16 bits → f32 (exact: bf16 is the top half of an f32).
#[inline(always)]
pub const fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 → bf16 bits, round to nearest even; NaN stays NaN (quiet), infinities stay infinite.
#[inline(always)]
pub const fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if (bits & 0x7fff_ffff) > 0x7f80_0000 {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let lsb = (bits >> 16) & 1;
    let rounded = bits.wrapping_add(0x7fff + lsb);
    (rounded >> 16) as u16
}

/// Unpack two bf16 values packed in a `u32` (low half first) to f32.
#[inline(always)]
pub const fn unpack_bf16x2(w: u32) -> (f32, f32) {
    (f32::from_bits(w << 16), f32::from_bits(w & 0xffff_0000))
}

/// Pack two bf16 bit patterns into a `u32` (low half first).
#[inline(always)]
pub const fn pack_u16x2(lo: u16, hi: u16) -> u32 {
    (lo as u32) | ((hi as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bf16_encode_matches_half(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            let ours = f32_to_bf16_bits(x);
            let theirs = bf16::from_f32(x);
            if x.is_nan() {
                prop_assert!(bf16_bits_to_f32(ours).is_nan());
            } else {
                prop_assert_eq!(ours, theirs.to_bits(), "x = {:e}", x);
            }
        }

        #[test]
        fn bf16_round_trip_is_exact(bits in any::<u16>()) {
            let x = bf16_bits_to_f32(bits);
            prop_assume!(!x.is_nan());
            prop_assert_eq!(f32_to_bf16_bits(x), bits);
        }

        #[test]
        fn packed_pairs_unpack_in_order(lo in any::<u16>(), hi in any::<u16>()) {
            let (a, b) = unpack_bf16x2(pack_u16x2(lo, hi));
            prop_assert_eq!(a.to_bits(), bf16_bits_to_f32(lo).to_bits());
            prop_assert_eq!(b.to_bits(), bf16_bits_to_f32(hi).to_bits());
        }
    }

    #[test]
    fn known_vectors() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        assert_eq!(f32_to_bf16_bits(-2.0), 0xc000);
        // 1 + 2^-8 is a tie between 1.0 and 1 + 2^-7: rounds to even (1.0).
        assert_eq!(f32_to_bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7f80, "overflow rounds to infinity");
    }
}
