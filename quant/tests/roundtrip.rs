//! Quantise-then-dequantise round trips for the legacy formats, with per-element error
//! bounds derived from each format.
//!
//! A quantiser computes its scale `d` in f32 and picks the nearest level, so
//! `|x - level * d| <= |d| / 2` except where a level is clamped; the stored scale is
//! `d16 = f16(d)` (and `m16 = f16(min)`), which moves level `q` by `|q| * |d - d16|`.
//! The bounds below are those terms plus a few f32 ulps of slack; they are tight enough that
//! one level off (an error of a whole `d`) fails.

use proptest::prelude::*;
use quant::{DequantError, GgmlType, dequantize};

type Quantizer = fn(&[f32], &mut [u8]) -> Result<(), DequantError>;

fn f16_at(b: &[u8], i: usize) -> f64 {
    f64::from(half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32())
}

/// Symmetric formats: `d = max / div` (`max` the signed element of largest magnitude; Q8_0
/// uses `max|x| / 127`), levels `-lmax..` with the top level clamped above `top`.
struct Symmetric {
    ty: GgmlType,
    quantize: Quantizer,
    /// The f32 scale as the quantiser computes it.
    scale: fn(&[f32]) -> f32,
    /// Largest |level| a quant can take.
    lmax: f64,
    /// `x / d` above which the quant is clamped to the top level (`top - 0.5`).
    top: Option<f64>,
}

fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, &v| if m.abs() < v.abs() { v } else { m })
}

fn check_symmetric(f: &Symmetric, x: &[f32]) -> Result<(), TestCaseError> {
    let ts = f.ty.type_size();
    let mut q = vec![0u8; x.len() / 32 * ts];
    (f.quantize)(x, &mut q).unwrap();
    let mut y = vec![f32::NAN; x.len()];
    dequantize(f.ty, &q, &mut y).unwrap();
    for (b, ((xb, yb), qb)) in x.chunks(32).zip(y.chunks(32)).zip(q.chunks(ts)).enumerate() {
        let d = f64::from((f.scale)(xb));
        let d16 = f16_at(qb, 0);
        for (i, (&xv, &yv)) in xb.iter().zip(yb).enumerate() {
            let excess = match f.top {
                Some(top) if d != 0.0 => (f64::from(xv) / d - (top - 0.5)).max(0.0),
                _ => 0.0,
            };
            let tol =
                d.abs() * (0.5 + excess) + f.lmax * (d - d16).abs() + 1e-5 * (d.abs() + d16.abs());
            let err = (f64::from(xv) - f64::from(yv)).abs();
            prop_assert!(
                err <= tol,
                "{}: block {b} element {i}: x {xv:e} -> {yv:e}, error {err:e} > bound {tol:e} (d {d:e}, d16 {d16:e})",
                f.ty.name()
            );
        }
    }
    Ok(())
}

/// Asymmetric formats: `d = (max - min) / levels`, `m = min`, quants `0..=levels`.
fn check_asymmetric(
    ty: GgmlType,
    quantize: Quantizer,
    levels: f32,
    x: &[f32],
) -> Result<(), TestCaseError> {
    let ts = ty.type_size();
    let mut q = vec![0u8; x.len() / 32 * ts];
    quantize(x, &mut q).unwrap();
    let mut y = vec![f32::NAN; x.len()];
    dequantize(ty, &q, &mut y).unwrap();
    for (b, ((xb, yb), qb)) in x.chunks(32).zip(y.chunks(32)).zip(q.chunks(ts)).enumerate() {
        let min = xb.iter().copied().fold(f32::MAX, f32::min);
        let max = xb.iter().copied().fold(-f32::MAX, f32::max);
        let d = f64::from((max - min) / levels);
        let (d16, m16) = (f16_at(qb, 0), f16_at(qb, 2));
        let min = f64::from(min);
        for (i, (&xv, &yv)) in xb.iter().zip(yb).enumerate() {
            let tol = 0.5 * d
                + f64::from(levels) * (d - d16).abs()
                + (min - m16).abs()
                + 1e-5 * (d + d16)
                + 2f64.powi(-22) * (f64::from(xv).abs() + min.abs());
            let err = (f64::from(xv) - f64::from(yv)).abs();
            prop_assert!(
                err <= tol,
                "{}: block {b} element {i}: x {xv:e} -> {yv:e}, error {err:e} > bound {tol:e} (d {d:e}, d16 {d16:e}, min {min:e}, m16 {m16:e})",
                ty.name()
            );
        }
    }
    Ok(())
}

/// 1..=8 blocks of 32 values; each block `(u + offset) * 2^e` with `u` in [-1, 1], a
/// per-block offset in [-1, 1] and exponent in [-20, 14], so every scale and minimum fits
/// f16 (|x| <= 2^15) while covering f16-subnormal scales. Some blocks are all zero or
/// constant.
fn blocks() -> impl Strategy<Value = Vec<f32>> {
    let block = (
        prop::collection::vec(-1.0f32..=1.0, 32),
        -1.0f32..=1.0,
        -20i32..=14,
        0u8..10,
    )
        .prop_map(|(u, offset, e, kind)| {
            let s = 2f32.powi(e);
            match kind {
                0 => vec![0.0; 32],
                1 => vec![offset * s; 32],
                2 => u.iter().map(|v| v * s).collect(),
                _ => u.iter().map(|v| (v + offset) * s).collect(),
            }
        });
    prop::collection::vec(block, 1..=8).prop_map(|b| b.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn q8_0_round_trip(x in blocks()) {
        check_symmetric(&Symmetric {
            ty: GgmlType::Q8_0,
            quantize: quant::quantize_q8_0,
            scale: |x| x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0,
            lmax: 127.0,
            top: None,
        }, &x)?;
    }

    #[test]
    fn q4_0_round_trip(x in blocks()) {
        check_symmetric(&Symmetric {
            ty: GgmlType::Q4_0,
            quantize: quant::quantize_q4_0,
            scale: |x| signed_absmax(x) / -8.0,
            lmax: 8.0,
            top: Some(8.0),
        }, &x)?;
    }

    #[test]
    fn q5_0_round_trip(x in blocks()) {
        check_symmetric(&Symmetric {
            ty: GgmlType::Q5_0,
            quantize: quant::quantize_q5_0,
            scale: |x| signed_absmax(x) / -16.0,
            lmax: 16.0,
            top: Some(16.0),
        }, &x)?;
    }

    #[test]
    fn q4_1_round_trip(x in blocks()) {
        check_asymmetric(GgmlType::Q4_1, quant::quantize_q4_1, 15.0, &x)?;
    }

    #[test]
    fn q5_1_round_trip(x in blocks()) {
        check_asymmetric(GgmlType::Q5_1, quant::quantize_q5_1, 31.0, &x)?;
    }
}

/// A block whose largest magnitude is negative: Q4_0 maps it to level 0 (`-8 * d`) exactly,
/// and its opposite to the clamped top level 15 (`7 * d`).
#[test]
fn q4_0_extremes_and_clamp() {
    let mut x = [0.0f32; 32];
    x[3] = -8.0;
    x[20] = 8.0;
    let mut q = [0u8; 18];
    quant::quantize_q4_0(&x, &mut q).unwrap();
    let mut y = [0.0f32; 32];
    dequantize(GgmlType::Q4_0, &q, &mut y).unwrap();
    assert_eq!(y[3], -8.0);
    assert_eq!(y[20], 7.0);
    assert!(
        y.iter()
            .enumerate()
            .all(|(i, &v)| i == 3 || i == 20 || v == 0.0)
    );
}
