//! The JSON header of a safetensors file, parsed by streaming visitors instead of the
//! `safetensors` crate's header type (whose `#[serde(flatten)]` buffers every JSON node
//! first: up to ~30× the header's bytes in memory). Every heap byte kept is charged to a
//! budget of the file's size plus a small constant, so no header can make the loader hold
//! more than the file is long; the entries are checked like the format requires (offsets
//! tile the data region, each size is its shape × dtype) before any is used.

use crate::error::LoadError;
use safetensors::Dtype;
use serde::de::{self, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::path::Path;

/// Most dims a tensor may have (real checkpoints use at most 5).
pub const MAX_DIMS: usize = 8;
/// Heap bytes beyond the file's size the parse may keep (the tables of a tiny file).
const BUDGET_SLACK: usize = 16 * 1024;
/// Bytes of the header-length prefix.
const PREFIX: usize = 8;

/// One tensor of the header; `start..end` is relative to the data region.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: Box<str>,
    pub dtype: Dtype,
    pub shape: Box<[usize]>,
    pub start: usize,
    pub end: usize,
}

/// A parsed, checked header: entries sorted by name.
#[derive(Debug)]
pub struct Header {
    entries: Vec<TensorEntry>,
    data_start: usize,
}

/// Heap bytes a parse may still keep.
pub(super) struct Budget(usize);

impl Budget {
    /// The budget of a file of `len` bytes.
    pub(super) fn for_file(len: usize) -> Self {
        Budget(len.saturating_add(BUDGET_SLACK))
    }

    /// Takes `n` bytes, or fails naming `what`.
    pub(super) fn charge<E: de::Error>(&mut self, n: usize, what: &str) -> Result<(), E> {
        match self.0.checked_sub(n) {
            Some(left) => {
                self.0 = left;
                Ok(())
            }
            None => Err(E::custom(format!("{what} would need more memory than the file size allows"))),
        }
    }
}

impl Header {
    /// Parses and checks the header of the safetensors file `buf`.
    pub fn parse(buf: &[u8], file: &Path) -> Result<Header, LoadError> {
        let invalid = |msg: String| LoadError::invalid(file, "header", msg);
        let prefix: [u8; PREFIX] = buf.get(..PREFIX).and_then(|b| b.try_into().ok()).ok_or_else(|| invalid(format!("file of {} bytes has no header length", buf.len())))?;
        let n = u64::from_le_bytes(prefix);
        let data_start = usize::try_from(n).ok().and_then(|n| n.checked_add(PREFIX)).filter(|&e| e <= buf.len()).ok_or_else(|| invalid(format!("length {n} runs past the end of the file ({} bytes)", buf.len())))?;
        let text = std::str::from_utf8(&buf[PREFIX..data_start]).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
        let mut budget = Budget::for_file(buf.len());
        let mut de = serde_json::Deserializer::from_str(text);
        let mut entries = de.deserialize_map(HeaderVisitor { budget: &mut budget }).and_then(|e| de.end().map(|()| e)).map_err(|e| invalid(e.to_string()))?;
        check_layout(&mut entries, buf.len() - data_start, file)?;
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = entries.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(LoadError::invalid(file, &*w[0].name, "tensor listed twice in the header"));
        }
        Ok(Header { entries, data_start })
    }

    /// The entry of tensor `name`.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.entries.binary_search_by(|e| (*e.name).cmp(name)).ok().map(|i| &self.entries[i])
    }

    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The bytes of `entry` in `buf`, the file this header was parsed from.
    pub fn data<'a>(&self, buf: &'a [u8], entry: &TensorEntry) -> &'a [u8] {
        &buf[self.data_start + entry.start..self.data_start + entry.end]
    }
}

/// Sizes match shapes × dtypes, and the entries (sorted here by offset) tile the data
/// region of `data_len` bytes exactly.
fn check_layout(entries: &mut [TensorEntry], data_len: usize, file: &Path) -> Result<(), LoadError> {
    entries.sort_unstable_by_key(|e| (e.start, e.end));
    let mut at = 0;
    for e in entries.iter() {
        let bits = e.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(e.dtype.bitsize()));
        let bytes = bits.filter(|b| b % 8 == 0).map(|b| b / 8);
        if e.start != at || e.end < e.start || bytes != Some(e.end - e.start) {
            return Err(LoadError::invalid(file, &*e.name, format!("data_offsets [{}, {}] do not hold {:?} {:?} after offset {at}", e.start, e.end, e.dtype, e.shape)));
        }
        at = e.end;
    }
    if at != data_len {
        return Err(LoadError::invalid(file, "header", format!("tensors cover {at} of the {data_len} data bytes")));
    }
    Ok(())
}

/// The top-level map: `__metadata__` (ignored) and one entry per tensor.
struct HeaderVisitor<'b> {
    budget: &'b mut Budget,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = Vec<TensorEntry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of tensor names to entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<TensorEntry> = Vec::new();
        while let Some(name) = map.next_key_seed(NameSeed { budget: &mut *self.budget })? {
            if &*name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let (dtype, shape, [start, end]) = map.next_value_seed(EntrySeed { budget: &mut *self.budget, name: &name })?;
            if entries.len() == entries.capacity() {
                let more = entries.capacity().max(4);
                self.budget.charge::<A::Error>(more * std::mem::size_of::<TensorEntry>(), "the tensor table")?;
                entries.reserve_exact(more);
            }
            entries.push(TensorEntry { name, dtype, shape, start, end });
        }
        Ok(entries)
    }
}

