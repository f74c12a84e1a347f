//! `config.json` → [`ModelConfig`], with an error naming the file and field for anything
//! missing, mistyped or unsupported.

use crate::config::{Activation, Arch, Llama3RopeScaling, ModelConfig, Norm, Positions, RopeLayout};
use crate::error::LoadError;
use serde_json::Value;
use std::path::Path;

struct Fields<'a> {
    v: &'a Value,
    file: &'a Path,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<usize, LoadError> {
        let v = self.get(key).ok_or_else(|| LoadError::invalid(self.file, key, "missing"))?;
        v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| LoadError::invalid(self.file, key, format!("expected a non-negative integer, found {v}")))
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, LoadError> {
        if self.get(key).is_some() { self.usize(key) } else { Ok(default) }
    }

    fn f32_or(&self, key: &str, default: f32) -> Result<f32, LoadError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| LoadError::invalid(self.file, key, format!("expected a number, found {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, LoadError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| LoadError::invalid(self.file, key, format!("expected true or false, found {v}"))),
        }
    }
}

/// Parses a Hugging Face `config.json` of a supported architecture.
pub fn config_from_json(text: &str, file: &Path) -> Result<ModelConfig, LoadError> {
    let v: Value = serde_json::from_str(text).map_err(|e| LoadError::invalid(file, "(json)", e.to_string()))?;
    if !v.is_object() {
        return Err(LoadError::invalid(file, "(json)", "expected an object"));
    }
    let f = Fields { v: &v, file };
    let model_type = f.get("model_type").and_then(Value::as_str).ok_or_else(|| LoadError::invalid(file, "model_type", "missing or not a string"))?;
    let config = match model_type {
        "llama" | "mistral" => llama_config(&f, Arch::Llama)?,
        "qwen2" => llama_config(&f, Arch::Qwen2)?,
        "gpt2" => gpt2_config(&f)?,
        other => return Err(LoadError::unsupported(file, "model_type", format!("{other:?} (supported: llama, mistral, qwen2, gpt2)"))),
    };
    config.validate().map_err(|msg| LoadError::invalid(file, "(config)", msg))?;
    Ok(config)
}

/// RoPE θ and scaling: transformers ≥ 5 writes `rope_parameters` (θ inside), older files
/// `rope_theta` and `rope_scaling`.
fn rope_fields(f: &Fields) -> Result<(f32, Option<Llama3RopeScaling>), LoadError> {
    let file = f.file;
    let (rope_theta, rope) = match f.get("rope_parameters") {
        Some(rp) => (Fields { v: rp, file }.f32_or("rope_theta", 10_000.0)?, Some(("rope_parameters", rp))),
        None => (f.f32_or("rope_theta", 10_000.0)?, f.get("rope_scaling").map(|rs| ("rope_scaling", rs))),
    };
    let Some((key, rs)) = rope else { return Ok((rope_theta, None)) };
    let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(Value::as_str).unwrap_or("default");
    let scaling = match kind {
        "default" => None,
        "llama3" => {
            let s = Fields { v: rs, file };
            Some(Llama3RopeScaling {
                factor: s.f32_or("factor", 8.0)?,
                low_freq_factor: s.f32_or("low_freq_factor", 1.0)?,
                high_freq_factor: s.f32_or("high_freq_factor", 4.0)?,
                original_max_position: s.usize_or("original_max_position_embeddings", 8192)? as f32,
            })
        }
        other => return Err(LoadError::unsupported(file, format!("{key}.rope_type"), format!("{other:?} (supported: default, llama3)"))),
    };
    Ok((rope_theta, scaling))
}

/// LLaMA family and Qwen2 (`LlamaConfig` / `Qwen2Config` field names).
fn llama_config(f: &Fields, arch: Arch) -> Result<ModelConfig, LoadError> {
    let hidden = f.usize("hidden_size")?;
    let heads = f.usize("num_attention_heads")?;
    if heads == 0 {
        return Err(LoadError::invalid(f.file, "num_attention_heads", "must be > 0"));
    }
    let (rope_theta, rope_scaling) = rope_fields(f)?;
    if f.bool_or("mlp_bias", false)? {
        return Err(LoadError::unsupported(f.file, "mlp_bias", "true"));
    }
    Ok(ModelConfig {
        arch,
        vocab_size: f.usize("vocab_size")?,
        hidden,
        intermediate: f.usize("intermediate_size")?,
        layers: f.usize("num_hidden_layers")?,
        heads,
        kv_heads: f.usize_or("num_key_value_heads", heads)?,
        head_dim: f.usize_or("head_dim", hidden / heads)?,
        rope_theta,
        rope_layout: RopeLayout::Neox,
        rope_scaling,
        norm_eps: f.f32_or("rms_norm_eps", 1e-6)?,
        max_position: f.usize_or("max_position_embeddings", 2048)?,
        tied_embeddings: f.bool_or("tie_word_embeddings", false)?,
        qkv_bias: arch == Arch::Qwen2 || f.bool_or("attention_bias", false)?,
        norm: Norm::Rms,
        activation: Activation::SwiGlu,
        positions: Positions::Rope,
    })
}

/// GPT-2 (`GPT2Config` field names; defaults as transformers').
fn gpt2_config(f: &Fields) -> Result<ModelConfig, LoadError> {
    let hidden = f.usize("n_embd")?;
    let heads = f.usize("n_head")?;
    if heads == 0 || hidden % heads != 0 {
        return Err(LoadError::invalid(f.file, "n_head", format!("{heads} does not divide n_embd {hidden}")));
    }
    if !f.bool_or("scale_attn_weights", true)? {
        return Err(LoadError::unsupported(f.file, "scale_attn_weights", "false"));
    }
    if f.bool_or("scale_attn_by_inverse_layer_idx", false)? {
        return Err(LoadError::unsupported(f.file, "scale_attn_by_inverse_layer_idx", "true"));
    }
    Ok(ModelConfig {
        arch: Arch::Gpt2,
        vocab_size: f.usize("vocab_size")?,
        hidden,
        intermediate: f.usize_or("n_inner", 4 * hidden)?,
        layers: f.usize("n_layer")?,
        heads,
        kv_heads: heads,
        head_dim: hidden / heads,
        rope_theta: 10_000.0,
        rope_layout: RopeLayout::Neox,
        rope_scaling: None,
        norm_eps: f.f32_or("layer_norm_epsilon", 1e-5)?,
        max_position: f.usize_or("n_positions", 1024)?,
        tied_embeddings: f.bool_or("tie_word_embeddings", true)?,
        qkv_bias: true,
        norm: Norm::Layer,
        activation: gpt2_activation(f)?,
        positions: Positions::Learned,
    })
}

/// `activation_function` (default `gelu_new`).
fn gpt2_activation(f: &Fields) -> Result<Activation, LoadError> {
    let Some(v) = f.get("activation_function") else { return Ok(Activation::GeluTanh) };
    match v.as_str() {
        Some("gelu_new" | "gelu_pytorch_tanh") => Ok(Activation::GeluTanh),
        Some("gelu") => Ok(Activation::GeluErf),
        _ => Err(LoadError::unsupported(f.file, "activation_function", format!("{v} (supported: gelu_new, gelu_pytorch_tanh, gelu)"))),
    }
}
