//! Our safetensors loader and CPU forward against Hugging Face transformers: random-weight
//! checkpoints saved by `save_pretrained`, with transformers' f32 logits and greedy tokens
//! (made by `models/testdata/make_hf_golden.py`).

use models::arch::SeqStep;
use models::generate::{generate_batch, GenParams};
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/hf").join(name)
}

fn check(name: &str) {
    let d = dir(name);
    let model = models::hf::load_dir(&d).unwrap_or_else(|e| panic!("{name}: {e}"));
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("golden.json")).unwrap()).unwrap();
    let vocab = golden["vocab"].as_u64().unwrap() as usize;
    let bytes = std::fs::read(d.join("logits.f32")).unwrap();
    let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let prompts: Vec<Vec<u32>> = golden["prompts"].as_array().unwrap().iter().map(|p| p.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()).collect();
    let mut at = 0;
    for (pi, p) in prompts.iter().enumerate() {
        let mut cache = model.new_cache();
        let got = model.forward(&mut [SeqStep { tokens: p, cache: &mut cache }], true).remove(0);
        let w = &want[at * vocab..(at + p.len()) * vocab];
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        eprintln!("{name} prompt {pi}: relative logit error {err:.2e}");
        assert!(err <= 1e-4, "{name} prompt {pi}: max |logit error| / max |logit| = {err:.2e}");
        at += p.len();
    }
    assert_eq!(at * vocab, want.len(), "{name}: golden logits length");
    let params = GenParams { max_tokens: 32, temperature: 0.0, seed: 0, stop_ids: vec![] };
    let ours = generate_batch(&model, &prompts, &params, |_, _| {});
    for (pi, g) in golden["greedy"].as_array().unwrap().iter().enumerate() {
        let g: Vec<u32> = g.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        assert_eq!(ours[pi].token_ids, g, "{name} prompt {pi}: greedy tokens differ from transformers");
    }
}

#[test]
fn llama_with_llama3_rope_scaling_matches_transformers() {
    check("llama");
}

#[test]
fn llama_with_tied_embeddings_matches_transformers() {
    check("llama-tied");
}

#[test]
fn qwen2_with_qkv_bias_matches_transformers() {
    check("qwen2");
}

#[test]
fn gpt2_with_learned_positions_and_layer_norm_matches_transformers() {
    check("gpt2");
}

#[test]
fn bad_checkpoints_are_refused_with_the_file_and_field() {
    let tmp = std::env::temp_dir().join(format!("inflight-hf-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let src = dir("llama");
    std::fs::copy(src.join("config.json"), tmp.join("config.json")).unwrap();
    // No weights at all.
    let e = models::hf::load_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    // Truncated weights.
    let st = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let e = models::hf::load_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("header"), "{e}");
    // A header length far past the end of the file.
    let mut bad = st.clone();
    bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(tmp.join("model.safetensors"), &bad).unwrap();
    let e = models::hf::load_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("header"), "{e}");
    // Unknown architecture and a mistyped field.
    std::fs::write(tmp.join("model.safetensors"), &st).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(tmp.join("config.json"), cfg.replace("\"llama\"", "\"mamba\"")).unwrap();
    let e = models::hf::load_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("model_type") && e.contains("mamba"), "{e}");
    std::fs::write(tmp.join("config.json"), cfg.replace("\"hidden_size\": 64", "\"hidden_size\": \"64\"")).unwrap();
    let e = models::hf::load_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("hidden_size"), "{e}");
    // A shape that does not match the config.
    std::fs::write(tmp.join("config.json"), cfg.replace("\"intermediate_size\": 112", "\"intermediate_size\": 96")).unwrap();
    let e = models::hf::load_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("shape") && e.contains("mlp"), "{e}");
    // A shard index pointing outside the directory.
    std::fs::write(tmp.join("config.json"), &cfg).unwrap();
    std::fs::write(tmp.join("model.safetensors.index.json"), r#"{"weight_map": {"model.norm.weight": "../x.safetensors"}}"#).unwrap();
    let e = models::hf::load_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("index") && e.contains("../x.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}
