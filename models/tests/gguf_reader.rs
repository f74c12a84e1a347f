//! GGUF reader: round trips of files built by `GgufWriter`, one test per malformed case
//! (each checking the error names the field, key or tensor), and the real SmolLM2 file
//! when it has been downloaded.

use models::gguf::{Array, GgufFile, GgufWriter, StrArray, Value};
use quant::GgmlType;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Two Q8_0 blocks: scale 0.5 (f16 0x3800) and quants 0..32, then scale 1 (0x3c00) and -1s.
fn q8_0_blocks() -> Vec<u8> {
    let mut b = vec![0x00, 0x38];
    b.extend((0..32).map(|i| i as u8));
    b.extend([0x00, 0x3c]);
    b.extend([0xff; 32]);
    b
}

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(2))
        .kv("llama.context_length", Value::U64(2048))
        .kv("small", Value::U8(7))
        .kv("neg", Value::I8(-3))
        .kv("i16", Value::I16(-300))
        .kv("u16", Value::U16(60000))
        .kv("i64", Value::I64(-5))
        .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .kv("f64", Value::F64(0.25))
        .kv("flag", Value::Bool(true))
        .kv("tokenizer.ggml.tokens", Value::Array(Array::String(["<s>", "a", "", "héllo"].into_iter().collect())))
        .kv("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0, -1.5, 2.0, 3.0])))
        .kv("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![3, 1, 1, -1])))
        .kv("u32s", Value::Array(Array::U32(vec![1, 2, u32::MAX])))
        .kv("bools", Value::Array(Array::Bool(vec![true, false])))
        .kv("nested", Value::Array(Array::Array(vec![Array::U8(vec![1, 2]), Array::String(["x"].into_iter().collect()), Array::Array(vec![])])))
        .tensor("a.weight", &[4, 2], GgmlType::F32, f32_bytes(&[1., 2., 3., 4., 5., 6., 7., 8.]))
        .tensor("q.weight", &[64], GgmlType::Q8_0, q8_0_blocks())
        .tensor("b", &[3], GgmlType::F32, f32_bytes(&[-1., 0., 1.]));
    w
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, String> {
    GgufFile::from_bytes(bytes, "test.gguf").map_err(|e| e.to_string())
}

/// Parses `bytes`, expecting an error whose message contains every one of `parts`.
fn expect_err(bytes: Vec<u8>, parts: &[&str]) -> String {
    let e = match parse(bytes) {
        Ok(f) => panic!("parsed a malformed file: {f:?}"),
        Err(e) => e,
    };
    assert!(e.starts_with("test.gguf: "), "error does not name the file: {e}");
    for p in parts {
        assert!(e.contains(p), "error {e:?} does not mention {p:?}");
    }
    e
}

#[test]
fn round_trip_all_value_kinds_and_tensors() {
    for version in [2, 3] {
        let mut w = sample();
        w.version(version);
        let f = GgufFile::from_bytes(w.to_bytes(), "test.gguf").unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.alignment(), 32);
        assert_eq!(f.data_start() % 32, 0);
        assert_eq!(f.metadata().len(), 17);
        assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
        assert_eq!(f.get_u32("llama.context_length").unwrap(), 2048, "u64 that fits");
        assert_eq!(f.get_u32("small").unwrap(), 7);
        assert_eq!(f.get_i32("neg").unwrap(), -3);
        assert_eq!(f.get("i16"), Some(&Value::I16(-300)));
        assert_eq!(f.get_u32("u16").unwrap(), 60000);
        assert_eq!(f.get_u64("u16").unwrap(), 60000);
        assert_eq!(f.get_i32("i64").unwrap(), -5);
        assert_eq!(f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-5);
        assert_eq!(f.get_f32("f64").unwrap(), 0.25);
        assert!(f.get_bool("flag").unwrap());
        let toks: &StrArray = f.get_str_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(toks.to_vec(), ["<s>", "a", "", "héllo"]);
        assert_eq!(toks.get(3), Some("héllo"));
        assert_eq!(toks.get(4), None);
        assert_eq!(f.get_f32_array("tokenizer.ggml.scores").unwrap(), &[0.0, -1.5, 2.0, 3.0]);
        assert_eq!(f.get_i32_array("tokenizer.ggml.token_type").unwrap(), [3, 1, 1, -1]);
        assert_eq!(f.get("bools"), Some(&Value::Array(Array::Bool(vec![true, false]))));
        let Some(Value::Array(Array::Array(nested))) = f.get("nested") else { panic!("nested") };
        assert_eq!(nested.len(), 3);
        assert_eq!(nested[0], Array::U8(vec![1, 2]));
        assert!(f.get("missing").is_none());
        // Everything the writer wrote comes back in order.
        let w = sample();
        let again = GgufFile::from_bytes(w.to_bytes(), "x").unwrap();
        for ((k1, v1), (k2, v2)) in f.metadata().iter().zip(again.metadata()) {
            assert_eq!((k1, v1), (k2, v2));
        }

        assert_eq!(f.tensors().len(), 3);
        let a = f.tensor("a.weight").unwrap();
        assert_eq!((a.dims.as_slice(), a.ty, a.offset, a.n_elements(), a.n_bytes()), (&[4u64, 2][..], GgmlType::F32, 0, 8, 32));
        assert_eq!(f.tensor_data(a), f32_bytes(&[1., 2., 3., 4., 5., 6., 7., 8.]));
        let q = f.tensor("q.weight").unwrap();
        assert_eq!((q.ty, q.offset, q.n_elements(), q.n_bytes()), (GgmlType::Q8_0, 32, 64, 68));
        assert_eq!(f.tensor_data(q), q8_0_blocks());
        let b = f.tensor("b").unwrap();
        assert_eq!(b.offset, 128);
        assert_eq!(f.tensor_data(b), f32_bytes(&[-1., 0., 1.]));
        assert!(f.tensor("nope").is_none());
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a.weight", "q.weight", "b"], "file order");
    }
}

#[test]
fn custom_alignment_and_empty_file_parts() {
    let mut w = sample();
    w.alignment(64);
    let f = parse(w.to_bytes()).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.tensor("q.weight").unwrap().offset, 64);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), f32_bytes(&[-1., 0., 1.]));
    // No metadata and no tensors: the header alone is a valid file.
    let f = parse(GgufWriter::new().to_bytes()).unwrap();
    assert!(f.metadata().is_empty() && f.tensors().is_empty());
}

