//! End to end on the real SmolLM2-135M-Instruct GGUF (when cached; CI fetches it first):
//! greedy completion names Paris, and the native block-format weights (fused Q4_1/Q8_0
//! dots) give the same greedy tokens as weights dequantised to f32.

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
    let params = GenParams { max_tokens: 6, temperature: 0.0, seed: 0, stop_ids: native.stop_ids() };
    let a = native.generate(&["The capital of France is"], false, &params).unwrap().remove(0);
    let b = f32w.generate(&["The capital of France is"], false, &params).unwrap().remove(0);
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert_eq!(a.token_ids, b.token_ids, "native {:?} vs f32 {:?}", a.text, b.text);
}
