//! `config.json` → [`ModelConfig`], with an error naming the file and field for anything
//! missing, mistyped or unsupported.

use crate::config::{Arch, Llama3RopeScaling, ModelConfig, RopeLayout};
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
    let arch = match model_type {
        "llama" | "mistral" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        other => return Err(LoadError::unsupported(file, "model_type", format!("{other:?} (supported: llama, mistral, qwen2)"))),
    };
    let hidden = f.usize("hidden_size")?;
    let heads = f.usize("num_attention_heads")?;
    if heads == 0 {
        return Err(LoadError::invalid(file, "num_attention_heads", "must be > 0"));
    }
    // transformers ≥ 5 writes `rope_parameters` (theta inside); older files `rope_theta` and
    // `rope_scaling`.
    let (rope_theta, rope) = match f.get("rope_parameters") {
        Some(rp) => (Fields { v: rp, file }.f32_or("rope_theta", 10_000.0)?, Some(("rope_parameters", rp))),
        None => (f.f32_or("rope_theta", 10_000.0)?, f.get("rope_scaling").map(|rs| ("rope_scaling", rs))),
    };
    let rope_scaling = match rope {
        None => None,
        Some((key, rs)) => {
            let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(Value::as_str).unwrap_or("default");
            match kind {
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
            }
        }
    };
    if f.bool_or("mlp_bias", false)? {
        return Err(LoadError::unsupported(file, "mlp_bias", "true"));
    }
    let config = ModelConfig {
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
        rms_eps: f.f32_or("rms_norm_eps", 1e-6)?,
        max_position: f.usize_or("max_position_embeddings", 2048)?,
        tied_embeddings: f.bool_or("tie_word_embeddings", false)?,
        qkv_bias: arch == Arch::Qwen2 || f.bool_or("attention_bias", false)?,
    };
    config.validate().map_err(|msg| LoadError::invalid(file, "(config)", msg))?;
    Ok(config)
}
