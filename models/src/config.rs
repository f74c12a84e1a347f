//! Model configuration: one struct for every supported architecture, filled from GGUF
//! metadata or a Hugging Face `config.json`, validated once.

use std::fmt;

/// Supported architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// LLaMA family (Llama 2/3/3.1, Mistral, SmolLM2): RMSNorm, SwiGLU, GQA, RoPE.
    Llama,
    /// Qwen2 / Qwen2.5: LLaMA layout plus Q/K/V biases.
    Qwen2,
    /// GPT-2: learned positions, LayerNorm with bias, GELU MLP, fused QKV with bias, MHA.
    Gpt2,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gpt2 => "gpt2",
        })
    }
}

/// The normalisation of every block and of the final norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// RMSNorm with a weight.
    Rms,
    /// LayerNorm with a weight and a bias.
    Layer,
}

/// The MLP's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
    /// `proj(gelu(fc(x)))`, GELU's tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `proj(gelu(fc(x)))`, exact (erf) GELU (HF `gelu`).
    GeluErf,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    /// Rotary embedding of Q and K (`rope_*` fields).
    Rope,
    /// A learned table of `max_position` rows added to the token embedding (the `rope_*`
    /// fields are unused).
    Learned,
}

/// How rotation pairs are formed (see `host_runtime::kernels::RopeStyle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Hugging Face layout: element `i` pairs with `i + rot/2`.
    Neox,
    /// Interleaved pairs `(2i, 2i+1)`: llama.cpp's llama-arch GGUF files store Q and K rows
    /// permuted for this, so reading them as stored needs this layout.
    Interleaved,
}

/// Llama 3.1 RoPE frequency scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position: f32,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rope_layout: RopeLayout,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Epsilon of every norm (RMSNorm's `rms_norm_eps` or LayerNorm's `layer_norm_epsilon`).
    pub norm_eps: f32,
    /// The longest sequence: positions are `0..max_position` (the learned table's rows).
    pub max_position: usize,
    pub tied_embeddings: bool,
    pub qkv_bias: bool,
    pub norm: Norm,
    pub activation: Activation,
    pub positions: Positions,
}

impl ModelConfig {
    /// Checks the shape is consistent; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [("vocab_size", self.vocab_size), ("hidden_size", self.hidden), ("intermediate_size", self.intermediate), ("num_hidden_layers", self.layers), ("num_attention_heads", self.heads), ("num_key_value_heads", self.kv_heads), ("head_dim", self.head_dim), ("max_position_embeddings", self.max_position)];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.heads % self.kv_heads != 0 {
            return Err(format!("num_attention_heads {} is not a multiple of num_key_value_heads {}", self.heads, self.kv_heads));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(format!("norm epsilon {} must be finite and >= 0", self.norm_eps));
        }
        if self.positions == Positions::Rope {
            self.validate_rope()?;
        }
        self.validate_layout()
    }

    fn validate_rope(&self) -> Result<(), String> {
        if self.head_dim % 2 != 0 {
            return Err(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(format!("rope_theta {} must be finite and > 1", self.rope_theta));
        }
        Ok(())
    }

    /// The norm, activation and positions are the ones the architecture's definition
    /// implements.
    fn validate_layout(&self) -> Result<(), String> {
        let ok = match self.arch {
            Arch::Llama | Arch::Qwen2 => self.norm == Norm::Rms && self.activation == Activation::SwiGlu && self.positions == Positions::Rope,
            Arch::Gpt2 => self.norm == Norm::Layer && matches!(self.activation, Activation::GeluTanh | Activation::GeluErf) && self.positions == Positions::Learned,
        };
        if !ok {
            return Err(format!("{} does not use {:?} norm, {:?} activation and {:?} positions", self.arch, self.norm, self.activation, self.positions));
        }
        if self.arch == Arch::Gpt2 && (self.kv_heads != self.heads || self.heads * self.head_dim != self.hidden) {
            return Err(format!("gpt2 needs n_embd {} = n_head {} x head_dim {} and no grouped K/V ({} kv heads)", self.hidden, self.heads, self.head_dim, self.kv_heads));
        }
        Ok(())
    }

    /// RoPE inverse frequencies, with Llama 3.1 scaling when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let base = host_runtime::cpu::rope_inv_freq(self.rope_theta, self.head_dim);
        match self.rope_scaling {
            None => base,
            Some(s) => base.into_iter().map(|f| llama3_scale(f, &s)).collect(),
        }
    }
}

/// Llama 3.1's frequency-dependent scaling of one inverse frequency (as in HF's
/// `_compute_llama3_parameters`).
fn llama3_scale(inv_freq: f32, s: &Llama3RopeScaling) -> f32 {
    let low_wavelen = s.original_max_position / s.low_freq_factor;
    let high_wavelen = s.original_max_position / s.high_freq_factor;
    let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
    if wavelen < high_wavelen {
        inv_freq
    } else if wavelen > low_wavelen {
        inv_freq / s.factor
    } else {
        let smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq
    }
}

/// Names [`ModelConfig::named`] knows.
pub const NAMED_CONFIGS: &[&str] = &["llama-3.1-8b"];

impl ModelConfig {
    /// A known architecture by name, without any files (synthetic-weight performance work):
    /// `llama-3.1-8b` (Meta Llama 3.1 8B: 32 layers, hidden 4096, 32 Q / 8 KV heads of 128,
    /// intermediate 14336, vocab 128256, θ 500000 with Llama 3.1 scaling, RMS eps 1e-5).
    /// `None` for an unknown name (see [`NAMED_CONFIGS`]).
    pub fn named(name: &str) -> Option<ModelConfig> {
        match name.to_ascii_lowercase().as_str() {
            "llama-3.1-8b" | "llama3.1-8b" => Some(ModelConfig {
                arch: Arch::Llama,
                vocab_size: 128_256,
                hidden: 4096,
                intermediate: 14_336,
                layers: 32,
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
                rope_theta: 500_000.0,
                rope_layout: RopeLayout::Neox,
                rope_scaling: Some(Llama3RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192.0 }),
                norm_eps: 1e-5,
                max_position: 131_072,
                tied_embeddings: false,
                qkv_bias: false,
                norm: Norm::Rms,
                activation: Activation::SwiGlu,
                positions: Positions::Rope,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod named_tests {
    use super::*;

    #[test]
    fn llama_3_1_8b_is_valid_and_has_8b_parameters() {
        let c = ModelConfig::named("llama-3.1-8b").unwrap();
        c.validate().unwrap();
        let per_layer = c.hidden * (c.heads + 2 * c.kv_heads) * c.head_dim + c.heads * c.head_dim * c.hidden + 3 * c.hidden * c.intermediate + 2 * c.hidden;
        let total = c.layers * per_layer + 2 * c.vocab_size * c.hidden + c.hidden;
        assert_eq!(total, 8_030_261_248);
        assert!(ModelConfig::named("nope").is_none());
        assert_eq!(NAMED_CONFIGS.iter().filter(|n| ModelConfig::named(n).is_some()).count(), NAMED_CONFIGS.len());
    }
}
