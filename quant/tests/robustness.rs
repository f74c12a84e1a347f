//! `dequantize` on hostile input: any bytes of the right length (NaN, infinite and
//! subnormal scales included) never panic, finite scales always give finite values, and
//! wrong lengths or types are refused with the right error and an untouched output.

use proptest::prelude::*;
use quant::{DequantError, GgmlType, dequantize, supports_dequantize};

/// Every type with a dequantiser and the byte offsets of its f16 scale fields.
const TYPES: [(GgmlType, &[usize]); 14] = [
    (GgmlType::F32, &[]),
    (GgmlType::F16, &[]),
    (GgmlType::Bf16, &[]),
    (GgmlType::Q4_0, &[0]),
    (GgmlType::Q4_1, &[0, 2]),
    (GgmlType::Q5_0, &[0]),
    (GgmlType::Q5_1, &[0, 2]),
    (GgmlType::Q8_0, &[0]),
    (GgmlType::Q2K, &[80, 82]),
    (GgmlType::Q3K, &[108]),
    (GgmlType::Q4K, &[0, 2]),
    (GgmlType::Q5K, &[0, 2]),
    (GgmlType::Q6K, &[208]),
    (GgmlType::Q8K, &[]),
];

fn ty_index() -> impl Strategy<Value = usize> {
    0..TYPES.len()
}

/// Raw f16 bit patterns biased towards the special ones.
fn f16_bits() -> impl Strategy<Value = u16> {
    prop_oneof![
        any::<u16>(),
        Just(0x7C00u16), // +inf
        Just(0xFC00),    // -inf
        Just(0x7E00),    // quiet NaN
        Just(0x7C01),    // signalling NaN
        Just(0xFFFF),    // NaN, all payload bits
        Just(0x0001),    // smallest subnormal
        Just(0x8000),    // -0
        Just(0x7BFF),    // largest finite
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(
        t in ty_index(),
        seed_bytes in prop::collection::vec(any::<u8>(), 0..=4 * 292),
        scales in prop::collection::vec(f16_bits(), 8),
    ) {
        let (ty, fields) = TYPES[t];
        let (bs, ts) = (ty.block_size(), ty.type_size());
        let n_blocks = seed_bytes.len() / ts;
        let mut data = seed_bytes[..n_blocks * ts].to_vec();
        // Plant special scale patterns in some blocks; others keep their random bytes.
        for (b, block) in data.chunks_mut(ts).enumerate() {
            for (k, &off) in fields.iter().enumerate() {
                if (b + k) % 2 == 0 {
                    block[off..off + 2].copy_from_slice(&scales[(b * 2 + k) % 8].to_le_bytes());
                }
            }
        }
        let mut out = vec![0.0f32; n_blocks * bs];
        dequantize(ty, &data, &mut out).unwrap();
        if fields.is_empty() {
            return Ok(());
        }
        // With every scale of a block finite, all its values are finite (magnitudes stay
        // below 65504 * 64 * 32, far inside f32).
        for (b, (block, y)) in data.chunks(ts).zip(out.chunks(bs)).enumerate() {
            let finite = fields.iter().all(|&off| {
                half::f16::from_bits(u16::from_le_bytes([block[off], block[off + 1]])).is_finite()
            });
            if finite {
                prop_assert!(y.iter().all(|v| v.is_finite()), "{}: block {b} has finite scales but non-finite output", ty.name());
            }
        }
    }

    #[test]
    fn wrong_lengths_are_refused(t in ty_index(), elements in 0usize..1200, bytes in 0usize..1300) {
        let (ty, _) = TYPES[t];
        let (bs, ts) = (ty.block_size(), ty.type_size());
        let data = vec![0x5Au8; bytes];
        let mut out = vec![-7.5f32; elements];
        let res = dequantize(ty, &data, &mut out);
        if elements % bs != 0 {
            prop_assert_eq!(res, Err(DequantError::PartialBlock { ty, elements, block_size: bs }));
        } else if bytes != elements / bs * ts {
            prop_assert_eq!(
                res,
                Err(DequantError::ByteLength { ty, elements, expected: elements / bs * ts, actual: bytes })
            );
        } else {
            prop_assert_eq!(res, Ok(()));
            return Ok(());
        }
        prop_assert!(out.iter().all(|&v| v == -7.5), "output written despite the error");
    }
}

#[test]
fn unsupported_types_are_named() {
    for id in 0..64 {
        let Some(ty) = GgmlType::from_u32(id) else {
            continue;
        };
        let listed = TYPES.iter().any(|&(t, _)| t == ty);
        assert_eq!(supports_dequantize(ty), listed, "{}", ty.name());
        if !listed {
            let mut out = vec![0.0f32; ty.block_size()];
            let data = vec![0u8; ty.type_size()];
            let err = dequantize(ty, &data, &mut out).unwrap_err();
            assert_eq!(err, DequantError::Unsupported(ty));
            assert!(err.to_string().contains(ty.name()), "{err}");
        }
    }
}

#[test]
fn nan_and_inf_scales_propagate() {
    // Q4_0 with d = NaN: every element NaN. d = +inf: level 8 gives 0 * inf = NaN, others inf.
    let mut block = [0x08u8; 18]; // low nibble 8 (level 0), high nibble 0 (level -8)
    block[..2].copy_from_slice(&0x7E00u16.to_le_bytes());
    let mut y = [0.0f32; 32];
    dequantize(GgmlType::Q4_0, &block, &mut y).unwrap();
    assert!(y.iter().all(|v| v.is_nan()));
    block[..2].copy_from_slice(&0x7C00u16.to_le_bytes());
    dequantize(GgmlType::Q4_0, &block, &mut y).unwrap();
    assert!(y[..16].iter().all(|v| v.is_nan()));
    assert!(y[16..].iter().all(|&v| v == f32::NEG_INFINITY));
}

#[test]
fn q8_k_by_hand() {
    // Q8_K has no gguf-py dequantiser: d (f32) * qs (i8); the block sums are ignored.
    let mut block = [0u8; 292];
    block[..4].copy_from_slice(&0.25f32.to_le_bytes());
    for (i, q) in block[4..260].iter_mut().enumerate() {
        *q = (i as i8).wrapping_sub(100) as u8;
    }
    block[260..].fill(0xFF);
    let mut y = [0.0f32; 256];
    dequantize(GgmlType::Q8K, &block, &mut y).unwrap();
    for (i, &v) in y.iter().enumerate() {
        assert_eq!(
            v,
            f32::from((i as i8).wrapping_sub(100)) * 0.25,
            "element {i}"
        );
    }
}
