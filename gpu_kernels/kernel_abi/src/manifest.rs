//! Every kernel entry point the device crate must export, per PTX target.
//!
//! [`ENTRY_POINTS`] is what every target exports; a target may add its own
//! ([`SM90A_ENTRY_POINTS`]: the `wgmma` kernels, which only the architecture-specific sm_90a
//! PTX can carry). [`PtxArch::entry_points`] is the list of one target. `cargo xtask
//! build-kernels` fails when one of these is absent from the PTX (or when the PTX exports one
//! that is not listed for its target), and the host resolves every one when it loads the
//! module, so a missing kernel is found at build or load time, never at the first launch.

use core::fmt;

/// Entry points of every target, grouped by family; dtype suffixes follow
/// [`crate::StorageType::suffix`].
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

/// Entry points only the sm_90a PTX exports (warpgroup MMA, `wgmma.mma_async`: ptxas
/// accepts it for the architecture-specific target alone).
pub const SM90A_ENTRY_POINTS: &[&str] = &["gemm_wgmma_bf16", "gemm_wgmma_f16", "gate_up_silu_wgmma_bf16", "gate_up_silu_wgmma_f16"];

/// True when `name` is listed in [`ENTRY_POINTS`] (exported by every target).
pub fn contains(name: &str) -> bool {
    ENTRY_POINTS.iter().any(|e| *e == name)
}

/// A PTX target: compute capability × 10 (`cc`) and whether it is the architecture-specific
/// variant (`sm_90a`: Hopper-only instructions such as `wgmma`), whose PTX loads on that
/// exact capability only; plain `sm_XY` PTX loads on any capability ≥ XY. Ordered so that
/// the newest target compares greatest (`sm_90a` > `sm_90` > `sm_89`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PtxArch {
    pub cc: u32,
    pub specific: bool,
}

impl PtxArch {
    pub const SM80: PtxArch = PtxArch { cc: 80, specific: false };
    pub const SM90: PtxArch = PtxArch { cc: 90, specific: false };
    pub const SM90A: PtxArch = PtxArch { cc: 90, specific: true };

    /// Parses `sm_90a`, `90a`, `sm_80`, `80` (the `--arch` names and `INFLIGHT_PTX_ARCH`).
    pub fn parse(s: &str) -> Option<PtxArch> {
        let s = s.trim();
        let s = s.strip_prefix("sm_").unwrap_or(s);
        let (num, specific) = match s.strip_suffix('a') {
            Some(n) => (n, true),
            None => (s, false),
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(PtxArch { cc: num.parse().ok()?, specific })
    }

    /// Whether PTX for this target loads on a device of compute capability `cc` (× 10).
    pub fn runs_on(self, cc: u32) -> bool {
        if self.specific { cc == self.cc } else { cc >= self.cc }
    }

    /// Whether this target's PTX carries the `wgmma` kernels ([`SM90A_ENTRY_POINTS`]).
    pub fn has_wgmma(self) -> bool {
        self == PtxArch::SM90A
    }

    /// The entry points this target's PTX exports.
    pub fn entry_points(self) -> impl Iterator<Item = &'static str> {
        let extra: &'static [&'static str] = if self.has_wgmma() { SM90A_ENTRY_POINTS } else { &[] };
        ENTRY_POINTS.iter().chain(extra).copied()
    }

    /// True when this target's PTX exports `name`.
    pub fn exports(self, name: &str) -> bool {
        self.entry_points().any(|e| e == name)
    }
}

/// The number part of the target name: `90a`, `80` (so `sm_{}` prints the full name).
impl fmt::Display for PtxArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.cc, if self.specific { "a" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_unique_identifiers() {
        let all: [&str; ENTRY_POINTS.len() + SM90A_ENTRY_POINTS.len()] = core::array::from_fn(|i| if i < ENTRY_POINTS.len() { ENTRY_POINTS[i] } else { SM90A_ENTRY_POINTS[i - ENTRY_POINTS.len()] });
        for (i, a) in all.iter().enumerate() {
            assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{a}");
            assert!(!all[i + 1..].contains(a), "duplicate entry point {a}");
        }
    }

    #[test]
    fn targets_parse_order_and_load_where_they_run() {
        assert_eq!(PtxArch::parse("sm_90a"), Some(PtxArch::SM90A));
        assert_eq!(PtxArch::parse("90a"), Some(PtxArch::SM90A));
        assert_eq!(PtxArch::parse("sm_80"), Some(PtxArch::SM80));
        assert_eq!(PtxArch::parse(" 90 "), Some(PtxArch::SM90));
        for bad in ["", "sm_", "a", "sm_9x", "90aa", "sm_-1"] {
            assert_eq!(PtxArch::parse(bad), None, "{bad}");
        }
        assert!(PtxArch::SM90A > PtxArch::SM90 && PtxArch::SM90 > PtxArch { cc: 89, specific: false });
        assert!(PtxArch::SM90A.runs_on(90) && !PtxArch::SM90A.runs_on(100) && !PtxArch::SM90A.runs_on(89));
        assert!(PtxArch::SM90.runs_on(90) && PtxArch::SM90.runs_on(100) && !PtxArch::SM90.runs_on(89));
        extern crate std;
        use std::string::ToString;
        assert_eq!(PtxArch::SM90A.to_string(), "90a");
        assert_eq!(PtxArch::SM80.to_string(), "80");
    }

    #[test]
    fn only_sm90a_exports_the_wgmma_kernels() {
        assert_eq!(PtxArch::SM90A.entry_points().count(), ENTRY_POINTS.len() + SM90A_ENTRY_POINTS.len());
        assert_eq!(PtxArch::SM90.entry_points().count(), ENTRY_POINTS.len());
        assert!(PtxArch::SM90A.exports("gemm_wgmma_bf16") && !PtxArch::SM90.exports("gemm_wgmma_bf16"));
        assert!(PtxArch::SM80.exports("gemm_tile128_f16"));
    }
}