#[test]
fn open_maps_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("inflight-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.gguf");
    std::fs::write(&good, sample().to_bytes()).unwrap();
    let f = GgufFile::open(&good).unwrap();
    assert_eq!(f.path(), good);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), f32_bytes(&[-1., 0., 1.]));
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"").unwrap();
    let e = GgufFile::open(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.gguf") && e.contains("magic"), "{e}");
    let e = GgufFile::open(&dir.join("missing.gguf")).unwrap_err().to_string();
    assert!(e.contains("missing.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn typed_getters_name_key_and_types() {
    let mut w = sample();
    w.kv("big", Value::U64(1 << 40)).kv("minus", Value::I32(-1));
    let f = parse(w.to_bytes()).unwrap();
    let e = |r: Result<String, models::error::LoadError>| r.unwrap_err().to_string();
    let s = e(f.get_u32("general.architecture").map(|v| v.to_string()));
    assert!(s.contains("general.architecture") && s.contains("expected u32") && s.contains("found string"), "{s}");
    let s = e(f.get_u32("big").map(|v| v.to_string()));
    assert!(s.contains("big: value 1099511627776 does not fit in u32"), "{s}");
    let s = e(f.get_u32("minus").map(|v| v.to_string()));
    assert!(s.contains("minus: value -1 does not fit"), "{s}");
    let s = e(f.get_str("nowhere").map(str::to_owned));
    assert!(s.contains("nowhere: metadata key missing"), "{s}");
    let s = e(f.get_f32("flag").map(|v| v.to_string()));
    assert!(s.contains("flag: expected f32, found bool"), "{s}");
    let s = e(f.get_bool("small").map(|v| v.to_string()));
    assert!(s.contains("small: expected bool, found u8"), "{s}");
    let s = e(f.get_str_array("tokenizer.ggml.scores").map(|v| v.len().to_string()));
    assert!(s.contains("expected array of string, found array of f32"), "{s}");
    let s = e(f.get_i32_array("tokenizer.ggml.tokens").map(|v| v.len().to_string()));
    assert!(s.contains("found array of string"), "{s}");
    let s = e(f.get_i32_array("u32s").map(|v| v.len().to_string()));
    assert!(s.contains("u32s: element 2 = 4294967295 does not fit in i32"), "{s}");
    let s = e(f.get_str_array("flag").map(|v| v.len().to_string()));
    assert!(s.contains("flag: expected array, found bool"), "{s}");
}

// ---- Hand-made malformed files ----------------------------------------------------------

/// Raw GGUF pieces for files the writer cannot make.
fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}
fn string(b: &mut Vec<u8>, s: &[u8]) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s);
}
fn kv(b: &mut Vec<u8>, key: &[u8], type_id: u32, value: &[u8]) {
    string(b, key);
    b.extend(type_id.to_le_bytes());
    b.extend(value);
}
fn tensor_info(b: &mut Vec<u8>, name: &str, dims: &[u64], type_id: u32, offset: u64) {
    string(b, name.as_bytes());
    b.extend((dims.len() as u32).to_le_bytes());
    dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
    b.extend(type_id.to_le_bytes());
    b.extend(offset.to_le_bytes());
}
/// Pads to 32 and appends `data_len` bytes of data.
fn data(mut b: Vec<u8>, data_len: usize) -> Vec<u8> {
    b.resize(b.len().next_multiple_of(32) + data_len, 0x11);
    b
}
/// A file with the given tensor infos (all F32 unless said) and `data_len` bytes of data.
fn tensors_file(infos: &[(&str, &[u64], u32, u64)], data_len: usize) -> Vec<u8> {
    let mut b = header(3, infos.len() as u64, 0);
    for (n, d, t, o) in infos {
        tensor_info(&mut b, n, d, *t, *o);
    }
    data(b, data_len)
}

