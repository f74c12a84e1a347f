//! The kernels' bf16 encoder agrees with the `half` crate on every f32 bit pattern, and
//! decoding is exact. (Loader fuzz targets for GGUF and safetensors join this folder with
//! the models work.) Run: `cargo +nightly fuzz run bf16_codec` from `fuzz/`.
#![no_main]

use kernel_math::codec::{bf16_bits_to_f32, f32_to_bf16_bits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: [u8; 4]| {
    let x = f32::from_le_bytes(data);
    let ours = f32_to_bf16_bits(x);
    if x.is_nan() {
        assert!(bf16_bits_to_f32(ours).is_nan());
    } else {
        assert_eq!(ours, half::bf16::from_f32(x).to_bits(), "x = {x:e}");
    }
});
