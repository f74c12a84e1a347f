//! Host-side weight preparation for the GPU: any CPU weight format decoded to f32, rounded to
//! bf16, and the fused layouts the GPU forward pass reads (Q/K/V stacked into one
//! `[q + 2·kv, hidden]` weight, gate and up into one `[2·inter, hidden]`). One layer at a
//! time, so the host never holds more than a layer's f32 copy.

use super::GpuError;
use crate::arch::layers::WeightData;
use crate::arch::Linear;
use half::bf16;

/// The `[out, inp]` weight of `l` as f32 (GGML blocks decoded with `quant`).
pub fn linear_f32(l: &Linear) -> Result<Vec<f32>, GpuError> {
    match &l.weight {
        WeightData::F32(w) => Ok(w.clone()),
        WeightData::Ggml { ty, bytes } => {
            let mut out = vec![0f32; l.out * l.inp];
            quant::dequantize(*ty, bytes, &mut out).map_err(|e| GpuError::Invalid(format!("decoding a {} weight [{}, {}]: {e}", ty.name(), l.out, l.inp)))?;
            Ok(out)
        }
    }
}

/// Rounds to bf16 (nearest even).
pub fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

/// Stacks the rows of several `[out_i, inp]` layers into one `[Σ out_i, inp]` bf16 weight
/// (row-major stacking is concatenation), decoding one layer at a time. All must share `inp`.
pub fn fuse_rows(parts: &[&Linear]) -> Result<Vec<bf16>, GpuError> {
    let inp = parts.first().map_or(0, |l| l.inp);
    if let Some(l) = parts.iter().find(|l| l.inp != inp) {
        return Err(GpuError::Invalid(format!("fused layers take {inp} and {} inputs", l.inp)));
    }
    let mut out = Vec::with_capacity(parts.iter().map(|l| l.out * l.inp).sum());
    for l in parts {
        out.extend(linear_f32(l)?.into_iter().map(bf16::from_f32));
    }
    Ok(out)
}

/// The fused bias of `parts` (a zero row for a part without one), or `None` when no part has
/// a bias.
pub fn fuse_bias(parts: &[&Linear]) -> Option<Vec<bf16>> {
    if parts.iter().all(|l| l.bias.is_none()) {
        return None;
    }
    let mut out = Vec::with_capacity(parts.iter().map(|l| l.out).sum());
    for l in parts {
        match &l.bias {
            Some(b) => out.extend(to_bf16(b)),
            None => out.extend(std::iter::repeat_n(bf16::ZERO, l.out)),
        }
    }
    Some(out)
}

/// The bias of one layer as bf16.
pub fn bias_bf16(l: &Linear) -> Option<Vec<bf16>> {
    l.bias.as_deref().map(to_bf16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusing_stacks_rows_and_biases() {
        let a = Linear::new(2, 3, vec![1., 2., 3., 4., 5., 6.], Some(vec![0.5, -0.5]));
        let b = Linear::new(1, 3, vec![7., 8., 9.], None);
        let w: Vec<f32> = fuse_rows(&[&a, &b]).unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(w, vec![1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        let bias: Vec<f32> = fuse_bias(&[&a, &b]).unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(bias, vec![0.5, -0.5, 0.0]);
        assert!(fuse_bias(&[&b, &b]).is_none());
        let c = Linear::new(1, 2, vec![1., 2.], None);
        assert!(fuse_rows(&[&a, &c]).is_err());
    }

    #[test]
    fn ggml_weights_decode_to_their_values() {
        let w: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 16.0).collect();
        let mut bytes = vec![0u8; quant::GgmlType::Q8_0.bytes_for(64).unwrap() as usize];
        quant::quantize_q8_0(&w, &mut bytes).unwrap();
        let l = Linear::ggml(2, 32, quant::GgmlType::Q8_0, bytes, None).unwrap();
        let got = linear_f32(&l).unwrap();
        assert!(got.iter().zip(&w).all(|(a, b)| (a - b).abs() < 0.02), "{got:?}");
    }
}
