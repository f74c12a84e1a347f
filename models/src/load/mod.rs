//! Checkpoint loading: a path (a `.gguf` file or a Hugging Face directory) or a known model
//! name → the model definition and its tokenizer.

pub mod gguf;
pub mod gguf_gpt2;

pub use gguf::WeightFormat;

use crate::arch::Model;
use crate::error::LoadError;
use crate::tokenizer::Tokenizer;
use std::path::Path;

/// Loads a model and its tokenizer from `path`.
pub fn load_path(path: &Path, format: WeightFormat) -> Result<(Model, Tokenizer), LoadError> {
    if path.is_dir() {
        let model = crate::hf::load_dir(path)?;
        let tok_path = path.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| LoadError::invalid(&tok_path, "tokenizer", e.to_string()))?;
        return Ok((model, tokenizer));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if [".bin", ".pt", ".pth", ".pkl"].iter().any(|ext| name.ends_with(ext)) {
        return Err(LoadError::unsupported(path, "checkpoint format", "pickle (.bin/.pt) files are never loaded: use safetensors or GGUF"));
    }
    let file = crate::gguf::GgufFile::open(path)?;
    let model = gguf::load_model(&file, path, format)?;
    let spec = gguf::tokenizer_spec(&file)?;
    let tokenizer = crate::tokenizer::tokenizer_from_gguf(&spec).map_err(|e| LoadError::invalid(path, "tokenizer.ggml.*", e.to_string()))?;
    Ok((model, tokenizer))
}
