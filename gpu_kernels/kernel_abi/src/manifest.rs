//! Every kernel entry point the device crate must export, in one list.
//!
//! `cargo xtask build-kernels` fails when one of these is absent from the PTX (or when the
//! PTX exports one that is not listed), and the host resolves every one when it loads the
//! module, so a missing kernel is found at build or load time, never at the first launch.

/// Entry points, grouped by family; dtype suffixes follow [`crate::StorageType::suffix`].
pub const ENTRY_POINTS: &[&str] = &[
    "copy_bytes",
    "cast_f32_f16",
    "cast_f32_bf16",
    "cast_f16_f32",
    "cast_bf16_f32",
    "cast_f16_bf16",
    "cast_bf16_f16",
    "embedding_f32",
    "embedding_f16",
    "embedding_bf16",
    "rms_norm_f32",
    "rms_norm_f16",
    "rms_norm_bf16",
    "layer_norm_f32",
    "layer_norm_f16",
    "layer_norm_bf16",
    "rope_f32",
    "rope_f16",
    "rope_bf16",
    "silu_mul_f32",
    "silu_mul_f16",
    "silu_mul_bf16",
    "gelu_tanh_f32",
    "gelu_tanh_f16",
    "gelu_tanh_bf16",
    "gelu_erf_f32",
    "gelu_erf_f16",
    "gelu_erf_bf16",
    "softmax_f32",
    "softmax_f16",
    "softmax_bf16",
    "logits_top_k_f32",
    "logits_top_k_f16",
    "logits_top_k_bf16",
    "logits_top_k_merge",
    "kv_append_f16",
    "kv_append_bf16",
    "decode_attention_d64_f16",
    "decode_attention_d128_f16",
    "decode_attention_d64_bf16",
    "decode_attention_d128_bf16",
    "decode_attention_merge_f16",
    "decode_attention_merge_bf16",
    "context_attention_d64_f16",
    "context_attention_d128_f16",
    "context_attention_d64_bf16",
    "context_attention_d128_bf16",
    "fill_uniform_f32",
    "fill_uniform_f16",
    "fill_uniform_bf16",
    "gemm_skinny_bf16",
    "gemm_skinny_f16",
    "gemm_tile64_bf16",
    "gemm_tile64_f16",
    "gemm_tile128_bf16",
    "gemm_tile128_f16",
    "gate_up_silu_skinny_bf16",
    "gate_up_silu_skinny_f16",
    "gate_up_silu_tile64_bf16",
    "gate_up_silu_tile64_f16",
    "gate_up_silu_tile128_bf16",
    "gate_up_silu_tile128_f16",
];

/// True when `name` is listed in [`ENTRY_POINTS`].
pub fn contains(name: &str) -> bool {
    ENTRY_POINTS.iter().any(|e| *e == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_unique_identifiers() {
        for (i, a) in ENTRY_POINTS.iter().enumerate() {
            assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{a}");
            assert!(!ENTRY_POINTS[i + 1..].contains(a), "duplicate entry point {a}");
        }
    }
}
