//! Arbitrary bytes as the weights of a Hugging Face checkpoint: `models::hf::load_dir`
//! returns `Ok` or `Err` and never panics, and while loading never holds more heap than a
//! small multiple of the bytes on disk (f16 → f32 doubles a tensor; the slack covers the
//! model's bookkeeping), so no size is ever taken from an unchecked header value. A model
//! that loads also runs one forward pass.
//!
//! The directory (one per process, under the temp dir) always holds the same valid
//! `config.json`: the golden LLaMA checkpoint's (`models/testdata/hf/llama`). The input:
//! - byte 0, `mode`; bit 0 clear: the rest is `model.safetensors`;
//! - bit 0 set: sharded. The rest is `split: u32 LE` then bytes; shard 1
//!   (`model-00001-of-00002.safetensors`) is the first `split` of them, shard 2 the rest.
//!   `model.safetensors.index.json` maps every tensor the config needs to shard 1, or
//!   (bit 1) alternately to shards 1 and 2; bit 2 adds an entry naming a shard that does not
//!   exist, bit 3 one naming a path outside the directory; with bit 4 the index is not
//!   generated: shard 2's bytes are the index text and only shard 1 is written.
//!
//! Run from `fuzz/`: `cargo +nightly-2026-05-20 fuzz run safetensors_load`. Seed it with the
//! golden checkpoint, whole (mode 0) and as a one-shard index (mode 1, split = its length):
//! ```sh
//! mkdir -p corpus/safetensors_load
//! st=../models/testdata/hf/llama/model.safetensors
//! (printf '\000'; cat $st) > corpus/safetensors_load/llama-single
//! python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(b"\x01"+struct.pack("<I",len(d))+d)' $st > corpus/safetensors_load/llama-index
//! ```
//! (the corpus directory is git-ignored; libFuzzer takes `-max_len` from the largest seed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use models::arch::SeqStep;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

const CONFIG: &str = include_str!("../../models/testdata/hf/llama/config.json");
const LAYERS: usize = 2;
const SHARDS: [&str; 2] = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
/// Heap the loader may hold beyond 4 × the bytes on disk.
const SLACK: usize = 4 << 20;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout (GlobalAlloc's contract).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// This process's checkpoint directory, with `config.json` written once.
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("inflight-fuzz-safetensors-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        std::fs::write(d.join("config.json"), CONFIG).expect("config.json");
        d
    })
}

/// Every tensor the fixed config needs.
fn tensor_names() -> Vec<String> {
    let mut names = vec!["model.embed_tokens.weight".to_owned(), "model.norm.weight".to_owned(), "lm_head.weight".to_owned()];
    let per_layer = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
    for i in 0..LAYERS {
        names.extend(per_layer.iter().map(|t| format!("model.layers.{i}.{t}.weight")));
    }
    names
}

/// The generated `model.safetensors.index.json` for `mode`.
fn index_json(mode: u8) -> String {
    let mut map = serde_json::Map::new();
    for (i, name) in tensor_names().into_iter().enumerate() {
        let shard = if mode & 2 != 0 { SHARDS[i % 2] } else { SHARDS[0] };
        map.insert(name, shard.into());
    }
    if mode & 4 != 0 {
        map.insert("extra.missing".into(), "model-00003-of-00003.safetensors".into());
    }
    if mode & 8 != 0 {
        map.insert("extra.escape".into(), "../escape.safetensors".into());
    }
    serde_json::json!({ "metadata": {}, "weight_map": map }).to_string()
}

/// Writes the checkpoint files the input describes; returns the bytes written.
fn write_checkpoint(d: &Path, data: &[u8]) -> usize {
    for f in SHARDS.iter().chain(&["model.safetensors", "model.safetensors.index.json"]) {
        let _ = std::fs::remove_file(d.join(f));
    }
    let Some((&mode, rest)) = data.split_first() else { return 0 };
    if mode & 1 == 0 {
        std::fs::write(d.join("model.safetensors"), rest).expect("write");
        return rest.len();
    }
    let (split, bytes) = match rest.split_first_chunk::<4>() {
        Some((s, b)) => (u32::from_le_bytes(*s) as usize, b),
        None => (0, rest),
    };
    let (one, two) = bytes.split_at(split.min(bytes.len()));
    let index = if mode & 16 != 0 { two.to_vec() } else { index_json(mode).into_bytes() };
    std::fs::write(d.join(SHARDS[0]), one).expect("write");
    if mode & 16 == 0 {
        std::fs::write(d.join(SHARDS[1]), two).expect("write");
    }
    std::fs::write(d.join("model.safetensors.index.json"), &index).expect("write");
    bytes.len() + index.len()
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let on_disk = write_checkpoint(d, data);
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let loaded = models::hf::load_dir(d);
    let held = PEAK.load(Relaxed).saturating_sub(base);
    assert!(held <= 4 * on_disk + SLACK, "loading {on_disk} bytes held {held} bytes of heap");
    if let Ok(model) = loaded {
        let mut cache = model.new_cache();
        let out = model.forward(&mut [SeqStep { tokens: &[1, 2], cache: &mut cache }], false);
        assert_eq!(out[0].len(), model.config().vocab_size);
    }
});
