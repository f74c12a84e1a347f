//! The executor end to end with SmolLM2-135M on the CPU backend (skipped when the model is
//! not cached; CI fetches it first). Weights are dequantised to f32 so that every row's math
//! is the same whatever the batch (the native block-format path sums prefill rows in a
//! different order than decode rows).
//!
//! - a greedy request alone, inside a batch of 16 mixed requests, and after being preempted
//!   and recomputed gives identical tokens;
//! - with prefix reuse, a request sharing a long system prompt reuses blocks (counted) and
//!   gives the same tokens as without reuse;
//! - a fixed seed reproduces a sampled output;
//! - a cancelled request's blocks are free at once.

use host_runtime::executor::FinishReason;
use host_runtime::sampling::SamplingParams;
use host_runtime::scheduler::CapacityPolicy;
use models::load::WeightFormat;
use models::{Llm, LlmConfig};

fn cached() -> Option<String> {
    let p = models::fetch::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then(|| p.to_string_lossy().into_owned())
}

fn config(path: &str) -> LlmConfig {
    LlmConfig { weights: WeightFormat::F32, max_seq_len: Some(256), tokens_per_block: 8, ..LlmConfig::new(path) }
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_new_tokens: n, ignore_eos: true, ..Default::default() }
}

const TARGET: &str = "The capital of France is";

fn mixed_prompts() -> Vec<String> {
    let mut v: Vec<String> = (0..15).map(|i| format!("Request number {i}: write a short story about the number {}.", i * 7)).collect();
    v.insert(5, TARGET.to_string());
    v
}

#[test]
fn same_tokens_alone_in_a_batch_and_after_preemption() {
    let Some(path) = cached() else {
        println!("skipped: SmolLM2 not downloaded");
        return;
    };
    let llm = Llm::new(config(&path)).unwrap();
    let alone = llm.generate(&[TARGET], &greedy(12)).unwrap().remove(0);
    assert!(alone.text.contains("Paris"), "{:?}", alone.text);
    let batch = llm.generate(&mixed_prompts(), &greedy(12)).unwrap();
    assert_eq!(batch[5].token_ids, alone.token_ids, "inside a batch of 16");
    drop(llm);
    // A pool too small for 16 sequences at once: MAX_UTILIZATION preempts and recomputes.
    let block_bytes = 30 * 2 * 3 * 64 * 4 * 8;
    let small = LlmConfig { policy: CapacityPolicy::MaxUtilization, kv_cache_bytes: Some(40 * block_bytes), ..config(&path) };
    let llm = Llm::new(small).unwrap();
    let batch = llm.generate(&mixed_prompts(), &greedy(12)).unwrap();
    let m = llm.executor().metrics();
    assert!(m.preempted > 0, "expected preemption with 40 blocks: {m:?}");
    for (i, c) in batch.iter().enumerate() {
        assert_eq!(c.finish_reason, FinishReason::Length, "request {i}");
        assert_eq!(c.token_ids.len(), 12, "request {i}");
    }
    assert_eq!(batch[5].token_ids, alone.token_ids, "after preemption ({} preemptions)", m.preempted);
    assert_eq!(llm.executor().kv_blocks().1, 0, "every block free at the end");
}

#[test]
fn prefix_reuse_shares_blocks_and_changes_nothing() {
    let Some(path) = cached() else {
        println!("skipped: SmolLM2 not downloaded");
        return;
    };
    let system = "You are a helpful assistant who answers questions about geography with short, precise, factual answers. Always name the country. ".repeat(2);
    let q1 = format!("{system}Question: what is the capital of Italy? Answer:");
    let q2 = format!("{system}Question: what is the capital of Spain? Answer:");
    let off = Llm::new(LlmConfig { enable_kv_cache_reuse: false, ..config(&path) }).unwrap();
    let want = off.generate(&[q2.as_str()], &greedy(8)).unwrap().remove(0);
    drop(off);
    let on = Llm::new(config(&path)).unwrap();
    on.generate(&[q1.as_str()], &greedy(8)).unwrap();
    let got = on.generate(&[q2.as_str()], &greedy(8)).unwrap().remove(0);
    let m = on.executor().metrics();
    assert!(m.reused_blocks >= 4, "shared system prompt should reuse blocks: {m:?}");
    assert!(got.reused_tokens >= 32, "reused tokens {}", got.reused_tokens);
    assert_eq!(got.token_ids, want.token_ids);
    let stats: serde_json::Value = serde_json::from_str(&on.executor().last_stats().unwrap()).unwrap();
    assert!(stats["total_reused_blocks"].as_u64().unwrap() >= 4, "{stats}");
}

#[test]
fn a_fixed_seed_reproduces_a_sampled_output() {
    let Some(path) = cached() else {
        println!("skipped: SmolLM2 not downloaded");
        return;
    };
    let llm = Llm::new(config(&path)).unwrap();
    let p = SamplingParams { temperature: 0.9, top_p: 0.95, top_k: 50, seed: Some(42), max_new_tokens: 16, ignore_eos: true, ..Default::default() };
    let a = llm.generate(&["Once upon a time"], &p).unwrap().remove(0);
    let b = llm.generate(&["Once upon a time", "Tell me a joke"], &p).unwrap().remove(0);
    assert_eq!(a.token_ids, b.token_ids);
    let c = llm.generate(&["Once upon a time"], &SamplingParams { seed: Some(43), ..p.clone() }).unwrap().remove(0);
    assert_ne!(a.token_ids, c.token_ids, "a different seed should differ");
}

#[test]
fn a_cancelled_request_frees_its_blocks_at_once() {
    let Some(path) = cached() else {
        println!("skipped: SmolLM2 not downloaded");
        return;
    };
    let llm = Llm::new(config(&path)).unwrap();
    let ids = llm.prompt_ids("Write a very long essay about the history of France.", false).unwrap();
    let h = llm.submit(ids, &greedy(200)).unwrap();
    // Wait for some output so the request holds blocks.
    let first = h.outputs.recv().unwrap();
    assert!(first.finish.is_none());
    assert!(llm.executor().kv_blocks().1 > 0);
    assert!(llm.executor().cancel(h.id));
    assert_eq!(llm.executor().kv_blocks().1, 0, "blocks free right after cancel");
    let id = h.id;
    let last = h.wait();
    assert_eq!(last.finish, Some(FinishReason::Cancelled));
    assert!(!llm.executor().cancel(id), "second cancel is a no-op");
}
