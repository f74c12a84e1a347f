//! GGUF files (llama.cpp's single-file checkpoints), versions 2 and 3, little-endian:
//! header, metadata key/values, tensor infos and the aligned data section, memory-mapped.
//!
//! Parsing is defensive: no input makes it panic or allocate more than the file size (plus
//! a small constant); every error names the file and the header field, metadata key or
//! tensor that was wrong. Tensor data is not copied: [`GgufFile::tensor_data`] borrows it.

mod reader;
mod tensor;
mod value;
pub mod writer;

pub use tensor::{MAX_DIMS, TensorInfo};
pub use value::{Array, MAX_ARRAY_DEPTH, StrArray, Value, ValueType};
pub use writer::GgufWriter;

use crate::error::LoadError;
use memmap2::Mmap;
use reader::{Cursor, align_up};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file magic, `GGUF`.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Versions this reader understands (version 1 used 32-bit counts and is obsolete).
pub const SUPPORTED_VERSIONS: [u32; 2] = [2, 3];
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// The fewest bytes one metadata entry takes (empty key, type id, one-byte value).
const MIN_KV_BYTES: u64 = 8 + 4 + 1;

enum Bytes {
    Mapped(Mmap),
    Shared(Arc<[u8]>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Shared(b) => b,
        }
    }
}

/// A parsed GGUF file and its bytes.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    meta: Parsed,
}

/// Everything parsed from the bytes.
struct Parsed {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    /// Indices into `metadata`, sorted by key.
    key_order: Vec<u32>,
    tensors: Vec<TensorInfo>,
    /// Indices into `tensors`, sorted by name.
    name_order: Vec<u32>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.as_bytes().len())
            .field("version", &self.meta.version)
            .field("metadata", &self.meta.metadata.len())
            .field("tensors", &self.meta.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile, LoadError> {
        let f = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
        // SAFETY: the map is read-only and private to this process, and every read through
        // it is bounds-checked against its length; a file truncated or rewritten by another
        // process while mapped is outside what any loader can defend against.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| LoadError::io(path, e))?;
        let meta = parse(&map, path)?;
        Ok(GgufFile { path: path.to_path_buf(), bytes: Bytes::Mapped(map), meta })
    }

    /// Parses in-memory bytes; `name` stands for the file in error messages.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>, name: &str) -> Result<GgufFile, LoadError> {
        let bytes: Arc<[u8]> = bytes.into();
        let path = PathBuf::from(name);
        let meta = parse(&bytes, &path)?;
        Ok(GgufFile { path, bytes: Bytes::Shared(bytes), meta })
    }

    /// The file's path (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.meta.version
    }
    /// Alignment of the data section and of every tensor's offset.
    pub fn alignment(&self) -> u64 {
        self.meta.alignment
    }
    /// Absolute file offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.meta.data_start
    }
    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.meta.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let m = &self.meta.metadata;
        let name = |i: u32| m.get(i as usize).map_or("", |kv| kv.0.as_str());
        let i = self.meta.key_order.binary_search_by(|&i| name(i).cmp(key)).ok()?;
        m.get(*self.meta.key_order.get(i)? as usize).map(|kv| &kv.1)
    }

    fn require(&self, key: &str) -> Result<&Value, LoadError> {
        self.get(key).ok_or_else(|| LoadError::invalid(&self.path, key, "metadata key missing"))
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &str) -> LoadError {
        LoadError::invalid(&self.path, key, format!("expected {expected}, found {found}"))
    }

    fn get_int<T: TryFrom<i128>>(&self, key: &str, ty: &str) -> Result<T, LoadError> {
        let v = self.require(key)?;
        let n = v.as_i128().ok_or_else(|| self.wrong_type(key, &format!("{ty} (any integer type)"), &v.type_name()))?;
        T::try_from(n).map_err(|_| LoadError::invalid(&self.path, key, format!("value {n} does not fit in {ty}")))
    }

    /// A value of any integer type that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, LoadError> {
        self.get_int(key, "u32")
    }
    /// A value of any integer type that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64, LoadError> {
        self.get_int(key, "u64")
    }
    /// A value of any integer type that fits in `i32`.
    pub fn get_i32(&self, key: &str) -> Result<i32, LoadError> {
        self.get_int(key, "i32")
    }

    /// An `f32` value (an `f64` is narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32, LoadError> {
        match self.require(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            v => Err(self.wrong_type(key, "f32", &v.type_name())),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, LoadError> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(self.wrong_type(key, "bool", &v.type_name())),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, LoadError> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(self.wrong_type(key, "string", &v.type_name())),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&Array, LoadError> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(self.wrong_type(key, "array", &v.type_name())),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<&StrArray, LoadError> {
        match self.get_array(key)? {
            Array::String(a) => Ok(a),
            a => Err(self.wrong_type(key, "array of string", &format!("array of {}", a.elem_type().name()))),
        }
    }

    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], LoadError> {
        match self.get_array(key)? {
            Array::F32(a) => Ok(a),
            a => Err(self.wrong_type(key, "array of f32", &format!("array of {}", a.elem_type().name()))),
        }
    }

    /// An array of any integer type whose elements all fit in `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, LoadError> {
        let a = self.get_array(key)?;
        if !a.is_integer() {
            return Err(self.wrong_type(key, "array of i32 (any integer type)", &format!("array of {}", a.elem_type().name())));
        }
        (0..a.len())
            .map(|i| {
                let n = a.int_at(i).unwrap_or(i128::MAX);
                i32::try_from(n).map_err(|_| LoadError::invalid(&self.path, key, format!("element {i} = {n} does not fit in i32")))
            })
            .collect()
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.meta.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let t = &self.meta.tensors;
        let tname = |i: u32| t.get(i as usize).map_or("", |t| t.name.as_str());
        let i = self.meta.name_order.binary_search_by(|&i| tname(i).cmp(name)).ok()?;
        t.get(*self.meta.name_order.get(i)? as usize)
    }

    /// The data of a tensor of this file (empty for an info whose range is outside the
    /// file, which can only be one not parsed from this file).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.meta.data_start.checked_add(info.offset);
        let range = start.and_then(|s| Some(usize::try_from(s).ok()?..usize::try_from(s.checked_add(info.n_bytes())?).ok()?));
        range.and_then(|r| self.as_bytes().get(r)).unwrap_or(&[])
    }
}

