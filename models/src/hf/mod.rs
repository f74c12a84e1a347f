//! Hugging Face checkpoints: a directory with `config.json` and `model.safetensors` (or a
//! sharded `model.safetensors.index.json`), read through the `safetensors` crate over a
//! memory map. Pickle files (`*.bin`, `*.pt`) are never loaded.

mod config;
mod gpt2;
mod safetensors_dir;
mod safetensors_header;

pub use config::config_from_json;
pub use safetensors_dir::SafetensorsDir;

use crate::arch::llama::{LlamaLayer, LlamaModel};
use crate::arch::{Linear, Model};
use crate::config::{Arch, ModelConfig};
use crate::error::LoadError;
use std::path::Path;

/// Loads the model of a Hugging Face directory, whatever its (supported) architecture:
/// `config.json`'s `model_type` picks the definition.
pub fn load_dir(dir: &Path) -> Result<Model, LoadError> {
    let config = read_config(dir)?;
    let st = SafetensorsDir::open(dir)?;
    match config.arch {
        Arch::Llama | Arch::Qwen2 => Ok(Model::Llama(build_llama(config, &st)?)),
        Arch::Gpt2 => Ok(Model::Gpt2(gpt2::build_gpt2(config, &st)?)),
    }
}

/// Loads a LLaMA-family or Qwen2 model from a Hugging Face directory (another
/// architecture is an error naming `model_type`; [`load_dir`] takes any).
pub fn load_llama_dir(dir: &Path) -> Result<LlamaModel, LoadError> {
    let config = read_config(dir)?;
    if !matches!(config.arch, Arch::Llama | Arch::Qwen2) {
        return Err(LoadError::unsupported(dir.join("config.json"), "model_type", format!("{} (expected a LLaMA-family model)", config.arch)));
    }
    let st = SafetensorsDir::open(dir)?;
    build_llama(config, &st)
}

/// `dir/config.json`, parsed and validated.
fn read_config(dir: &Path) -> Result<ModelConfig, LoadError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| LoadError::io(&cfg_path, e))?;
    config_from_json(&text, &cfg_path)
}

fn build_llama(config: ModelConfig, st: &SafetensorsDir) -> Result<LlamaModel, LoadError> {
    let c = &config;
    let (h, q, kv) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let lin = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear, LoadError> {
        let w = st.tensor_f32(&format!("{name}.weight"), &[out, inp])?;
        let b = if bias { Some(st.tensor_f32(&format!("{name}.bias"), &[out])?) } else { None };
        Ok(Linear::new(out, inp, w, b))
    };
    let mut layers = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let p = format!("model.layers.{i}");
        layers.push(LlamaLayer {
            attn_norm: st.tensor_f32(&format!("{p}.input_layernorm.weight"), &[h])?,
            q: lin(&format!("{p}.self_attn.q_proj"), q, h, c.qkv_bias)?,
            k: lin(&format!("{p}.self_attn.k_proj"), kv, h, c.qkv_bias)?,
            v: lin(&format!("{p}.self_attn.v_proj"), kv, h, c.qkv_bias)?,
            o: lin(&format!("{p}.self_attn.o_proj"), h, q, false)?,
            ffn_norm: st.tensor_f32(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            gate: lin(&format!("{p}.mlp.gate_proj"), c.intermediate, h, false)?,
            up: lin(&format!("{p}.mlp.up_proj"), c.intermediate, h, false)?,
            down: lin(&format!("{p}.mlp.down_proj"), h, c.intermediate, false)?,
        });
    }
    let embed = st.tensor_f32("model.embed_tokens.weight", &[c.vocab_size, h])?;
    let final_norm = st.tensor_f32("model.norm.weight", &[h])?;
    let lm_head = if c.tied_embeddings { None } else { Some(lin("lm_head", c.vocab_size, h, false)?) };
    Ok(LlamaModel::new(config, embed, layers, final_norm, lm_head))
}