#[test]
fn bad_magic() {
    let mut b = sample().to_bytes();
    b[3] = b'X';
    expect_err(b, &["magic", "GGUX"]);
    expect_err(vec![], &["magic", "truncated"]);
}

#[test]
fn unsupported_versions_say_which_are_supported() {
    for v in [0, 1, 4, 0x7fff_ffff] {
        let mut w = sample();
        w.version(v);
        expect_err(w.to_bytes(), &["GGUF version", &v.to_string(), "supported: 2, 3"]);
    }
    expect_err(header(3u32.swap_bytes(), 0, 0), &["big-endian"]);
}

#[test]
fn every_truncation_is_an_error() {
    let full = sample().to_bytes();
    for len in 0..full.len() {
        let e = parse(full[..len].to_vec()).expect_err(&format!("prefix of {len} bytes parsed"));
        assert!(e.contains("truncated") || e.contains("cannot fit") || e.contains("outside the file"), "len {len}: {e}");
    }
    expect_err(full[..10].to_vec(), &["tensor_count", "truncated"]);
    expect_err(full[..20].to_vec(), &["metadata_kv_count", "truncated"]);
}

#[test]
fn huge_counts_fail_before_allocating() {
    expect_err(data(header(3, 1 << 60, 0), 64), &["tensor_count", "cannot fit"]);
    expect_err(data(header(3, u64::MAX, 0), 64), &["tensor_count", "cannot fit"]);
    expect_err(data(header(3, 0, 1 << 60), 64), &["metadata_kv_count", "cannot fit"]);
    // An array claiming 2^60 elements.
    let mut b = header(3, 0, 1);
    string(&mut b, b"arr");
    b.extend(9u32.to_le_bytes());
    b.extend(4u32.to_le_bytes());
    b.extend((1u64 << 60).to_le_bytes());
    expect_err(data(b, 64), &["arr", "cannot fit"]);
}

#[test]
fn string_lengths_past_the_end() {
    let mut b = header(3, 0, 1);
    b.extend(u64::MAX.to_le_bytes());
    b.extend([0; 16]);
    expect_err(b, &["metadata key #0", "truncated"]);
    let mut b = header(3, 0, 1);
    string(&mut b, b"general.name");
    b.extend(8u32.to_le_bytes());
    b.extend(1000u64.to_le_bytes());
    b.extend(b"short");
    expect_err(b, &["general.name", "truncated"]);
    let mut b = header(3, 1, 0);
    b.extend((1u64 << 62).to_le_bytes());
    b.extend([0; 40]);
    expect_err(b, &["tensor #0 name", "truncated"]);
}

