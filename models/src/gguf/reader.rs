//! A little-endian byte cursor over a GGUF file: every read is bounds-checked, every count
//! is checked against the bytes left before anything is allocated for it, and every
//! allocation is charged to a budget of the file's size, so no input can make the parser
//! panic or allocate more than the file is long (plus a small constant).

use crate::error::LoadError;
use std::path::Path;

/// Heap bytes the parser may use beyond the file's size: the fixed overhead of the
/// tables of a tiny file (a few entries) must not fail the budget.
const BUDGET_SLACK: u64 = 16 * 1024;

/// Reads the file front to back.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a Path,
    /// Heap bytes the parse may still allocate.
    budget: u64,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], file: &'a Path) -> Self {
        let budget = (buf.len() as u64).saturating_add(BUDGET_SLACK);
        Cursor { buf, pos: 0, file, budget }
    }

    pub(crate) fn file(&self) -> &'a Path {
        self.file
    }

    /// Offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves back to `pos`, an offset this cursor has already passed.
    pub(crate) fn rewind_to(&mut self, pos: usize) {
        self.pos = pos.min(self.pos);
    }

    /// Bytes left after the cursor.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// An `Invalid` error at `field` of this file.
    pub(crate) fn err(&self, field: &str, msg: impl Into<String>) -> LoadError {
        LoadError::invalid(self.file, field, msg)
    }

    /// Takes `n` heap bytes from the budget, or fails naming `field`.
    pub(crate) fn charge(&mut self, n: u64, field: &str) -> Result<(), LoadError> {
        match self.budget.checked_sub(n) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.err(field, format!("would need {n} more bytes of memory, more than the file size allows"))),
        }
    }

    /// Charges `count` items of `T`, checking the multiplication.
    pub(crate) fn charge_items<T>(&mut self, count: usize, field: &str) -> Result<(), LoadError> {
        match (count as u64).checked_mul(std::mem::size_of::<T>() as u64) {
            Some(b) => self.charge(b, field),
            None => Err(self.err(field, format!("count {count} overflows"))),
        }
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: u64, field: &str) -> Result<&'a [u8], LoadError> {
        let range = usize::try_from(n).ok().and_then(|n| Some(self.pos..self.pos.checked_add(n)?));
        match range.and_then(|r| Some((self.buf.get(r.clone())?, r.end))) {
            Some((s, end)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(field, format!("truncated: needs {n} bytes at offset {}, only {} left", self.pos, self.remaining()))),
        }
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], LoadError> {
        let s = self.bytes(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, LoadError> {
        self.array(field).map(|[b]| b)
    }
    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, LoadError> {
        self.array(field).map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, LoadError> {
        self.array(field).map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, LoadError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A `u64` element count whose elements take at least `min_elem_bytes` each in the
    /// file: a count the rest of the file cannot hold is an error before any allocation.
    pub(crate) fn count(&mut self, field: &str, min_elem_bytes: u64) -> Result<usize, LoadError> {
        let n = self.u64(field)?;
        self.check_count(n, field, min_elem_bytes)
    }

    /// `n` as a `usize`, if `n` elements of at least `min_elem_bytes` each fit in the bytes
    /// left.
    pub(crate) fn check_count(&self, n: u64, field: &str, min_elem_bytes: u64) -> Result<usize, LoadError> {
        let left = self.remaining() as u64;
        let fits = n.checked_mul(min_elem_bytes).is_some_and(|b| b <= left);
        match usize::try_from(n) {
            Ok(n) if fits => Ok(n),
            _ => Err(self.err(field, format!("count {n} cannot fit in the {left} bytes left (at least {min_elem_bytes} bytes each)"))),
        }
    }

    /// The raw bytes of a GGUF string (`u64` length, then the bytes).
    pub(crate) fn str_bytes(&mut self, field: &str) -> Result<&'a [u8], LoadError> {
        let n = self.u64(field)?;
        self.bytes(n, field)
    }

    /// A GGUF string, checked to be UTF-8, copied (and charged to the budget).
    pub(crate) fn string(&mut self, field: &str) -> Result<String, LoadError> {
        let b = self.str_bytes(field)?;
        let s = std::str::from_utf8(b).map_err(|e| self.err(field, format!("string is not UTF-8 ({e})")))?;
        self.charge(s.len() as u64, field)?;
        Ok(s.to_owned())
    }
}

/// `x` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    x.checked_add(mask).map(|v| v & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_bounds() {
        let buf = [1u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        let mut c = Cursor::new(&buf, Path::new("t"));
        assert_eq!(c.u32("a").unwrap(), 1);
        assert_eq!(c.u64("b").unwrap(), 2);
        assert!(c.u32("c").unwrap_err().to_string().contains("c: truncated"));
        assert_eq!(c.u8("d").unwrap(), 9);
        assert!(c.bytes(u64::MAX, "e").is_err());
        assert_eq!(align_up(33, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
    }

    #[test]
    fn huge_count_is_refused_before_allocating() {
        let mut buf = (1u64 << 60).to_le_bytes().to_vec();
        buf.extend([0u8; 64]);
        let mut c = Cursor::new(&buf, Path::new("t"));
        let e = c.count("tensor_count", 32).unwrap_err().to_string();
        assert!(e.contains("tensor_count") && e.contains("cannot fit"), "{e}");
    }
}
