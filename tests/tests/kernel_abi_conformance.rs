//! The host's parameter structs and the built PTX agree: every manifest entry point exists
//! and takes exactly one by-value parameter of the struct's size. Runs on any machine where
//! `cargo xtask build-kernels` has run (CI runs it first); says so when there is no PTX.

use integration_tests::{built_ptx, entry_param_sizes};
use kernel_abi::*;

/// The parameter struct size each entry-point family takes.
fn expected_size(entry: &str) -> usize {
    let family = entry.rsplit_once('_').map_or(entry, |(f, _)| f);
    match family {
        "copy" => size_of::<CopyParams>(),
        f if f.starts_with("cast") => size_of::<CastParams>(),
        "embedding" => size_of::<EmbeddingParams>(),
        "rms_norm" | "layer_norm" => size_of::<NormParams>(),
        "rope" => size_of::<RopeParams>(),
        "silu_mul" => size_of::<GatedActParams>(),
        "gelu_tanh" | "gelu_erf" => size_of::<UnaryParams>(),
        "softmax" => size_of::<SoftmaxParams>(),
        "kv_append" => size_of::<KvAppendParams>(),
        "decode_attention_d64" | "decode_attention_d128" => size_of::<DecodeAttentionParams>(),
        "decode_attention_merge" => size_of::<AttentionMergeParams>(),
        "context_attention_d64" | "context_attention_d128" => size_of::<ContextAttentionParams>(),
        "fill_uniform" => size_of::<FillUniformParams>(),
        "logits_top_k" => size_of::<TopKParams>(),
        f if f.starts_with("gemm_") || f.starts_with("gate_up_silu_") => size_of::<GemmParams>(),
        other => panic!("entry point {entry}: family {other} has no expected parameter struct in this test; add it"),
    }
}

#[test]
fn parameter_structs_have_no_implicit_padding() {
    // Explicit `_pad` fields make the sizes sums of their fields.
    assert_eq!(size_of::<CastParams>(), 24);
    assert_eq!(size_of::<CopyParams>(), 24);
    assert_eq!(size_of::<EmbeddingParams>(), 3 * 8 + 4 * 4);
    assert_eq!(size_of::<NormParams>(), 6 * 8 + 4 * 4);
    assert_eq!(size_of::<RopeParams>(), 4 * 8 + 8 * 4);
    assert_eq!(size_of::<GatedActParams>(), 3 * 8 + 6 * 4);
    assert_eq!(size_of::<UnaryParams>(), 24);
    assert_eq!(size_of::<SoftmaxParams>(), 2 * 8 + 6 * 4);
    assert_eq!(size_of::<KvAppendParams>(), 7 * 8 + 10 * 4);
    assert_eq!(size_of::<DecodeAttentionParams>(), 8 * 8 + 10 * 4);
    assert_eq!(size_of::<AttentionMergeParams>(), 3 * 8 + 6 * 4);
    assert_eq!(size_of::<ContextAttentionParams>(), 8 * 8 + 12 * 4);
    assert_eq!(size_of::<GemmParams>(), 5 * 8 + 4 * 4);
    assert_eq!(size_of::<FillUniformParams>(), 3 * 8 + 2 * 4);
    assert_eq!(size_of::<TopKParams>(), 8 * 8 + 4 * 4);
}

#[test]
fn built_ptx_matches_the_host_abi() {
    let built = built_ptx();
    if built.is_empty() {
        println!("skipped: no PTX under target/ptx (run `cargo xtask build-kernels`)");
        return;
    }
    for (arch, ptx) in built {
        let target = kernel_abi::manifest::PtxArch::parse(&arch).unwrap_or_else(|| panic!("target/ptx/{arch}: not a PTX target name"));
        let entries = entry_param_sizes(&ptx);
        for name in target.entry_points() {
            let (_, sizes) = entries.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{arch}: entry point {name} missing from the PTX"));
            assert_eq!(sizes, &vec![expected_size(name)], "{arch}: {name} parameters {sizes:?}");
        }
        assert_eq!(entries.len(), target.entry_points().count(), "{arch}: PTX exports entry points not in its manifest");
    }
}

#[test]
fn ptx_parameter_parser_reads_declarations() {
    let ptx = ".visible .entry k(\n\t.param .align 8 .b8 k_param_0[64]\n)\n{\n}\n.visible .entry j(\n\t.param .u64 j_param_0,\n\t.param .u32 j_param_1\n)\n";
    assert_eq!(entry_param_sizes(ptx), vec![("k".to_owned(), vec![64]), ("j".to_owned(), vec![8, 4])]);
}