/// Indices of `items` sorted by `name`, failing on the first duplicate.
fn sorted_unique<T>(cur: &mut Cursor, items: &[T], name: impl Fn(&T) -> &str, what: &str) -> Result<Vec<u32>, LoadError> {
    cur.charge_items::<u32>(items.len(), what)?;
    let name = |i: u32| items.get(i as usize).map_or("", &name);
    let mut order: Vec<u32> = (0..items.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    if let Some(w) = order.windows(2).find(|w| name(w[0]) == name(w[1])) {
        return Err(cur.err(name(w[0]), format!("duplicate {what}")));
    }
    Ok(order)
}

fn parse(bytes: &[u8], path: &Path) -> Result<Parsed, LoadError> {
    let mut cur = Cursor::new(bytes, path);
    let magic = cur.bytes(4, "magic")?;
    if magic != MAGIC {
        return Err(cur.err("magic", format!("bad magic \"{}\", expected \"GGUF\"", magic.escape_ascii())));
    }
    let version = cur.u32("version")?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        let hint = if SUPPORTED_VERSIONS.contains(&version.swap_bytes()) { " (a big-endian file?)" } else { "" };
        return Err(LoadError::unsupported(path, "GGUF version", format!("{version}{hint} (supported: 2, 3)")));
    }
    let n_tensors = cur.u64("tensor_count")?;
    let n_kv = cur.count("metadata_kv_count", MIN_KV_BYTES)?;
    // Checked again against what is left after the metadata; an absurd count fails early.
    cur.check_count(n_tensors, "tensor_count", tensor::MIN_TENSOR_INFO_BYTES)?;

    cur.charge_items::<(String, Value)>(n_kv, "metadata_kv_count")?;
    let mut metadata = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = cur.string(&format!("metadata key #{i}"))?;
        let ty = value::read_type(&mut cur, &key)?;
        let v = value::read_value(&mut cur, ty, &key)?;
        metadata.push((key, v));
    }
    let key_order = sorted_unique(&mut cur, &metadata, |kv| kv.0.as_str(), "metadata key")?;

    let alignment = match metadata.iter().find(|kv| kv.0 == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_i128().and_then(|n| u32::try_from(n).ok()) {
            Some(a) if a.is_power_of_two() => a as u64,
            Some(a) => return Err(cur.err(ALIGNMENT_KEY, format!("{a} is not a power of two"))),
            None => {
                let msg = match v.as_i128() {
                    Some(n) => format!("{n} does not fit in u32"),
                    None => format!("expected u32, found {}", v.type_name()),
                };
                return Err(cur.err(ALIGNMENT_KEY, msg));
            }
        },
    };

    let n_tensors = cur.check_count(n_tensors, "tensor_count", tensor::MIN_TENSOR_INFO_BYTES)?;
    cur.charge_items::<TensorInfo>(n_tensors, "tensor_count")?;
    let mut tensors = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        tensors.push(tensor::read_tensor_info(&mut cur, i)?);
    }
    let name_order = sorted_unique(&mut cur, &tensors, |t| t.name.as_str(), "tensor name")?;

    let data_start = align_up(cur.pos() as u64, alignment).ok_or_else(|| cur.err("data section", "offset overflows"))?;
    cur.charge_items::<u32>(n_tensors, "tensor_count")?;
    let mut order = Vec::with_capacity(n_tensors);
    tensor::check_layout(path, &tensors, data_start, bytes.len() as u64, alignment, &mut order)?;
    Ok(Parsed { version, alignment, data_start, metadata, key_order, tensors, name_order })
}