#[test]
fn strings_must_be_utf8() {
    let mut b = header(3, 0, 1);
    let mut v = Vec::new();
    string(&mut v, b"\xff\xfe");
    kv(&mut b, b"general.name", 8, &v);
    expect_err(b, &["general.name", "not UTF-8"]);
    let mut b = header(3, 0, 1);
    kv(&mut b, b"bad\xc0key", 4, &1u32.to_le_bytes());
    expect_err(b, &["metadata key #0", "not UTF-8"]);
    let mut b = header(3, 0, 1);
    let mut v = 8u32.to_le_bytes().to_vec();
    v.extend(2u64.to_le_bytes());
    string(&mut v, b"ok");
    string(&mut v, b"\x80");
    kv(&mut b, b"tokenizer.ggml.tokens", 9, &v);
    expect_err(b, &["tokenizer.ggml.tokens", "element 1", "not UTF-8"]);
    let b = tensors_file(&[("\u{1F600}", &[1], 0, 0)], 4);
    parse(b).unwrap();
    let mut b = header(3, 1, 0);
    string(&mut b, b"t\xff");
    expect_err(data(b, 32), &["tensor #0 name", "not UTF-8"]);
}

#[test]
fn unknown_value_types_name_the_key() {
    let mut b = header(3, 0, 1);
    kv(&mut b, b"weird", 13, &[0; 8]);
    expect_err(b, &["weird", "unknown value type id 13"]);
    let mut b = header(3, 0, 1);
    let mut v = 99u32.to_le_bytes().to_vec();
    v.extend(0u64.to_le_bytes());
    kv(&mut b, b"arr", 9, &v);
    expect_err(b, &["arr", "unknown value type id 99"]);
}

#[test]
fn bad_bools_are_refused() {
    let mut b = header(3, 0, 1);
    kv(&mut b, b"flag", 7, &[2]);
    expect_err(b, &["flag", "bool byte is 2"]);
    let mut b = header(3, 0, 1);
    let mut v = 7u32.to_le_bytes().to_vec();
    v.extend(3u64.to_le_bytes());
    v.extend([1, 0, 7]);
    kv(&mut b, b"flags", 9, &v);
    expect_err(b, &["flags", "element 2: bool byte is 7"]);
}

