//! A GGUF file → the model definition of its `general.architecture`: configuration from
//! the architecture's metadata keys, tensors dequantised to f32 or kept in their block
//! format ([`WeightFormat`]). LLaMA family and Qwen2 here; GPT-2 in [`super::gguf_gpt2`].
//!
//! Conventions of llama.cpp's files: weight dims are `[in, out]` (dims[0] fastest), so the
//! data is row-major `[out][in]` like Hugging Face's; llama-arch files store Q and K rows
//! permuted for interleaved RoPE (so we rotate interleaved pairs, no un-permuting);
//! qwen2 files keep the NeoX layout; no `output.weight` means tied embeddings.

use crate::arch::llama::{LlamaLayer, LlamaModel};
use crate::arch::{Linear, Model};
use crate::config::{Activation, Arch, ModelConfig, Norm, Positions, RopeLayout};
use crate::error::LoadError;
use crate::gguf::{GgufFile, TensorInfo};
use crate::tokenizer::GgufTokenizerSpec;
use std::path::Path;

/// Loads the model of the file's `general.architecture`.
pub fn load_model(f: &GgufFile, path: &Path, format: WeightFormat) -> Result<Model, LoadError> {
    match f.get_str("general.architecture")? {
        "gpt2" => Ok(Model::Gpt2(super::gguf_gpt2::load_gpt2(f, path, format)?)),
        _ => Ok(Model::Llama(load_llama(f, path, format)?)),
    }
}

/// Reads the model configuration from GGUF metadata.
pub fn config_from_gguf(f: &GgufFile, path: &Path) -> Result<ModelConfig, LoadError> {
    let arch_name = f.get_str("general.architecture")?;
    let (arch, rope_layout) = match arch_name {
        "llama" => (Arch::Llama, RopeLayout::Interleaved),
        "qwen2" => (Arch::Qwen2, RopeLayout::Neox),
        "gpt2" => return super::gguf_gpt2::config_from_gguf(f, path),
        other => return Err(LoadError::unsupported(path, "general.architecture", format!("{other:?} (supported: llama, qwen2, gpt2)"))),
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let u = |k: &str| f.get_u32(&key(k)).map(|v| v as usize);
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let kv_heads = if f.get(&key("attention.head_count_kv")).is_some() { u("attention.head_count_kv")? } else { heads };
    let vocab_size = vocab_size(f, arch_name)?;
    let head_dim = if f.get(&key("attention.key_length")).is_some() { u("attention.key_length")? } else { hidden / heads.max(1) };
    let rope_theta = if f.get(&key("rope.freq_base")).is_some() { f.get_f32(&key("rope.freq_base"))? } else { 10_000.0 };
    let rope_dims = if f.get(&key("rope.dimension_count")).is_some() { u("rope.dimension_count")? } else { head_dim };
    if rope_dims != head_dim {
        return Err(LoadError::unsupported(path, key("rope.dimension_count"), format!("{rope_dims} (partial rotary on head_dim {head_dim})")));
    }
    let config = ModelConfig {
        arch,
        vocab_size,
        hidden,
        intermediate: u("feed_forward_length")?,
        layers: u("block_count")?,
        heads,
        kv_heads,
        head_dim,
        rope_theta,
        rope_layout,
        rope_scaling: None,
        norm_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
        max_position: u("context_length")?,
        tied_embeddings: f.tensor("output.weight").is_none(),
        qkv_bias: arch == Arch::Qwen2,
        norm: Norm::Rms,
        activation: Activation::SwiGlu,
        positions: Positions::Rope,
    };
    config.validate().map_err(|msg| LoadError::invalid(path, format!("{arch_name}.*"), msg))?;
    Ok(config)
}

/// `{arch}.vocab_size`, or the length of the tokenizer's token list.
pub(super) fn vocab_size(f: &GgufFile, arch_name: &str) -> Result<usize, LoadError> {
    let key = format!("{arch_name}.vocab_size");
    match f.get(&key) {
        Some(_) => Ok(f.get_u32(&key)? as usize),
        None => Ok(f.get_str_array("tokenizer.ggml.tokens")?.len()),
    }
}

/// A tensor dequantised to f32, checked to have GGUF dims `dims` (fastest first).
pub(super) fn tensor_f32(f: &GgufFile, path: &Path, name: &str, dims: &[usize]) -> Result<Vec<f32>, LoadError> {
    let info: &TensorInfo = f.tensor(name).ok_or_else(|| LoadError::invalid(path, name, "tensor missing"))?;
    let have: Vec<usize> = info.dims.iter().map(|&d| d as usize).collect();
    if have != dims {
        return Err(LoadError::invalid(path, name, format!("dims {have:?}, expected {dims:?}")));
    }
    let n: usize = dims.iter().product();
    let mut out = vec![0f32; n];
    quant::dequantize(info.ty, f.tensor_data(info), &mut out).map_err(|e| LoadError::invalid(path, name, e.to_string()))?;
    Ok(out)
}

/// How the CPU path stores linear weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// Dequantised to f32 at load (exact, 4 bytes per weight read per token).
    F32,
    /// Kept in the file's block format, decoded row by row inside the matmul (the same
    /// values, the file's bytes per token).
    Native,
}

