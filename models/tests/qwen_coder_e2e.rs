//! The second known model, Qwen2.5-Coder-0.5B-Instruct (qwen2: QKV bias, Q5_0/Q8_0/Q6_K/Q4_K
//! blocks, 151,936-token vocabulary), end to end when it is cached (`inflight generate
//! --model qwen2.5-coder-0.5b-instruct` fetches it: 491 MB, so CI does not).

use host_runtime::sampling::SamplingParams;
use models::Llm;

#[test]
fn qwen_coder_writes_code() {
    let p = models::fetch::cache_dir().join("models/Qwen2.5-Coder-0.5B-Instruct.gguf");
    if !p.exists() {
        println!("skipped: Qwen2.5-Coder-0.5B-Instruct not downloaded");
        return;
    }
    let llm = Llm::load(&p.to_string_lossy()).unwrap();
    assert_eq!(llm.model.config().vocab_size, 151936);
    let out = llm.generate(&["def fibonacci(n):"], &SamplingParams { temperature: 0.0, max_new_tokens: 16, ..Default::default() }).unwrap().remove(0);
    assert!(out.text.contains("if n") || out.text.contains("return"), "{:?}", out.text);
}
