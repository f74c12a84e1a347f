//! GGUF metadata values: the thirteen value types, arrays stored compactly (numbers in
//! typed vectors, strings in one buffer), and their parsing with a nesting limit.

use super::reader::Cursor;
use crate::error::LoadError;

/// Deepest nesting of arrays accepted (1 = a plain array, 2 = an array of arrays, ...).
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// A GGUF metadata value type; discriminants are the file's type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type with file id `id`.
    pub const fn from_u32(id: u32) -> Option<ValueType> {
        use ValueType::*;
        const ALL: [ValueType; 13] = [U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64];
        if id < 13 { Some(ALL[id as usize]) } else { None }
    }

    /// Lower-case name used in error messages.
    pub const fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes in the file.
    pub(crate) const fn min_file_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array: one element type per array (the arrays of an array of arrays may each
/// have their own).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(StrArray),
    Array(Vec<Array>),
}

/// An array of strings kept as one buffer and the end offset of each string (no more
/// memory than the file spends on them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StrArray {
    data: String,
    ends: Vec<usize>,
}

impl StrArray {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, s: &str) {
        self.data.push_str(s);
        self.ends.push(self.data.len());
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// The `i`-th string.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        self.data.get(start..end)
    }
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or(""))
    }
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl<'a> FromIterator<&'a str> for StrArray {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut a = StrArray::new();
        iter.into_iter().for_each(|s| a.push(s));
        a
    }
}

impl Value {
    pub fn ty(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The type as error messages name it (`array of string`).
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {}", a.elem_type().name()),
            v => v.ty().name().to_owned(),
        }
    }

    /// Any integer value, widened.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl Array {
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F32(_) => ValueType::F32,
            Array::F64(_) => ValueType::F64,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` of an integer array, widened (`None` past the end or for other types).
    pub fn int_at(&self, i: usize) -> Option<i128> {
        Some(match self {
            Array::U8(v) => (*v.get(i)?).into(),
            Array::I8(v) => (*v.get(i)?).into(),
            Array::U16(v) => (*v.get(i)?).into(),
            Array::I16(v) => (*v.get(i)?).into(),
            Array::U32(v) => (*v.get(i)?).into(),
            Array::I32(v) => (*v.get(i)?).into(),
            Array::U64(v) => (*v.get(i)?).into(),
            Array::I64(v) => (*v.get(i)?).into(),
            _ => return None,
        })
    }

    /// Whether the elements are integers.
    pub fn is_integer(&self) -> bool {
        use ValueType::*;
        matches!(self.elem_type(), U8 | I8 | U16 | I16 | U32 | I32 | U64 | I64)
    }
}

/// Reads a value type id, naming `key` when it is unknown.
pub(crate) fn read_type(cur: &mut Cursor, key: &str) -> Result<ValueType, LoadError> {
    let id = cur.u32(key)?;
    ValueType::from_u32(id).ok_or_else(|| cur.err(key, format!("unknown value type id {id} (known: 0..=12)")))
}

/// Reads one value of type `ty` for metadata key `key`.
pub(crate) fn read_value(cur: &mut Cursor, ty: ValueType, key: &str) -> Result<Value, LoadError> {
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.u8(key)?),
        ValueType::I8 => Value::I8(cur.u8(key)? as i8),
        ValueType::U16 => Value::U16(cur.u16(key)?),
        ValueType::I16 => Value::I16(cur.u16(key)? as i16),
        ValueType::U32 => Value::U32(cur.u32(key)?),
        ValueType::I32 => Value::I32(cur.u32(key)? as i32),
        ValueType::U64 => Value::U64(cur.u64(key)?),
        ValueType::I64 => Value::I64(cur.u64(key)? as i64),
        ValueType::F32 => Value::F32(f32::from_bits(cur.u32(key)?)),
        ValueType::F64 => Value::F64(f64::from_bits(cur.u64(key)?)),
        ValueType::Bool => match cur.u8(key)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(cur.err(key, format!("bool byte is {b}, expected 0 or 1"))),
        },
        ValueType::String => Value::String(cur.string(key)?),
        ValueType::Array => Value::Array(read_array(cur, key, 1)?),
    })
}

/// `n` fixed-size elements of `N` bytes decoded by `f`, allocated once after the budget
/// check (the count was already checked against the bytes left).
fn fixed<T, const N: usize>(cur: &mut Cursor, n: usize, key: &str, f: fn([u8; N]) -> T) -> Result<Vec<T>, LoadError> {
    cur.charge_items::<T>(n, key)?;
    let bytes = cur.bytes((n as u64).saturating_mul(N as u64), key)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

/// Reads an array (element type, `u64` count, elements) at nesting depth `depth`.
fn read_array(cur: &mut Cursor, key: &str, depth: u32) -> Result<Array, LoadError> {
    let ty = read_type(cur, key)?;
    let n = cur.count(key, ty.min_file_size())?;
    Ok(match ty {
        ValueType::U8 => Array::U8(fixed(cur, n, key, |[b]| b)?),
        ValueType::I8 => Array::I8(fixed(cur, n, key, i8::from_le_bytes)?),
        ValueType::U16 => Array::U16(fixed(cur, n, key, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(fixed(cur, n, key, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(fixed(cur, n, key, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(fixed(cur, n, key, i32::from_le_bytes)?),
        ValueType::U64 => Array::U64(fixed(cur, n, key, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(fixed(cur, n, key, i64::from_le_bytes)?),
        ValueType::F32 => Array::F32(fixed(cur, n, key, f32::from_le_bytes)?),
        ValueType::F64 => Array::F64(fixed(cur, n, key, f64::from_le_bytes)?),
        ValueType::Bool => {
            let start = cur.pos();
            let raw = cur.bytes(n as u64, key)?;
            if let Some((i, b)) = raw.iter().enumerate().find(|(_, b)| **b > 1) {
                return Err(cur.err(key, format!("element {i}: bool byte is {b}, expected 0 or 1")));
            }
            cur.rewind_to(start);
            Array::Bool(fixed(cur, n, key, |[b]| b == 1)?)
        }
        ValueType::String => Array::String(read_str_array(cur, n, key)?),
        ValueType::Array => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(cur.err(key, format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
            }
            cur.charge_items::<Array>(n, key)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(cur, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

/// `n` strings: a first pass measures them without allocating, a second copies them into
/// one buffer of exactly the right size.
fn read_str_array(cur: &mut Cursor, n: usize, key: &str) -> Result<StrArray, LoadError> {
    let start = cur.pos();
    let mut total = 0u64;
    for i in 0..n {
        let len = cur.str_bytes(key).map_err(|e| cur.err(key, format!("element {i}: {}", message(&e))))?.len();
        total = total.saturating_add(len as u64);
    }
    cur.charge(total, key)?;
    cur.charge_items::<usize>(n, key)?;
    let total = usize::try_from(total).map_err(|_| cur.err(key, "strings too long"))?;
    let mut out = StrArray { data: String::with_capacity(total), ends: Vec::with_capacity(n) };
    cur.rewind_to(start);
    for i in 0..n {
        let b = cur.str_bytes(key)?;
        let s = std::str::from_utf8(b).map_err(|e| cur.err(key, format!("element {i}: string is not UTF-8 ({e})")))?;
        out.push(s);
    }
    Ok(out)
}

/// The message of an error without its `file: field: ` prefix.
fn message(e: &LoadError) -> String {
    match e {
        LoadError::Invalid { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}
