//! A minimal GGUF writer for building test files: metadata and tensors in the order added,
//! tensor data laid out contiguously at the alignment. It validates nothing (data of the
//! wrong length makes a malformed file, which a test may want).

use super::{ALIGNMENT_KEY, Array, DEFAULT_ALIGNMENT, MAGIC, Value};
use quant::GgmlType;

/// Builds a GGUF file in memory.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter { version: 3, alignment: DEFAULT_ALIGNMENT, metadata: Vec::new(), tensors: Vec::new() }
    }
}

impl GgufWriter {
    /// Version 3, alignment 32.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn version(&mut self, v: u32) -> &mut Self {
        self.version = v;
        self
    }

    /// Lays the data out at alignment `a` (a power of two) and writes `general.alignment`.
    pub fn alignment(&mut self, a: u32) -> &mut Self {
        self.alignment = a.max(1) as u64;
        self.metadata.retain(|kv| kv.0 != ALIGNMENT_KEY);
        self.kv(ALIGNMENT_KEY, Value::U32(a))
    }

    pub fn kv(&mut self, key: &str, v: Value) -> &mut Self {
        self.metadata.push((key.to_owned(), v));
        self
    }

    /// A tensor with GGUF dims (fastest first) and its raw data.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_owned(), dims.to_vec(), ty, data));
        self
    }

    /// The file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut out, k);
            out.extend((v.ty() as u32).to_le_bytes());
            write_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            write_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend((*ty as u32).to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).next_multiple_of(self.alignment);
        }
        out.resize((out.len() as u64).next_multiple_of(self.alignment) as usize, 0);
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off as usize, 0);
            out.extend(data);
        }
        out
    }
}

/// A GGUF string: `u64` length and the bytes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A value's bytes, without its type id.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Bool(b) => out.push(*b as u8),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => write_array(out, a),
    }
}

/// An array: element type id, `u64` count, elements.
pub fn write_array(out: &mut Vec<u8>, a: &Array) {
    fn all<T, const N: usize>(out: &mut Vec<u8>, v: &[T], f: fn(&T) -> [u8; N]) {
        v.iter().for_each(|x| out.extend(f(x)));
    }
    out.extend((a.elem_type() as u32).to_le_bytes());
    out.extend((a.len() as u64).to_le_bytes());
    match a {
        Array::U8(v) => out.extend(v),
        Array::I8(v) => all(out, v, |x| x.to_le_bytes()),
        Array::U16(v) => all(out, v, |x| x.to_le_bytes()),
        Array::I16(v) => all(out, v, |x| x.to_le_bytes()),
        Array::U32(v) => all(out, v, |x| x.to_le_bytes()),
        Array::I32(v) => all(out, v, |x| x.to_le_bytes()),
        Array::U64(v) => all(out, v, |x| x.to_le_bytes()),
        Array::I64(v) => all(out, v, |x| x.to_le_bytes()),
        Array::F32(v) => all(out, v, |x| x.to_le_bytes()),
        Array::F64(v) => all(out, v, |x| x.to_le_bytes()),
        Array::Bool(v) => all(out, v, |&b| [b as u8]),
        Array::String(v) => v.iter().for_each(|s| write_str(out, s)),
        Array::Array(v) => v.iter().for_each(|a| write_array(out, a)),
    }
}
