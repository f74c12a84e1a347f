//! Batched generation on the CPU backend: prefill every prompt in one forward pass, then
//! decode all unfinished sequences together, one token each per step. Sampling here is the
//! minimal set (greedy, temperature with a seed); the full sampler and in-flight batching
//! arrive with the executor.

use crate::arch::llama::SeqStep;
use crate::arch::Model;
use crate::arch::KvCache;

/// Why a sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token was produced (it is not part of the output).
    Stop,
    /// `max_tokens` were generated, or the context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Generation parameters.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub seed: u64,
    /// Token ids that end a sequence.
    pub stop_ids: Vec<u32>,
}

impl GenParams {
    /// Checks the parameters; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!("temperature must be finite and >= 0, got {}", self.temperature));
        }
        Ok(())
    }
}

/// One finished sequence.
#[derive(Clone, Debug)]
pub struct Generated {
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
}

/// splitmix64: the per-sequence sampling generator (seeded, reproducible).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Greedy (lowest index on ties) or temperature sampling.
fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    let argmax = logits.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0;
    if temperature == 0.0 {
        return argmax as u32;
    }
    let max = logits[argmax];
    let weights: Vec<f64> = logits.iter().map(|&v| (((v - max) / temperature) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax as u32
}

/// Generates for every prompt (each non-empty) as one batch. `on_token(i, id)` is called as
/// sequence `i` produces each token (stop tokens excluded), for streaming.
pub fn generate_batch(model: &Model, prompts: &[Vec<u32>], params: &GenParams, mut on_token: impl FnMut(usize, u32)) -> Vec<Generated> {
    let n = prompts.len();
    let max_pos = model.config().max_position;
    let mut caches: Vec<KvCache> = (0..n).map(|_| model.new_cache()).collect();
    let mut rngs: Vec<Rng> = (0..n).map(|i| Rng(params.seed ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F))).collect();
    let mut outs: Vec<Generated> = (0..n).map(|_| Generated { token_ids: Vec::new(), finish_reason: FinishReason::Length }).collect();
    let mut done = vec![params.max_tokens == 0; n];
    // Prefill: all prompts in one pass.
    let mut steps: Vec<SeqStep> = caches.iter_mut().zip(prompts).map(|(cache, p)| SeqStep { tokens: p, cache }).collect();
    let mut logits = model.forward(&mut steps, false);
    drop(steps);
    let mut next = vec![0u32; n];
    loop {
        for i in 0..n {
            if done[i] {
                continue;
            }
            let tok = sample(&logits[i], params.temperature, &mut rngs[i]);
            if params.stop_ids.contains(&tok) {
                outs[i].finish_reason = FinishReason::Stop;
                done[i] = true;
                continue;
            }
            outs[i].token_ids.push(tok);
            on_token(i, tok);
            next[i] = tok;
            if outs[i].token_ids.len() >= params.max_tokens || caches[i].len + 1 >= max_pos {
                done[i] = true;
            }
        }
        let active: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
        if active.is_empty() {
            break;
        }
        let toks: Vec<[u32; 1]> = active.iter().map(|&i| [next[i]]).collect();
        let mut cache_refs: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
        let mut steps: Vec<SeqStep> = active.iter().zip(&toks).map(|(&i, t)| SeqStep { tokens: t, cache: cache_refs[i].take().expect("each sequence once") }).collect();
        let step_logits = model.forward(&mut steps, false);
        for (k, &i) in active.iter().enumerate() {
            logits[i] = step_logits[k].clone();
        }
    }
    outs
}
