//! GPT-2 beyond the transformers golden (`hf_golden.rs`): a GGUF built from the golden
//! checkpoint gives the safetensors path's logits exactly; the checkpoint without the
//! `transformer.` prefix or with an untied head loads the same model; the paged store
//! matches contiguous caches; positions past `n_positions` never index out of bounds; bad
//! checkpoints are refused with an error naming the file and the field.

use models::arch::{Model, PagedKv, SeqInput, SeqStep};
use models::gguf::{Array, GgufFile, GgufWriter, Value};
use models::hf::SafetensorsDir;
use models::load::WeightFormat;
use quant::GgmlType;
use safetensors::{tensor::TensorView, Dtype};
use std::path::{Path, PathBuf};

const PROMPTS: [&[u32]; 3] = [&[1, 5, 9, 200, 17], &[7], &[300, 300, 300, 12, 13, 14, 15, 16, 17, 18]];
const LAYERS: usize = 2;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/hf/gpt2")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("inflight-gpt2-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The golden checkpoint's tensors: name, shape, f32 values (in file order of names).
fn golden_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(golden_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| (name, v.shape().to_vec(), v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `tensors` as `dir/model.safetensors` (f32).
fn write_safetensors(dir: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| f32_bytes(&t.2)).collect();
    let views: Vec<(String, TensorView)> = tensors.iter().zip(&bytes).map(|(t, b)| (t.0.clone(), TensorView::new(Dtype::F32, t.1.clone(), b).unwrap())).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A copy of the golden checkpoint in a scratch dir, with `config.json` edited by `cfg` and
/// the tensors by `edit`.
fn variant(name: &str, cfg: impl Fn(String) -> String, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> PathBuf {
    let d = scratch(name);
    let text = std::fs::read_to_string(golden_dir().join("config.json")).unwrap();
    std::fs::write(d.join("config.json"), cfg(text)).unwrap();
    let mut t = golden_tensors();
    edit(&mut t);
    write_safetensors(&d, &t);
    d
}

/// Logits of every position of every prompt, each prompt alone.
fn logits(m: &Model) -> Vec<f32> {
    let mut out = Vec::new();
    for p in PROMPTS {
        let mut cache = m.new_cache();
        out.extend(m.forward(&mut [SeqStep { tokens: p, cache: &mut cache }], true).remove(0));
    }
    out
}

fn golden_model() -> Model {
    models::hf::load_dir(&golden_dir()).unwrap()
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| w[r * cols + c])).collect()
}

/// The golden checkpoint as a llama.cpp-style `gpt2` GGUF (Conv1D weights transposed to
/// `[out][in]`, GGUF dims fastest first); with `output` an explicit LM head.
fn gguf_from_hf(output: bool) -> GgufWriter {
    let st = SafetensorsDir::open(&golden_dir()).unwrap();
    let get = |n: &str, shape: &[usize]| st.tensor_f32(&format!("transformer.{n}"), shape).unwrap();
    let (h, ff, vocab, ctx) = (64usize, 176usize, 384usize, 256usize);
    let mut w = GgufWriter::new();
    let tokens: Vec<String> = (0..vocab).map(|i| format!("t{i}")).collect();
    w.kv("general.architecture", Value::String("gpt2".into()))
        .kv("gpt2.context_length", Value::U32(ctx as u32))
        .kv("gpt2.embedding_length", Value::U32(h as u32))
        .kv("gpt2.block_count", Value::U32(LAYERS as u32))
        .kv("gpt2.feed_forward_length", Value::U32(ff as u32))
        .kv("gpt2.attention.head_count", Value::U32(4))
        .kv("gpt2.attention.layer_norm_epsilon", Value::F32(1e-5))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv("tokenizer.ggml.tokens", Value::Array(Array::String(tokens.iter().map(String::as_str).collect())));
    let mut put = |name: &str, dims: &[u64], data: Vec<f32>| {
        w.tensor(name, dims, GgmlType::F32, f32_bytes(&data));
    };
    let wte = get("wte.weight", &[vocab, h]);
    put("token_embd.weight", &[h as u64, vocab as u64], wte.clone());
    put("position_embd.weight", &[h as u64, ctx as u64], get("wpe.weight", &[ctx, h]));
    for i in 0..LAYERS {
        let (p, b) = (format!("h.{i}"), format!("blk.{i}"));
        let conv = |n: &str, inp: usize, out: usize| transpose(&get(&format!("{p}.{n}.weight"), &[inp, out]), inp, out);
        for (ours, theirs, inp, out) in [("attn_qkv", "attn.c_attn", h, 3 * h), ("attn_output", "attn.c_proj", h, h), ("ffn_up", "mlp.c_fc", h, ff), ("ffn_down", "mlp.c_proj", ff, h)] {
            put(&format!("{b}.{ours}.weight"), &[inp as u64, out as u64], conv(theirs, inp, out));
            put(&format!("{b}.{ours}.bias"), &[out as u64], get(&format!("{p}.{theirs}.bias"), &[out]));
        }
        for (ours, theirs) in [("attn_norm", "ln_1"), ("ffn_norm", "ln_2")] {
            for part in ["weight", "bias"] {
                put(&format!("{b}.{ours}.{part}"), &[h as u64], get(&format!("{p}.{theirs}.{part}"), &[h]));
            }
        }
    }
    for part in ["weight", "bias"] {
        put(&format!("output_norm.{part}"), &[h as u64], get(&format!("ln_f.{part}"), &[h]));
    }
    if output {
        put("output.weight", &[h as u64, vocab as u64], wte);
    }
    w
}

fn load_gguf(w: &GgufWriter, format: WeightFormat) -> Result<Model, models::error::LoadError> {
    let f = GgufFile::from_bytes(w.to_bytes(), "gpt2.gguf")?;
    models::load::gguf::load_model(&f, Path::new("gpt2.gguf"), format)
}

#[test]
fn gguf_gives_the_safetensors_logits() {
    let want = logits(&golden_model());
    for output in [false, true] {
        for format in [WeightFormat::F32, WeightFormat::Native] {
            let m = load_gguf(&gguf_from_hf(output), format).unwrap();
            assert!(matches!(m, Model::Gpt2(_)));
            assert_eq!(m.config().tied_embeddings, !output);
            assert_eq!(logits(&m), want, "output tensor {output}, {format:?}");
        }
    }
}

#[test]
fn load_path_dispatches_gguf_on_general_architecture() {
    let d = scratch("load-path");
    let path = d.join("tiny-gpt2.gguf");
    std::fs::write(&path, gguf_from_hf(false).to_bytes()).unwrap();
    let (m, _tok) = models::load::load_path(&path, WeightFormat::F32).unwrap();
    assert!(matches!(m, Model::Gpt2(_)), "{:?}", m.config().arch);
    assert_eq!(m.config().max_position, 256);
    assert_eq!(logits(&m), logits(&golden_model()));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn load_path_dispatches_a_hf_dir_on_model_type() {
    let d = variant("hf-dir", |c| c, |_| {});
    let vocab: serde_json::Map<String, serde_json::Value> = (0..384).map(|i| (format!("t{i}"), i.into())).collect();
    let tok = serde_json::json!({"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}});
    std::fs::write(d.join("tokenizer.json"), tok.to_string()).unwrap();
    let (m, tok) = models::load::load_path(&d, WeightFormat::F32).unwrap();
    assert!(matches!(m, Model::Gpt2(_)));
    assert_eq!(tok.encode("t5 t9", false).unwrap(), vec![5, 9]);
    assert_eq!(logits(&m), logits(&golden_model()));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unprefixed_names_and_an_untied_head_load_the_same_model() {
    let want = logits(&golden_model());
    let bare = variant("bare", |c| c, |t| t.iter_mut().for_each(|x| x.0 = x.0.trim_start_matches("transformer.").to_owned()));
    assert_eq!(logits(&models::hf::load_dir(&bare).unwrap()), want);
    let untied = variant("untied", |c| c.replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"), |t| {
        let wte = t.iter().find(|x| x.0 == "transformer.wte.weight").unwrap().clone();
        t.push(("lm_head.weight".into(), wte.1, wte.2));
    });
    let m = models::hf::load_dir(&untied).unwrap();
    assert!(!m.config().tied_embeddings);
    assert_eq!(logits(&m), want);
    for d in [bare, untied] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_sharded_checkpoint_loads_the_same_model() {
    let d = scratch("sharded");
    std::fs::copy(golden_dir().join("config.json"), d.join("config.json")).unwrap();
    let tensors = golden_tensors();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut map = serde_json::Map::new();
    for (part, file) in [a, b].into_iter().zip(names) {
        let sub = d.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        write_safetensors(&sub, part);
        std::fs::rename(sub.join("model.safetensors"), d.join(file)).unwrap();
        map.extend(part.iter().map(|t| (t.0.clone(), file.into())));
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits(&models::hf::load_dir(&d).unwrap()), logits(&golden_model()));
    // The same tensor in both shards is refused.
    write_safetensors(&d, &tensors[..1]);
    std::fs::rename(d.join("model.safetensors"), d.join(names[1])).unwrap();
    let e = models::hf::load_dir(&d).unwrap_err().to_string();
    assert!(e.contains(names[1]) && e.contains("more than one shard"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn paged_store_matches_contiguous_caches() {
    let m = golden_model();
    let want: Vec<Vec<f32>> = PROMPTS.iter().map(|p| m.forward(&mut [SeqStep { tokens: p, cache: &mut m.new_cache() }], true).remove(0)).collect();
    let c = m.config();
    let mut kv = PagedKv::new(12, 4, c.layers, m.kv_row());
    for b in 0..12 {
        kv.block_mut(b).fill(f32::NAN);
    }
    let tables: [&[u32]; 3] = [&[7, 2], &[5], &[11, 1, 9]];
    // Prompt minus its last token as one batch, then the last tokens as a decode step.
    let head: Vec<SeqInput> = PROMPTS.iter().map(|p| SeqInput { tokens: &p[..p.len() - 1], start: 0 }).collect();
    let first = m.forward_kv(&head, &mut kv.view(tables.to_vec()), true);
    let tail: Vec<SeqInput> = PROMPTS.iter().map(|p| SeqInput { tokens: &p[p.len() - 1..], start: p.len() - 1 }).collect();
    let last = m.forward_kv(&tail, &mut kv.view(tables.to_vec()), true);
    for i in 0..PROMPTS.len() {
        let got: Vec<f32> = first[i].iter().chain(&last[i]).copied().collect();
        let err = got.iter().zip(&want[i]).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err < 1e-4, "sequence {i}: {err}");
    }
}

#[test]
fn positions_past_n_positions_do_not_index_out_of_bounds() {
    let m = golden_model();
    let n = m.config().max_position;
    assert_eq!(n, 256);
    let mut kv = PagedKv::new(70, 4, m.config().layers, m.kv_row());
    let table: Vec<u32> = (1..70).collect();
    let out = m.forward_kv(&[SeqInput { tokens: &[5, 6, 7], start: n - 1 }], &mut kv.view(vec![&table]), true);
    assert_eq!(out[0].len(), 3 * m.config().vocab_size);
    assert!(out[0].iter().all(|v| v.is_finite()));
}

fn err_of(d: &Path) -> String {
    let e = models::hf::load_dir(d).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(d);
    e
}

#[test]
fn bad_checkpoints_name_the_file_and_field() {
    let e = err_of(&variant("missing", |c| c, |t| t.retain(|x| x.0 != "transformer.h.1.mlp.c_fc.bias")));
    assert!(e.contains("model.safetensors") && e.contains("transformer.h.1.mlp.c_fc.bias") && e.contains("missing"), "{e}");
    let e = err_of(&variant("shape", |c| c.replace("\"n_inner\": 176", "\"n_inner\": 160"), |_| {}));
    assert!(e.contains("model.safetensors") && e.contains("transformer.h.0.mlp.c_fc.weight") && e.contains("[64, 176]") && e.contains("[64, 160]"), "{e}");
    let e = err_of(&variant("act", |c| c.replace("gelu_new", "relu"), |_| {}));
    assert!(e.contains("config.json") && e.contains("activation_function") && e.contains("relu"), "{e}");
    let e = err_of(&variant("heads", |c| c.replace("\"n_head\": 4", "\"n_head\": 5"), |_| {}));
    assert!(e.contains("config.json") && e.contains("n_head"), "{e}");
    let e = err_of(&variant("scale", |c| c.replace("\"scale_attn_by_inverse_layer_idx\": false", "\"scale_attn_by_inverse_layer_idx\": true"), |_| {}));
    assert!(e.contains("config.json") && e.contains("scale_attn_by_inverse_layer_idx"), "{e}");
    let e = err_of(&variant("untied-no-head", |c| c.replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"), |_| {}));
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");
    // The LLaMA-only loader refuses GPT-2 by name.
    let e = models::hf::load_llama_dir(&golden_dir()).unwrap_err().to_string();
    assert!(e.contains("model_type") && e.contains("gpt2"), "{e}");
}

#[test]
fn gelu_erf_and_null_n_inner_are_read_from_config_json() {
    let text = std::fs::read_to_string(golden_dir().join("config.json")).unwrap();
    let text = text.replace("gelu_new", "gelu").replace("\"n_inner\": 176", "\"n_inner\": null");
    let c = models::hf::config_from_json(&text, Path::new("config.json")).unwrap();
    assert_eq!(c.activation, models::config::Activation::GeluErf);
    assert_eq!(c.intermediate, 4 * 64);
    let c = models::hf::config_from_json(&text.replace("\"gelu\"", "\"gelu_pytorch_tanh\""), Path::new("config.json")).unwrap();
    assert_eq!(c.activation, models::config::Activation::GeluTanh);
}

/// The good GGUF with only the metadata keys and tensors `keep` accepts.
fn gguf_without(keep: impl Fn(&str) -> bool) -> GgufWriter {
    let f = GgufFile::from_bytes(gguf_from_hf(false).to_bytes(), "x.gguf").unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata().iter().filter(|(k, _)| keep(k)) {
        w.kv(k, v.clone());
    }
    for t in f.tensors().iter().filter(|t| keep(&t.name)) {
        w.tensor(&t.name, &t.dims, t.ty, f.tensor_data(t).to_vec());
    }
    w
}

#[test]
fn bad_gguf_files_name_the_key_or_tensor() {
    let e = load_gguf(&gguf_without(|k| k != "gpt2.attention.layer_norm_epsilon"), WeightFormat::F32).unwrap_err().to_string();
    assert!(e.contains("gpt2.gguf") && e.contains("gpt2.attention.layer_norm_epsilon"), "{e}");
    let mut w = gguf_without(|k| k != "gpt2.attention.head_count");
    w.kv("gpt2.attention.head_count", Value::U32(5));
    let e = load_gguf(&w, WeightFormat::F32).unwrap_err().to_string();
    assert!(e.contains("gpt2.attention.head_count") && e.contains("does not divide"), "{e}");
    let e = load_gguf(&gguf_without(|k| k != "blk.1.ffn_down.bias"), WeightFormat::Native).unwrap_err().to_string();
    assert!(e.contains("blk.1.ffn_down.bias") && e.contains("missing"), "{e}");
    let e = load_gguf(&gguf_without(|k| k != "position_embd.weight"), WeightFormat::F32).unwrap_err().to_string();
    assert!(e.contains("position_embd.weight") && e.contains("missing"), "{e}");
}
