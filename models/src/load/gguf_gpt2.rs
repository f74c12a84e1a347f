//! A GGUF file of llama.cpp's `gpt2` architecture → [`Gpt2Model`]. Keys are `gpt2.*`;
//! tensors `token_embd`, `position_embd`, `blk.N.{attn_norm, attn_qkv, attn_output,
//! ffn_norm, ffn_up, ffn_down}` (each with a bias), `output_norm` (+ bias) and an optional
//! `output` (absent: tied to `token_embd`). The converter has already transposed GPT-2's
//! `Conv1D` weights, so linear weights are `[in, out]` in GGUF dims (row-major `[out][in]`)
//! like llama tensors. The MLP activation is GELU's tanh approximation, as in llama.cpp.

use super::gguf::{linear, tensor_f32, vocab_size, WeightFormat};
use crate::arch::{Gpt2Layer, Gpt2Model, LayerNorm};
use crate::config::{Activation, Arch, ModelConfig, Norm, Positions, RopeLayout};
use crate::error::LoadError;
use crate::gguf::GgufFile;
use std::path::Path;

/// Reads the GPT-2 configuration from `gpt2.*` metadata.
pub fn config_from_gguf(f: &GgufFile, path: &Path) -> Result<ModelConfig, LoadError> {
    let u = |k: &str| f.get_u32(&format!("gpt2.{k}")).map(|v| v as usize);
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    if heads == 0 || hidden % heads != 0 {
        return Err(LoadError::invalid(path, "gpt2.attention.head_count", format!("{heads} does not divide gpt2.embedding_length {hidden}")));
    }
    let config = ModelConfig {
        arch: Arch::Gpt2,
        vocab_size: vocab_size(f, "gpt2")?,
        hidden,
        intermediate: u("feed_forward_length")?,
        layers: u("block_count")?,
        heads,
        kv_heads: heads,
        head_dim: hidden / heads,
        rope_theta: 10_000.0,
        rope_layout: RopeLayout::Neox,
        rope_scaling: None,
        norm_eps: f.get_f32("gpt2.attention.layer_norm_epsilon")?,
        max_position: u("context_length")?,
        tied_embeddings: f.tensor("output.weight").is_none(),
        qkv_bias: true,
        norm: Norm::Layer,
        activation: Activation::GeluTanh,
        positions: Positions::Learned,
    };
    config.validate().map_err(|msg| LoadError::invalid(path, "gpt2.*", msg))?;
    Ok(config)
}

/// `name.weight` and `name.bias`, `[hidden]` each.
fn layer_norm(f: &GgufFile, path: &Path, name: &str, hidden: usize) -> Result<LayerNorm, LoadError> {
    Ok(LayerNorm { weight: tensor_f32(f, path, &format!("{name}.weight"), &[hidden])?, bias: tensor_f32(f, path, &format!("{name}.bias"), &[hidden])? })
}

/// One block's weights.
fn layer(f: &GgufFile, path: &Path, i: usize, c: &ModelConfig, format: WeightFormat) -> Result<Gpt2Layer, LoadError> {
    let (h, ff) = (c.hidden, c.intermediate);
    let lin = |name: &str, out: usize, inp: usize| linear(f, path, &format!("blk.{i}.{name}"), out, inp, true, format);
    Ok(Gpt2Layer {
        ln_1: layer_norm(f, path, &format!("blk.{i}.attn_norm"), h)?,
        qkv: lin("attn_qkv", 3 * h, h)?,
        attn_out: lin("attn_output", h, h)?,
        ln_2: layer_norm(f, path, &format!("blk.{i}.ffn_norm"), h)?,
        fc: lin("ffn_up", ff, h)?,
        proj: lin("ffn_down", h, ff)?,
    })
}

/// Loads the model's weights.
pub fn load_gpt2(f: &GgufFile, path: &Path, format: WeightFormat) -> Result<Gpt2Model, LoadError> {
    let config = config_from_gguf(f, path)?;
    let c = &config;
    let h = c.hidden;
    let layers = (0..c.layers).map(|i| layer(f, path, i, c, format)).collect::<Result<Vec<_>, _>>()?;
    // As for llama: a tied head in native format is its own block-format copy of the
    // embedding, so the per-token bytes are the file's.
    let lm_head = match (c.tied_embeddings, format) {
        (false, _) => Some(linear(f, path, "output", c.vocab_size, h, false, format)?),
        (true, WeightFormat::Native) => Some(linear(f, path, "token_embd", c.vocab_size, h, false, format)?),
        (true, WeightFormat::F32) => None,
    };
    Ok(Gpt2Model {
        wte: tensor_f32(f, path, "token_embd.weight", &[h, c.vocab_size])?,
        wpe: tensor_f32(f, path, "position_embd.weight", &[h, c.max_position])?,
        layers,
        ln_f: layer_norm(f, path, "output_norm", h)?,
        lm_head,
        config,
    })
}
