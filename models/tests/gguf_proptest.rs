//! GGUF reader under random damage: truncations, byte flips and planted huge counts of a
//! valid file must parse to `Ok` or `Err`, never panic, and never allocate more than the
//! file's size plus a constant (measured with a per-thread counting allocator).

use models::gguf::{Array, GgufFile, GgufWriter, Value};
use proptest::prelude::*;
use quant::GgmlType;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

/// Counts the live and peak heap bytes of the current thread.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: forwards every call to the system allocator unchanged; the bookkeeping only
// touches const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the parse may allocate beyond the file's size (the reader's slack plus error text).
const SLACK: isize = 64 * 1024;

/// Parses `bytes`, asserting the peak heap use of the parse stays within the bound, and on
/// success reads every tensor's data and every metadata value.
fn check(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let len = bytes.len() as isize;
    let bytes: Arc<[u8]> = bytes.into();
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    let parsed = GgufFile::from_bytes(bytes, "fuzz.gguf");
    let peak = PEAK.with(|p| p.get());
    prop_assert!(peak <= len + SLACK, "parse of a {len}-byte file allocated {peak} bytes");
    match parsed {
        Ok(f) => {
            for t in f.tensors() {
                let d = f.tensor_data(t);
                prop_assert_eq!(d.len() as u64, t.n_bytes());
                prop_assert!(t.n_bytes() > 0 && t.offset % f.alignment() == 0);
                std::hint::black_box(d.iter().fold(0u8, |a, &b| a ^ b));
                prop_assert_eq!(f.tensor(&t.name).map(|x| &x.name), Some(&t.name));
            }
            for (k, v) in f.metadata() {
                prop_assert!(f.get(k).is_some());
                std::hint::black_box(format!("{v:?}"));
            }
        }
        Err(e) => prop_assert!(e.to_string().starts_with("fuzz.gguf: "), "{e}"),
    }
    Ok(())
}

fn base() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(2))
        .kv("eps", Value::F32(1e-5))
        .kv("flag", Value::Bool(true))
        .kv("tokens", Value::Array(Array::String(["<s>", "a", "bc", "héllo"].into_iter().collect())))
        .kv("types", Value::Array(Array::I32(vec![3, 1, 1, 1])))
        .kv("nested", Value::Array(Array::Array(vec![Array::U8(vec![1, 2]), Array::Bool(vec![true])])))
        .tensor("a", &[4, 2], GgmlType::F32, vec![1; 32])
        .tensor("q", &[32, 2], GgmlType::Q8_0, vec![2; 68])
        .tensor("h", &[2], GgmlType::F16, vec![3; 4]);
    w.to_bytes()
}

/// Values that make counts, lengths, offsets and dims interesting when planted.
fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(4),
        Just(13),
        Just(32),
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 60),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        0u64..512,
        any::<u64>(),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Plant(usize, u64, u8),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(p, x)| Edit::Flip(p, x)),
        3 => (any::<usize>(), interesting(), 1u8..=8).prop_map(|(p, v, w)| Edit::Plant(p, v, w)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if b.is_empty() {
            break;
        }
        let n = b.len();
        match *e {
            Edit::Flip(p, x) => b[p % n] ^= x,
            Edit::Plant(p, v, w) => {
                let p = p % n;
                for (i, byte) in v.to_le_bytes().iter().take(w as usize).enumerate() {
                    if let Some(slot) = b.get_mut(p + i) {
                        *slot = *byte;
                    }
                }
            }
            Edit::Truncate(p) => b.truncate(p % n),
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_files_never_panic_or_overallocate(edits in prop::collection::vec(edit(), 1..6)) {
        check(apply(base(), &edits))?;
    }

    #[test]
    fn damaged_headers_and_infos(edits in prop::collection::vec((0usize..400, interesting(), 1u8..=8).prop_map(|(p, v, w)| Edit::Plant(p, v, w)), 1..4)) {
        // Plants land in the header, metadata and tensor infos (the first 400 bytes).
        check(apply(base(), &edits))?;
    }

    #[test]
    fn random_bytes_after_a_valid_header(tail in prop::collection::vec(any::<u8>(), 0..600), n_t in 0u64..4, n_kv in 0u64..4) {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_t.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend(tail);
        check(b)?;
    }
}

#[test]
fn the_base_file_parses_within_the_bound() {
    check(base()).unwrap();
    let peak = PEAK.with(|p| p.get());
    assert!(peak > 1000, "the counting allocator saw only {peak} bytes");
    assert!(GgufFile::from_bytes(base(), "b").is_ok());
}

#[test]
fn worst_case_shapes_stay_within_the_bound() {
    let header = |n_kv: u64| {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    };
    let array_kv = |elem_type: u32, n: u64, body: &[u8]| {
        let mut b = header(1);
        b.extend(1u64.to_le_bytes());
        b.push(b'k');
        b.extend(9u32.to_le_bytes());
        b.extend(elem_type.to_le_bytes());
        b.extend(n.to_le_bytes());
        b.extend(body);
        b
    };
    // 200k empty strings: 8 file bytes each, a `String` would be 24.
    let n = 200_000u64;
    let f = array_kv(8, n, &vec![0u8; 8 * n as usize]);
    check(f.clone()).unwrap();
    assert_eq!(GgufFile::from_bytes(f, "x").unwrap().get_str_array("k").unwrap().len(), n as usize);
    // 100k empty nested arrays: 12 file bytes each.
    let body: Vec<u8> = (0..n / 2).flat_map(|_| [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).collect();
    check(array_kv(9, n / 2, &body)).unwrap();
    // 200k bools.
    check(array_kv(7, n, &vec![1u8; n as usize])).unwrap();
    // 50k tiny metadata entries.
    let mut b = header(50_000);
    for i in 0..50_000u32 {
        let k = format!("{i:05}");
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
        b.extend(0u32.to_le_bytes());
        b.push(0);
    }
    check(b).unwrap();
}