/// A map key, copied once its length is charged.
struct NameSeed<'b> {
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = Box<str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = Box<str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.budget.charge(v.len(), "a tensor name")?;
        Ok(v.into())
    }
}

/// One tensor's `{"dtype", "shape", "data_offsets"}` (other fields ignored).
struct EntrySeed<'b, 'n> {
    budget: &'b mut Budget,
    name: &'n str,
}

type RawEntry = (Dtype, Box<[usize]>, [usize; 2]);

impl<'de> DeserializeSeed<'de> for EntrySeed<'_, '_> {
    type Value = RawEntry;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_, '_> {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "the entry of tensor {:?}", self.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        while let Some(key) = map.next_key::<FieldName>()? {
            match key {
                FieldName::Dtype => dtype = Some(map.next_value::<Dtype>()?),
                FieldName::Shape => shape = Some(map.next_value::<Shape>()?),
                FieldName::DataOffsets => offsets = Some(map.next_value::<[usize; 2]>()?),
                FieldName::Other => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        let missing = |field: &str| A::Error::custom(format!("tensor {:?} has no {field}", self.name));
        let shape = shape.ok_or_else(|| missing("shape"))?;
        self.budget.charge::<A::Error>(shape.len * std::mem::size_of::<usize>(), "a shape")?;
        Ok((dtype.ok_or_else(|| missing("dtype"))?, shape.dims[..shape.len].into(), offsets.ok_or_else(|| missing("data_offsets"))?))
    }
}

/// The fields of an entry we read.
enum FieldName {
    Dtype,
    Shape,
    DataOffsets,
    Other,
}

impl<'de> de::Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FieldNameVisitor)
    }
}

struct FieldNameVisitor;

impl Visitor<'_> for FieldNameVisitor {
    type Value = FieldName;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldName, E> {
        Ok(match v {
            "dtype" => FieldName::Dtype,
            "shape" => FieldName::Shape,
            "data_offsets" => FieldName::DataOffsets,
            _ => FieldName::Other,
        })
    }
}

/// At most [`MAX_DIMS`] dims, kept inline while parsing.
struct Shape {
    dims: [usize; MAX_DIMS],
    len: usize,
}

impl<'de> de::Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a shape of at most {MAX_DIMS} dims")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut s = Shape { dims: [0; MAX_DIMS], len: 0 };
        while let Some(d) = seq.next_element::<usize>()? {
            if s.len == MAX_DIMS {
                return Err(A::Error::custom(format!("shape has more than {MAX_DIMS} dims")));
            }
            s.dims[s.len] = d;
            s.len += 1;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b.extend(data);
        b
    }

    fn parse(header: &str, data: &[u8]) -> Result<Header, String> {
        Header::parse(&file(header, data), Path::new("m.safetensors")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_entries_and_their_data() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"a":{"dtype":"F16","shape":[1,2],"data_offsets":[0,4],"extra":[1]}}"#;
        let buf = file(h, &[1, 2, 3, 4, 5, 6]);
        let hd = Header::parse(&buf, Path::new("m")).unwrap();
        let a = hd.get("a").unwrap();
        assert_eq!((a.dtype, &*a.shape), (Dtype::F16, &[1, 2][..]));
        assert_eq!(hd.data(&buf, a), &[1, 2, 3, 4]);
        assert_eq!(hd.data(&buf, hd.get("b").unwrap()), &[5, 6]);
        assert!(hd.get("c").is_none());
        assert_eq!(hd.entries().len(), 2);
    }

    #[test]
    fn refuses_malformed_headers_naming_the_problem() {
        let cases: [(&str, &[u8], &str); 8] = [
            (r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,2]}}"#, &[0, 0], "data_offsets"),
            (r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, &[0, 0, 0], "cover 2 of the 3"),
            (r#"{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#, &[0], "more than 8 dims"),
            (r#"{"a":{"dtype":"U8","shape":[1]}}"#, &[0], "no data_offsets"),
            (r#"{"a":{"dtype":"X9","shape":[1],"data_offsets":[0,1]}}"#, &[0], "X9"),
            (r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, &[0, 0], "twice"),
            (r#"{"a":{"dtype":"U8","shape":[18446744073709551615,2],"data_offsets":[0,1]}}"#, &[0], "data_offsets"),
            (r#"[1]"#, &[], "map"),
        ];
        for (h, data, want) in cases {
            let e = parse(h, data).unwrap_err();
            assert!(e.contains("m.safetensors") && e.contains(want), "{h}: {e}");
        }
        let e = Header::parse(&u64::MAX.to_le_bytes(), Path::new("m")).unwrap_err().to_string();
        assert!(e.contains("header") && e.contains("past the end"), "{e}");
        assert!(Header::parse(&[1, 2], Path::new("m")).is_err());
    }

    #[test]
    fn a_header_of_many_empty_tensors_exceeds_the_budget() {
        let entries: Vec<String> = (0..20_000).map(|i| format!(r#""t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#)).collect();
        let e = parse(&format!("{{{}}}", entries.join(",")), &[]).unwrap_err();
        assert!(e.contains("more memory than the file size allows"), "{e}");
    }
}
