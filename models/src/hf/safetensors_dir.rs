//! The safetensors files of a checkpoint directory, memory-mapped, with tensors looked up by
//! name across shards and converted to f32 with their shape checked.

use crate::error::LoadError;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One mapped shard.
struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// All shards of a checkpoint and which shard holds each tensor.
pub struct SafetensorsDir {
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
}

fn map_file(path: &Path) -> Result<Mmap, LoadError> {
    let f = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    // SAFETY: the map is read-only and private to this process; a checkpoint being
    // rewritten underneath a running server is outside what any loader can defend against.
    unsafe { Mmap::map(&f) }.map_err(|e| LoadError::io(path, e))
}

impl SafetensorsDir {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            shard_files(dir, &index_path)?
        } else if single.exists() {
            vec![single]
        } else {
            let pickles = ["pytorch_model.bin", "model.pt"].iter().any(|f| dir.join(f).exists());
            let msg = if pickles { "no model.safetensors (pickle checkpoints are refused: convert to safetensors)" } else { "no model.safetensors or model.safetensors.index.json" };
            return Err(LoadError::invalid(dir, "checkpoint", msg));
        };
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for path in files {
            let map = map_file(&path)?;
            let st = SafeTensors::deserialize(&map).map_err(|e| LoadError::invalid(&path, "header", e.to_string()))?;
            for name in st.names() {
                if index.insert(name.to_owned(), shards.len()).is_some() {
                    return Err(LoadError::invalid(&path, name, "tensor appears in more than one shard"));
                }
            }
            shards.push(Shard { path, map });
        }
        Ok(SafetensorsDir { shards, index })
    }

    /// The tensor `name` as f32, checked to have `shape`.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let &si = self.index.get(name).ok_or_else(|| LoadError::invalid(&self.shards[0].path, name, "tensor missing"))?;
        let shard = &self.shards[si];
        let st = SafeTensors::deserialize(&shard.map).map_err(|e| LoadError::invalid(&shard.path, "header", e.to_string()))?;
        let view = st.tensor(name).map_err(|e| LoadError::invalid(&shard.path, name, e.to_string()))?;
        if view.shape() != shape {
            return Err(LoadError::invalid(&shard.path, name, format!("shape {:?}, expected {shape:?}", view.shape())));
        }
        let data = view.data();
        let out: Vec<f32> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(LoadError::unsupported(&shard.path, format!("dtype of {name}"), format!("{other:?} (supported: F32, F16, BF16)"))),
        };
        Ok(out)
    }
}

/// The shard files named by an index, each a plain file name inside `dir`.
fn shard_files(dir: &Path, index_path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let text = std::fs::read_to_string(index_path).map_err(|e| LoadError::io(index_path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LoadError::invalid(index_path, "(json)", e.to_string()))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| LoadError::invalid(index_path, "weight_map", "missing or not an object"))?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| LoadError::invalid(index_path, format!("weight_map.{tensor}"), "not a string"))?;
        let plain = !file.is_empty() && !file.contains(['/', '\\']) && file != "." && file != ".." && file.ends_with(".safetensors");
        if !plain {
            return Err(LoadError::invalid(index_path, format!("weight_map.{tensor}"), format!("{file:?} is not a .safetensors file name inside the checkpoint directory")));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_owned());
        }
    }
    files.sort();
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    for p in &paths {
        if !p.exists() {
            return Err(LoadError::invalid(index_path, "weight_map", format!("shard {} does not exist", p.display())));
        }
    }
    Ok(paths)
}
