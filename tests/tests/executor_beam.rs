//! Beam search through the executor with SmolLM2-135M on the CPU backend (skipped when the
//! model is not cached). Weights are dequantised to f32, so a row's math does not depend on
//! the batch.
//!
//! - beam width 1 gives the greedy tokens;
//! - beam width 4, n 4 returns 4 hypotheses sorted by score, each with the cumulative
//!   log-prob that teacher-forcing prompt + hypothesis through `Model::forward` gives, and
//!   the best is at least as likely as the greedy continuation of the same length;
//! - a beam request inside a batch of normal requests gives the same result as alone;
//! - cancelling a beam request frees every block at once.

use host_runtime::executor::{FinishReason, Output};
use host_runtime::sampling::SamplingParams;
use models::arch::SeqStep;
use models::load::WeightFormat;
use models::{Llm, LlmConfig};

fn cached() -> Option<String> {
    let p = models::fetch::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then(|| p.to_string_lossy().into_owned())
}

fn config(path: &str) -> LlmConfig {
    LlmConfig { weights: WeightFormat::F32, max_seq_len: Some(256), tokens_per_block: 8, kv_cache_bytes: Some(256 << 20), ..LlmConfig::new(path) }
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_new_tokens: n, ignore_eos: true, ..Default::default() }
}

/// Fixed-length hypotheses (no end id, no length penalty): score = cumulative log-prob.
fn beam(width: usize, n: usize, max_new: usize) -> SamplingParams {
    SamplingParams { beam_width: width, n, max_new_tokens: max_new, length_penalty: 0.0, ignore_eos: true, ..Default::default() }
}

const TARGET: &str = "The capital of France is";

/// Sum of the log-softmax values of `generated` after `prompt`, teacher-forced in one pass.
fn teacher_forced(llm: &Llm, prompt: &[u32], generated: &[u32]) -> f64 {
    let all: Vec<u32> = prompt.iter().chain(generated).copied().collect();
    let mut cache = llm.model.new_cache();
    let logits = llm.model.forward(&mut [SeqStep { tokens: &all, cache: &mut cache }], true).remove(0);
    let vocab = llm.model.config().vocab_size;
    assert_eq!(logits.len(), all.len() * vocab);
    generated.iter()
        .enumerate()
        .map(|(i, &t)| {
            let row = &logits[(prompt.len() - 1 + i) * vocab..][..vocab];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = f64::from(m) + row.iter().map(|&x| (f64::from(x) - f64::from(m)).exp()).sum::<f64>().ln();
            f64::from(row[t as usize]) - lse
        })
        .sum()
}

fn submit_wait(llm: &Llm, prompt: &[u32], p: &SamplingParams) -> Output {
    llm.submit(prompt.to_vec(), p).unwrap().wait()
}

#[test]
fn beam_hypotheses_are_scored_by_the_model_and_beat_greedy() {
    let Some(path) = cached() else {
        println!("skipped: SmolLM2 not downloaded");
        return;
    };
    let llm = Llm::new(config(&path)).unwrap();
    let prompt = llm.prompt_ids(TARGET, false).unwrap();
    let g = submit_wait(&llm, &prompt, &greedy(8));
    let w1 = submit_wait(&llm, &prompt, &SamplingParams { beam_width: 1, ..greedy(8) });
    assert_eq!(w1.token_ids, g.token_ids, "beam width 1 is greedy");
    assert!(w1.beams.is_empty());

    let out = submit_wait(&llm, &prompt, &beam(4, 4, 8));
    assert_eq!(out.finish, Some(FinishReason::Length));
    assert_eq!(out.beams.len(), 4, "{out:?}");
    assert!(out.beams.windows(2).all(|p| p[0].score >= p[1].score), "sorted by score");
    for (i, h) in out.beams.iter().enumerate() {
        assert_eq!(h.token_ids.len(), 8);
        let want = teacher_forced(&llm, &prompt, &h.token_ids);
        let rel = (f64::from(h.cum_logprob) - want).abs() / want.abs().max(1e-6);
        eprintln!("beam {i}: {:?} cum {} teacher-forced {want:.5} (rel {rel:.1e})", h.text, h.cum_logprob);
        assert!(rel < 1e-3, "beam {i}: cum_logprob {} vs teacher-forced {want}", h.cum_logprob);
        assert_eq!(h.text, llm.tokenizer.decode(&h.token_ids, true).unwrap(), "beam {i} text");
    }
    assert_eq!(out.token_ids, out.beams[0].token_ids);
    assert_eq!(out.text, out.beams[0].text);
    assert_eq!(out.cum_logprob, out.beams[0].cum_logprob);
    let greedy_lp = teacher_forced(&llm, &prompt, &g.token_ids);
    eprintln!("greedy {:?}: {greedy_lp:.5}", g.text);
    assert!(f64::from(out.cum_logprob) >= greedy_lp - 1e-3 * greedy_lp.abs(), "best beam {} < greedy {greedy_lp}", out.cum_logprob);
    assert_eq!(llm.executor().kv_blocks().1, 0, "every block free at the end");
}

#[test]
fn a_beam_request_in_a_batch_matches_its_run_alone() {
    let Some(path) = cached() else {
        println!("skipped: SmolLM2 not downloaded");
        return;
    };
    let llm = Llm::new(config(&path)).unwrap();
    let prompt = llm.prompt_ids(TARGET, false).unwrap();
    let params = SamplingParams { length_penalty: 1.0, ..beam(3, 3, 6) };
    let alone = submit_wait(&llm, &prompt, &params);
    let others: Vec<Vec<u32>> = (0..5).map(|i| llm.prompt_ids(&format!("Request {i}: tell me about the number {}.", i * 11), false).unwrap()).collect();
    let mut handles: Vec<_> = others.iter().map(|p| llm.submit(p.clone(), &greedy(10)).unwrap()).collect();
    handles.insert(2, llm.submit(prompt.clone(), &params).unwrap());
    let outs: Vec<Output> = handles.into_iter().map(|h| h.wait()).collect();
    let batched = &outs[2];
    assert_eq!(batched.beams.len(), 3);
    for (a, b) in alone.beams.iter().zip(&batched.beams) {
        assert_eq!(a.token_ids, b.token_ids);
        assert!((a.cum_logprob - b.cum_logprob).abs() <= 1e-4 * a.cum_logprob.abs(), "{a:?} vs {b:?}");
    }
    for (i, o) in outs.iter().enumerate().filter(|(i, _)| *i != 2) {
        assert_eq!(o.token_ids.len(), 10, "request {i}");
    }
    assert_eq!(llm.executor().kv_blocks().1, 0);
}

#[test]
fn cancelling_a_beam_request_frees_all_blocks() {
    let Some(path) = cached() else {
        println!("skipped: SmolLM2 not downloaded");
        return;
    };
    let llm = Llm::new(config(&path)).unwrap();
    let prompt = llm.prompt_ids("Write a very long essay about the history of France.", false).unwrap();
    let h = llm.submit(prompt, &beam(4, 2, 200)).unwrap();
    let t0 = std::time::Instant::now();
    while llm.executor().metrics().steps < 3 {
        assert!(t0.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(llm.executor().kv_blocks().1 > 0);
    assert!(llm.executor().cancel(h.id));
    assert_eq!(llm.executor().kv_blocks().1, 0, "blocks free right after cancel");
    let id = h.id;
    let out = h.wait();
    assert_eq!(out.finish, Some(FinishReason::Cancelled));
    assert!(!llm.executor().cancel(id), "second cancel is a no-op");
}