#[test]
fn array_nesting_is_limited() {
    let nested = |depth: usize| {
        let mut v = Vec::new();
        for _ in 0..depth - 1 {
            v.extend(9u32.to_le_bytes());
            v.extend(1u64.to_le_bytes());
        }
        v.extend(0u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        let mut b = header(3, 0, 1);
        kv(&mut b, b"deep", 9, &v);
        b
    };
    parse(nested(models::gguf::MAX_ARRAY_DEPTH as usize)).unwrap();
    expect_err(nested(models::gguf::MAX_ARRAY_DEPTH as usize + 1), &["deep", "nested deeper"]);
    expect_err(nested(100_000), &["deep", "nested deeper"]);
}

#[test]
fn unknown_ggml_type_names_the_tensor() {
    expect_err(tensors_file(&[("blk.0.attn_q.weight", &[32], 4, 0)], 128), &["blk.0.attn_q.weight", "ggml type", "unknown id 4"]);
    expect_err(tensors_file(&[("t", &[32], 1000, 0)], 128), &["tensor t", "unknown id 1000"]);
}

#[test]
fn bad_dims_name_the_tensor() {
    expect_err(tensors_file(&[("five", &[1, 1, 1, 1, 1], 0, 0)], 32), &["five", "n_dims is 5"]);
    expect_err(tensors_file(&[("none", &[], 0, 0)], 32), &["none", "n_dims is 0"]);
    expect_err(tensors_file(&[("zero", &[4, 0], 0, 0)], 32), &["zero", "dims[1] is 0"]);
    expect_err(tensors_file(&[("neg", &[u64::MAX], 0, 0)], 32), &["neg", "dims[0]"]);
    expect_err(tensors_file(&[("ovf", &[1 << 32, 1 << 32], 0, 0)], 32), &["ovf", "overflows"]);
    expect_err(tensors_file(&[("ovf2", &[1 << 31, 1 << 31, 4], 0, 0)], 32), &["ovf2", "overflows"]);
    // 2^62 F32 elements: the count fits an i64 but the byte size does not fit a u64.
    expect_err(tensors_file(&[("bytes", &[1 << 62], 0, 0)], 32), &["bytes", "overflows"]);
    // Not absurd but far larger than the file.
    expect_err(tensors_file(&[("huge", &[1 << 20, 1 << 20], 0, 0)], 32), &["huge", "outside the file"]);
}

#[test]
fn rows_must_be_whole_blocks() {
    expect_err(tensors_file(&[("q", &[33], 8, 0)], 64), &["q", "block size 32"]);
    expect_err(tensors_file(&[("q", &[16, 2], 8, 0)], 64), &["q", "dims[0] = 16", "Q8_0"]);
    expect_err(tensors_file(&[("k", &[128], 12, 0)], 256), &["k", "Q4_K", "256"]);
    parse(tensors_file(&[("q", &[32, 2], 8, 0)], 68)).unwrap();
}

#[test]
fn tensor_data_must_lie_in_the_file() {
    expect_err(tensors_file(&[("t", &[8], 0, 0)], 31), &["t", "outside the file"]);
    expect_err(tensors_file(&[("t", &[8], 0, 1 << 40)], 64), &["t", "outside the file"]);
    expect_err(tensors_file(&[("t", &[8], 0, u64::MAX - 31)], 64), &["t", "outside the file"]);
    parse(tensors_file(&[("t", &[8], 0, 0)], 32)).unwrap();
}

#[test]
fn offsets_must_be_aligned() {
    expect_err(tensors_file(&[("t", &[1], 0, 4)], 64), &["t", "offset 4", "alignment 32"]);
}

#[test]
fn overlapping_tensors_are_refused() {
    // b (32 bytes at 32) overlaps a (64 bytes at 0); listed out of order on purpose.
    let e = expect_err(tensors_file(&[("b", &[8], 0, 32), ("a", &[16], 0, 0)], 96), &["overlaps"]);
    assert!(e.contains("tensor a") && e.contains("b: data at offset 32"), "{e}");
    expect_err(tensors_file(&[("x", &[8], 0, 0), ("y", &[8], 0, 0)], 64), &["overlaps"]);
    parse(tensors_file(&[("b", &[8], 0, 32), ("a", &[8], 0, 0)], 64)).unwrap();
}

#[test]
fn duplicates_are_refused() {
    let mut w = sample();
    w.kv("llama.block_count", Value::U32(3));
    expect_err(w.to_bytes(), &["llama.block_count", "duplicate metadata key"]);
    let mut w = sample();
    w.tensor("q.weight", &[1], GgmlType::F32, vec![0; 4]);
    expect_err(w.to_bytes(), &["q.weight", "duplicate tensor name"]);
}

#[test]
fn alignment_must_be_a_power_of_two() {
    for a in [0u32, 3, 48] {
        let mut b = header(3, 0, 1);
        kv(&mut b, b"general.alignment", 4, &a.to_le_bytes());
        expect_err(b, &["general.alignment", "not a power of two"]);
    }
    let mut b = header(3, 0, 1);
    let mut v = Vec::new();
    string(&mut v, b"32");
    kv(&mut b, b"general.alignment", 8, &v);
    expect_err(b, &["general.alignment", "expected u32, found string"]);
    let mut b = header(3, 0, 1);
    kv(&mut b, b"general.alignment", 11, &(-32i64).to_le_bytes());
    expect_err(b, &["general.alignment", "does not fit in u32"]);
}

#[test]
fn metadata_needing_more_memory_than_the_file_is_refused() {
    // 5000 distinct one-byte values: 13-21 bytes each in the file, far more in memory.
    let mut b = header(3, 0, 5000);
    for i in 0..5000 {
        kv(&mut b, format!("{i}").as_bytes(), 0, &[1]);
    }
    expect_err(b, &["memory", "file size"]);
}

#[test]
fn real_smollm2_file() {
    let Some(home) = std::env::var_os("HOME") else { return println!("skipped: model not downloaded") };
    let path = std::path::Path::new(&home).join(".cache/inflight/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        return println!("skipped: model not downloaded ({})", path.display());
    }
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(f.tensors().len(), 272, "30 blocks x 9 + token_embd + output_norm");
    assert_eq!(f.tensor("token_embd.weight").unwrap().dims, [576, 49152]);
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes(), "{}", t.name);
    }
}
