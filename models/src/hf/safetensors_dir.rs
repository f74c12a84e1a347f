//! The safetensors files of a checkpoint directory, memory-mapped, with tensors looked up by
//! name across shards and converted to f32 with their shape checked. Headers are parsed by
//! [`super::safetensors_header`] (bounded memory); the index is streamed the same way.

use super::safetensors_header::{Budget, Header, TensorEntry};
use crate::error::LoadError;
use memmap2::Mmap;
use safetensors::Dtype;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// One mapped shard and its parsed header.
struct Shard {
    path: PathBuf,
    map: Mmap,
    header: Header,
}

/// All shards of a checkpoint.
pub struct SafetensorsDir {
    shards: Vec<Shard>,
    /// The file a missing tensor is reported against: `model.safetensors` or the index.
    listing: PathBuf,
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
        let (files, listing): (Vec<PathBuf>, PathBuf) = if index_path.exists() {
            (shard_files(dir, &index_path)?, index_path)
        } else if single.exists() {
            (vec![single.clone()], single)
        } else {
            let pickles = ["pytorch_model.bin", "model.pt"].iter().any(|f| dir.join(f).exists());
            let msg = if pickles { "no model.safetensors (pickle checkpoints are refused: convert to safetensors)" } else { "no model.safetensors or model.safetensors.index.json" };
            return Err(LoadError::invalid(dir, "checkpoint", msg));
        };
        let mut shards: Vec<Shard> = Vec::with_capacity(files.len());
        for path in files {
            let map = map_file(&path)?;
            let header = Header::parse(&map, &path)?;
            if let Some(e) = header.entries().iter().find(|e| shards.iter().any(|s| s.header.get(&e.name).is_some())) {
                return Err(LoadError::invalid(&path, &*e.name, "tensor appears in more than one shard"));
            }
            shards.push(Shard { path, map, header });
        }
        Ok(SafetensorsDir { shards, listing })
    }

    /// The shard holding tensor `name`, and its entry.
    fn find(&self, name: &str) -> Option<(&Shard, &TensorEntry)> {
        self.shards.iter().find_map(|s| s.header.get(name).map(|e| (s, e)))
    }

    /// Whether some shard holds tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The tensor `name` as f32, checked to have `shape`.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let (shard, entry) = self.find(name).ok_or_else(|| LoadError::invalid(&self.listing, name, "tensor missing"))?;
        if &*entry.shape != shape {
            return Err(LoadError::invalid(&shard.path, name, format!("shape {:?}, expected {shape:?}", entry.shape)));
        }
        let data = shard.header.data(&shard.map, entry);
        let out: Vec<f32> = match entry.dtype {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(LoadError::unsupported(&shard.path, format!("dtype of {name}"), format!("{other:?} (supported: F32, F16, BF16)"))),
        };
        Ok(out)
    }
}

/// The shard files named by an index, each a plain file name inside `dir`, sorted.
fn shard_files(dir: &Path, index_path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let text = std::fs::read_to_string(index_path).map_err(|e| LoadError::io(index_path, e))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let mut budget = Budget::for_file(text.len());
    let files = de.deserialize_map(IndexVisitor { budget: &mut budget }).and_then(|f| de.end().map(|()| f)).map_err(|e| LoadError::invalid(index_path, "weight_map", e.to_string()))?;
    let files = files.ok_or_else(|| LoadError::invalid(index_path, "weight_map", "missing"))?;
    if files.is_empty() {
        return Err(LoadError::invalid(index_path, "weight_map", "lists no tensors"));
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    for p in &paths {
        if !p.exists() {
            return Err(LoadError::invalid(index_path, "weight_map", format!("shard {} does not exist", p.display())));
        }
    }
    Ok(paths)
}

/// Heap bytes a distinct shard name costs beyond its text (`String` and tree node share).
const SET_ENTRY_BYTES: usize = 64;

/// The index's top level: `weight_map` (read), anything else (ignored).
struct IndexVisitor<'b> {
    budget: &'b mut Budget,
}

impl<'de> Visitor<'de> for IndexVisitor<'_> {
    type Value = Option<BTreeSet<String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a weight_map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut files = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "weight_map" {
                files = Some(map.next_value_seed(WeightMap { budget: &mut *self.budget })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(files)
    }
}

/// `weight_map`: tensor name → shard file; keeps only the distinct file names (the file
/// bounds their count and length), each checked to be a plain `.safetensors` name.
struct WeightMap<'b> {
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for WeightMap<'_> {
    type Value = BTreeSet<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WeightMap<'_> {
    type Value = BTreeSet<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of tensor names to shard file names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut files = BTreeSet::new();
        while let Some(tensor) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let file = map.next_value::<std::borrow::Cow<'de, str>>()?;
            let plain = !file.is_empty() && !file.contains(['/', '\\']) && file != "." && file != ".." && file.ends_with(".safetensors");
            if !plain {
                return Err(de::Error::custom(format!("weight_map.{tensor}: {file:?} is not a .safetensors file name inside the checkpoint directory")));
            }
            if !files.contains(&*file) {
                self.budget.charge::<A::Error>(file.len() + SET_ENTRY_BYTES, "the shard list")?;
                files.insert(file.into_owned());
            }
        }
        Ok(files)
    }
}
