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
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        })
    }
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
    pub rms_eps: f32,
    pub max_position: usize,
    pub tied_embeddings: bool,
    pub qkv_bias: bool,
}

impl ModelConfig {
    /// Checks the shape is consistent; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [("vocab_size", self.vocab_size), ("hidden_size", self.hidden), ("intermediate_size", self.intermediate), ("num_hidden_layers", self.layers), ("num_attention_heads", self.heads), ("num_key_value_heads", self.kv_heads), ("head_dim", self.head_dim)];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.heads % self.kv_heads != 0 {
            return Err(format!("num_attention_heads {} is not a multiple of num_key_value_heads {}", self.heads, self.kv_heads));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(format!("rope_theta {} must be finite and > 1", self.rope_theta));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return Err(format!("rms_norm_eps {} must be finite and >= 0", self.rms_eps));
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
