//! End to end on the real SmolLM2-135M-Instruct GGUF (when cached; CI fetches it first):
//! greedy completion names Paris, and the native block-format weights (fused Q4_1/Q8_0
//! dots) give the same greedy tokens as weights dequantised to f32.

use host_runtime::sampling::SamplingParams;
use models::generate::GenParams;
use models::load::WeightFormat;
use models::Llm;

fn cached_model() -> Option<std::path::PathBuf> {
    let p = models::fetch::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

#[test]
fn smollm2_completes_paris_in_both_weight_formats() {
    let Some(path) = cached_model() else {
        println!("skipped: SmolLM2 not downloaded (run `cargo run --release -- generate --prompt hi`)");
        return;
    };
    let spec = path.to_string_lossy().into_owned();
    let native = Llm::load_with(&spec, WeightFormat::Native).unwrap();
    let f32w = Llm::load_with(&spec, WeightFormat::F32).unwrap();
    let params = SamplingParams { max_new_tokens: 6, temperature: 0.0, ..Default::default() };
    let a = native.generate(&["The capital of France is"], &params).unwrap().remove(0);
    let b = f32w.generate(&["The capital of France is"], &params).unwrap().remove(0);
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert_eq!(a.token_ids, b.token_ids, "native {:?} vs f32 {:?}", a.text, b.text);
}

/// Golden from Hugging Face transformers loading the same GGUF (its own dequantisation and
/// Q/K un-permuting; `models/testdata/make_smollm2_golden.py`, run on the GPU machine):
/// last-position f32 logits of 5 prompts within 1e-4 relative, 32 greedy tokens identical.
#[test]
fn smollm2_matches_transformers_logits_and_greedy_tokens() {
    let Some(path) = cached_model() else {
        println!("skipped: SmolLM2 not downloaded (run `cargo run --release -- generate --prompt hi`)");
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/smollm2");
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let vocab = golden["vocab"].as_u64().unwrap() as usize;
    let want: Vec<f32> = std::fs::read(dir.join("logits.f32")).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let ids = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect() };
    let prompts: Vec<Vec<u32>> = golden["prompts"].as_array().unwrap().iter().map(ids).collect();
    let greedy: Vec<Vec<u32>> = golden["greedy"].as_array().unwrap().iter().map(ids).collect();
    let spec = path.to_string_lossy().into_owned();
    for format in [WeightFormat::F32, WeightFormat::Native] {
        let llm = Llm::load_with(&spec, format).unwrap();
        for (pi, p) in prompts.iter().enumerate() {
            let mut cache = llm.model.new_cache();
            let got = llm.model.forward(&mut [models::arch::llama::SeqStep { tokens: p, cache: &mut cache }], false).remove(0);
            let w = &want[pi * vocab..(pi + 1) * vocab];
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            eprintln!("{format:?} prompt {pi}: relative logit error {err:.2e}");
            assert!(err <= 1e-4, "{format:?} prompt {pi}: max |logit error| / max |logit| = {err:.2e}");
        }
        let params = GenParams { max_tokens: 32, temperature: 0.0, seed: 0, stop_ids: vec![] };
        let ours = models::generate::generate_batch(&llm.model, &prompts, &params, |_, _| {});
        for (pi, g) in greedy.iter().enumerate() {
            assert_eq!(&ours[pi].token_ids, g, "{format:?} prompt {pi}: greedy tokens differ from transformers");
        }
    }
}
