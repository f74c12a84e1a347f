//! Golden vectors from gguf-py (llama.cpp's Python package), made by
//! `quant/testdata/make_golden.py`: our dequantisers and quantisers must reproduce its
//! results bit for bit. gguf-py evaluates the same f32 operations in the same order as
//! ggml's scalar reference (no fused multiply-add), so no tolerance is needed.

use std::path::PathBuf;

use quant::{GgmlType, dequantize};

fn testdata(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run make_golden.py)", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

const DEQUANT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    for ty in DEQUANT_TYPES {
        let stem = ty.name().to_lowercase();
        let blocks = testdata(&format!("{stem}.blocks"));
        let want = f32s(&testdata(&format!("{stem}.f32")));
        assert!(!want.is_empty(), "{stem}: empty golden file");
        let mut got = vec![f32::NAN; want.len()];
        dequantize(ty, &blocks, &mut got).unwrap_or_else(|e| panic!("{e}"));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{stem}: element {i} (block {}): got {g:e}, gguf-py {w:e}",
                i / ty.block_size()
            );
        }
    }
}

type Quantizer = fn(&[f32], &mut [u8]) -> Result<(), quant::DequantError>;

#[test]
fn quantize_matches_gguf_py_bit_for_bit() {
    let cases: [(GgmlType, Quantizer); 5] = [
        (GgmlType::Q8_0, quant::quantize_q8_0),
        (GgmlType::Q4_0, quant::quantize_q4_0),
        (GgmlType::Q4_1, quant::quantize_q4_1),
        (GgmlType::Q5_0, quant::quantize_q5_0),
        (GgmlType::Q5_1, quant::quantize_q5_1),
    ];
    for (ty, quantize) in cases {
        let stem = ty.name().to_lowercase();
        let src = f32s(&testdata(&format!("{stem}.quant.src.f32")));
        let want = testdata(&format!("{stem}.quant.blocks"));
        let mut got = vec![0xAAu8; want.len()];
        quantize(&src, &mut got).unwrap_or_else(|e| panic!("{e}"));
        let ts = ty.type_size();
        for (b, (g, w)) in got.chunks(ts).zip(want.chunks(ts)).enumerate() {
            assert_eq!(g, w, "{stem}: block {b} differs from gguf-py");
        }
    }
}
