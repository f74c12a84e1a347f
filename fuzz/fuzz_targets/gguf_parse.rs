//! Arbitrary bytes as a GGUF file: parsing returns `Ok` or `Err` and never panics; on
//! success every tensor's data and every metadata value is read, and every lookup by name
//! finds what the listing shows. Run: `cargo +nightly fuzz run gguf_parse` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use models::gguf::{Array, GgufFile, Value};

fn touch_array(a: &Array) -> usize {
    match a {
        Array::String(s) => s.iter().map(str::len).sum(),
        Array::Array(v) => v.iter().map(touch_array).sum(),
        a => (0..a.len()).filter_map(|i| a.int_at(i)).count() + a.len(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
    let mut sink = 0usize;
    for t in f.tensors() {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes(), "{}", t.name);
        assert_eq!(t.offset % f.alignment(), 0);
        assert!(t.n_elements() > 0 && t.dims.len() <= 4);
        sink ^= d.iter().fold(0usize, |a, &b| a.wrapping_add(b as usize));
        assert_eq!(f.tensor(&t.name).map(|x| x.offset), Some(t.offset));
    }
    for (k, v) in f.metadata() {
        assert!(f.get(k).is_some(), "{k}");
        sink += match v {
            Value::String(s) => s.len(),
            Value::Array(a) => touch_array(a),
            v => format!("{v:?}").len(),
        };
    }
    std::hint::black_box(sink);
});