/// A linear layer `[out, inp]` named `name` (`.weight`, optional `.bias`).
pub(super) fn linear(f: &GgufFile, path: &Path, name: &str, out: usize, inp: usize, bias: bool, format: WeightFormat) -> Result<Linear, LoadError> {
    let wname = format!("{name}.weight");
    let b = if bias { Some(tensor_f32(f, path, &format!("{name}.bias"), &[out])?) } else { None };
    if format == WeightFormat::Native {
        let info = f.tensor(&wname).ok_or_else(|| LoadError::invalid(path, &wname, "tensor missing"))?;
        if info.dims != [inp as u64, out as u64] {
            return Err(LoadError::invalid(path, &wname, format!("dims {:?}, expected [{inp}, {out}]", info.dims)));
        }
        if quant::supports_dequantize(info.ty) && info.ty != quant::GgmlType::F32 {
            return Linear::ggml(out, inp, info.ty, f.tensor_data(info).to_vec(), b).map_err(|msg| LoadError::invalid(path, &wname, msg));
        }
    }
    Ok(Linear::new(out, inp, tensor_f32(f, path, &wname, &[inp, out])?, b))
}

/// Loads the model's weights.
pub fn load_llama(f: &GgufFile, path: &Path, format: WeightFormat) -> Result<LlamaModel, LoadError> {
    let config = config_from_gguf(f, path)?;
    if config.arch == Arch::Gpt2 {
        return Err(LoadError::unsupported(path, "general.architecture", "gpt2 (expected a LLaMA-family model; load_model takes any)"));
    }
    let c = &config;
    let (h, q, kv) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let lin = |name: &str, out: usize, inp: usize, bias: bool| linear(f, path, name, out, inp, bias, format);
    let mut layers = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let p = format!("blk.{i}");
        layers.push(LlamaLayer {
            attn_norm: tensor_f32(f, path, &format!("{p}.attn_norm.weight"), &[h])?,
            q: lin(&format!("{p}.attn_q"), q, h, c.qkv_bias)?,
            k: lin(&format!("{p}.attn_k"), kv, h, c.qkv_bias)?,
            v: lin(&format!("{p}.attn_v"), kv, h, c.qkv_bias)?,
            o: lin(&format!("{p}.attn_output"), h, q, false)?,
            ffn_norm: tensor_f32(f, path, &format!("{p}.ffn_norm.weight"), &[h])?,
            gate: lin(&format!("{p}.ffn_gate"), c.intermediate, h, false)?,
            up: lin(&format!("{p}.ffn_up"), c.intermediate, h, false)?,
            down: lin(&format!("{p}.ffn_down"), h, c.intermediate, false)?,
        });
    }
    let embed = tensor_f32(f, path, "token_embd.weight", &[h, c.vocab_size])?;
    let final_norm = tensor_f32(f, path, "output_norm.weight", &[h])?;
    // A tied head is the embedding read as a matrix: in native format it is its own
    // (block-format) copy, so the per-token bytes are the file's.
    let lm_head = match (c.tied_embeddings, format) {
        (false, _) => Some(lin("output", c.vocab_size, h, false)?),
        (true, WeightFormat::Native) => Some(lin("token_embd", c.vocab_size, h, false)?),
        (true, WeightFormat::F32) => None,
    };
    Ok(LlamaModel::new(config, embed, layers, final_norm, lm_head))
}

/// The tokenizer fields of the file.
pub fn tokenizer_spec(f: &GgufFile) -> Result<GgufTokenizerSpec, LoadError> {
    let opt_u32 = |k: &str| -> Result<Option<u32>, LoadError> { if f.get(k).is_some() { f.get_u32(k).map(Some) } else { Ok(None) } };
    Ok(GgufTokenizerSpec {
        model: f.get_str("tokenizer.ggml.model")?.to_owned(),
        pre: if f.get("tokenizer.ggml.pre").is_some() { Some(f.get_str("tokenizer.ggml.pre")?.to_owned()) } else { None },
        tokens: f.get_str_array("tokenizer.ggml.tokens")?.to_vec(),
        merges: if f.get("tokenizer.ggml.merges").is_some() { f.get_str_array("tokenizer.ggml.merges")?.to_vec() } else { Vec::new() },
        token_types: if f.get("tokenizer.ggml.token_type").is_some() { f.get_i32_array("tokenizer.ggml.token_type")? } else { Vec::new() },
        bos_id: opt_u32("tokenizer.ggml.bos_token_id")?,
        eos_id: opt_u32("tokenizer.ggml.eos_token_id")?,
        add_bos: if f.get("tokenizer.ggml.add_bos_token").is_some() { f.get_bool("tokenizer.ggml.add_bos_token")? } else { false },
        chat_template: if f.get("tokenizer.chat_template").is_some() { Some(f.get_str("tokenizer.chat_template")?.to_owned()) } else { None },
    })
}
