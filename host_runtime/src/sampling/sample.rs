//! The per-request token sampler ([`Sampler`]): processors, then greedy or
//! temperature/top-k/top-p/min-p sampling, with log-probs.
//!
//! Order (each step on one row of logits, vocabulary `V`):
//!
//! 1. processors in place ([`super::processors`]): repetition, presence/frequency, bad
//!    words, min-tokens masking; NaN logits are then treated as `-inf`;
//! 2. temperature 0: greedy, one pass over the logits (argmax, ties → lowest id, together
//!    with the online log-sum-exp for the log-prob at temperature 1); done;
//! 3. temperature: weights `w_i = exp((x_i - max) / T)` (f32, so the top token has `w = 1`),
//!    `Z = Σ w_i` accumulated in f64;
//! 4. top-k: the `k` largest logits (ties → lower id) by `select_nth_unstable` on u64 keys
//!    (order-preserving logit bits, id), no sort;
//! 5. top-p: the smallest most-likely prefix (of the top-k set, renormalised) with mass
//!    ≥ `p`, found by sorting growing chunks (64, ×8, ...) so that a peaked distribution
//!    never sorts the whole vocabulary;
//! 6. min-p: keep `w_i ≥ min_p` (= `p_i ≥ min_p × p_max`, unchanged by renormalisation);
//! 7. draw `u ∈ [0, 1)` from the request's ChaCha12 and walk the kept tokens accumulating
//!    their weights in f64 until the sum passes `u × Σ kept`.
//!
//! Log-probs ([`Sampled::logprob`], [`Sampled::top`]) are the log-softmax of the processed,
//! temperature-scaled logits *before* truncation (temperature 1 for greedy), computed in f64
//! from the same `max` and `Z`. Scratch buffers (weights, candidate ids) live in the
//! `Sampler` and are reused every step.

use super::params::SamplingParams;
use super::processors::{Processors, TokenCounts};
use super::rng::RequestRng;
use serde::{Deserialize, Serialize};

/// A token and its log-probability.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// One sampled token.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// Log-softmax of the chosen token under the processed, temperature-scaled distribution
    /// (before top-k/top-p/min-p truncation; temperature 1 for greedy). `-inf` when every
    /// token was masked.
    pub logprob: f32,
    /// The `logprobs` most likely tokens, best first (ties → lower id); empty unless asked.
    pub top: Vec<TokenLogprob>,
}

/// A logits row reduced where it was computed (see [`LogitsWant::Top`]): its best
/// candidates, best first (ties → lower id; NaN and `-inf` left out), the row max, and
/// `lse = ln Σ exp((x - max) · inv_t)` over the whole row at the inverse temperature asked
/// for (1 for greedy).
#[derive(Clone, Debug, PartialEq)]
pub struct TopLogits {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    pub max: f32,
    pub lse: f64,
}

impl TopLogits {
    /// From a device's `Σ exp(...)` (its logarithm taken here, in f64).
    pub fn from_sum(ids: Vec<u32>, logits: Vec<f32>, max: f32, sum: f32) -> TopLogits {
        let lse = if sum > 0.0 { f64::from(sum).ln() } else { f64::NEG_INFINITY };
        TopLogits { ids, logits, max, lse }
    }

    /// The reference reduction of a full row: its `k` best and the f64 log-sum-exp.
    pub fn of_row(row: &[f32], k: usize, inv_t: f32) -> TopLogits {
        let mut keys: Vec<u64> = row.iter().enumerate().filter(|(_, x)| **x > f32::NEG_INFINITY).map(|(i, &x)| rank_key(x, i as u32)).collect();
        keys.sort_unstable();
        keys.truncate(k);
        let ids: Vec<u32> = keys.iter().map(|&key| key_id(key)).collect();
        let logits: Vec<f32> = ids.iter().map(|&i| row[i as usize]).collect();
        let max = logits.first().copied().unwrap_or(f32::NEG_INFINITY);
        let sum: f64 = if max.is_finite() {
            row.iter().filter(|x| **x > f32::NEG_INFINITY).map(|&x| f64::from((x - max) * inv_t).exp()).sum()
        } else {
            0.0
        };
        let lse = if sum > 0.0 { sum.ln() } else { f64::NEG_INFINITY };
        TopLogits { ids, logits, max, lse }
    }
}

/// What a request needs of a step's logits row: decided before the step
/// ([`Sampler::want`]), so a device can reduce the row where it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LogitsWant {
    /// The whole row.
    Full,
    /// A [`TopLogits`] with at least as many candidates as the sampler's top-k (and its
    /// top-n log-probs) need, its log-sum-exp at this inverse temperature.
    Top { inv_temperature: f32 },
}

/// The argmax of `logits` (ties → lowest index, NaN skipped), the max, and
/// `ln Σ exp(x - max)` (f64 accumulation of f32 exponentials; vectorised passes). All `-inf`/NaN: `(0, -inf, -inf)`.
pub fn argmax_logsumexp(logits: &[f32]) -> (u32, f32, f64) {
    let m = crate::cpu::max_logit(logits);
    if !m.is_finite() {
        // Every logit masked, or a +inf one: the online pass's conventions.
        return argmax_logsumexp_online(logits);
    }
    // The first index holding the max (as the online pass keeps it), then one vectorised
    // pass for the sum.
    let best = logits.iter().position(|&x| x == m).expect("the max is one of the logits");
    (best as u32, m, crate::cpu::sum_exp(logits, m).ln())
}

/// [`argmax_logsumexp`] in one scalar pass (online rescaling of the sum).
fn argmax_logsumexp_online(logits: &[f32]) -> (u32, f32, f64) {
    let mut best = 0u32;
    let mut m = f32::NEG_INFINITY;
    let mut s = 0f64;
    for (i, &x) in logits.iter().enumerate() {
        if x > m {
            // A new max rescales the running sum (m = -inf: s is 0 and stays 0).
            s = s * f64::from(m - x).exp() + 1.0;
            m = x;
            best = i as u32;
        } else if x > f32::NEG_INFINITY {
            s += f64::from((x - m).exp());
        }
    }
    (best, m, s.ln())
}

/// The `n` largest logits' ids, best first, ties → lower id, NaN and `-inf` (masked) skipped.
pub fn top_n_ids(logits: &[f32], n: usize) -> Vec<u32> {
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return Vec::new();
    }
    for (i, &x) in logits.iter().enumerate() {
        if !(x > f32::NEG_INFINITY) || (top.len() == n && x <= top[n - 1].0) {
            continue;
        }
        // Equal values stay in index order: a later index goes after them.
        let pos = top.partition_point(|&(v, _)| v >= x);
        top.insert(pos, (x, i as u32));
        top.truncate(n);
    }
    top.into_iter().map(|(_, i)| i).collect()
}

/// Per-request sampling state: the configured processors, the generated-token counts for
/// the penalties, the seeded generator and reusable scratch buffers.
///
/// Counting generated tokens: [`Sampler::sample`] counts the tokens of `generated` past
/// those already counted, and [`Sampler::accept`] counts one token; calling `accept(t)` and
/// then passing a `generated` that ends with `t` counts `t` once. So an executor may call
/// either or both.
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    logprobs: Option<usize>,
    end_ids: Vec<u32>,
    processors: Processors,
    counts: TokenCounts,
    rng: RequestRng,
    weights: Vec<f32>,
    /// Candidate sort keys (see [`rank_key`]).
    keys: Vec<u64>,
}

impl Sampler {
    /// `end_ids`: the model's end ids (replaced by `params.end_id` when set, ignored with
    /// `ignore_eos`, masked before `min_new_tokens`). `params` must have passed
    /// [`SamplingParams::validate`].
    pub fn new(params: &SamplingParams, prompt: &[u32], end_ids: &[u32]) -> Sampler {
        Sampler::for_sequence(params, prompt, end_ids, 0)
    }

    /// The sampler of sequence `index` of an `n > 1` request: the same seed, stream `index`,
    /// so the `n` sequences differ yet each is reproducible.
    pub fn for_sequence(params: &SamplingParams, prompt: &[u32], end_ids: &[u32], index: usize) -> Sampler {
        let end_ids = params.effective_end_ids(end_ids);
        Sampler {
            temperature: params.temperature,
            top_k: params.top_k.max(0) as usize,
            top_p: params.top_p,
            min_p: params.min_p,
            logprobs: params.logprobs,
            processors: Processors::new(params, prompt, &end_ids),
            end_ids,
            counts: TokenCounts::new(),
            rng: RequestRng::new(params.seed, index as u64),
            weights: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// The end ids in force.
    pub fn end_ids(&self) -> &[u32] {
        &self.end_ids
    }

    /// Applies the processors to `logits` in place (penalties, bad words, min-token
    /// masking; NaN → `-inf` when sampling) and samples one token. `generated` = the
    /// tokens generated so far (bad words, penalties, `min_new_tokens`). On return `logits`
    /// holds the processed logits (no temperature). The chosen token is *not* counted; see
    /// [`Sampler::accept`].
    pub fn sample(&mut self, logits: &mut [f32], generated: &[u32]) -> Sampled {
        assert!(!logits.is_empty(), "Sampler::sample: empty logits");
        if self.processors.needs_counts() {
            self.counts.sync(generated);
        }
        self.processors.apply(logits, generated, &self.counts);
        let inv_t = 1.0 / self.temperature;
        if self.temperature == 0.0 || !inv_t.is_finite() {
            self.sample_greedy(logits)
        } else {
            self.sample_random(logits)
        }
    }

    /// What this step's row must hold for [`Sampler::sample_top`] to give exactly what
    /// [`Sampler::sample`] gives on the whole row, when a device keeps `max_k` candidates:
    /// no processor acts at this step (`generated` = the tokens generated so far), the top-n
    /// log-probs fit in `max_k`, and the draw is greedy or limited to a top-k of at most
    /// `max_k`. Otherwise the whole row.
    pub fn want(&self, generated: &[u32], max_k: usize) -> LogitsWant {
        if self.processors.acts(generated) || self.logprobs.unwrap_or(0) > max_k {
            return LogitsWant::Full;
        }
        let inv_t = 1.0 / self.temperature;
        if self.temperature == 0.0 || !inv_t.is_finite() {
            LogitsWant::Top { inv_temperature: 1.0 }
        } else if (1..=max_k).contains(&self.top_k) {
            LogitsWant::Top { inv_temperature: inv_t }
        } else {
            LogitsWant::Full
        }
    }

    /// Samples from a reduced row asked for by [`Sampler::want`]: the same token, log-prob
    /// and top log-probs as [`Sampler::sample`] on the whole row (up to the rounding of the
    /// log-sum-exp). The chosen token is not counted (see [`Sampler::accept`]).
    pub fn sample_top(&mut self, top: &TopLogits) -> Sampled {
        let m = top.max;
        let first = top.ids.first().copied().unwrap_or(0);
        if !m.is_finite() || top.ids.is_empty() {
            // Every token masked (or a +inf logit).
            let logprob = if m == f32::INFINITY { 0.0 } else { f32::NEG_INFINITY };
            return Sampled { id: first, logprob, top: Vec::new() };
        }
        let inv_t = 1.0 / self.temperature;
        let greedy = self.temperature == 0.0 || !inv_t.is_finite();
        let t = if greedy { 1.0 } else { f64::from(self.temperature) };
        let logprob = |x: f32| ((f64::from(x) - f64::from(m)) / t - top.lse) as f32;
        let n = self.logprobs.unwrap_or(0).min(top.ids.len());
        let top_n = top.ids[..n].iter().zip(&top.logits).map(|(&id, &x)| TokenLogprob { id, logprob: logprob(x) }).collect();
        let id = if greedy {
            first
        } else {
            let k = self.top_k.min(top.ids.len());
            let w: Vec<f32> = top.logits[..k].iter().map(|&x| ((x - m) * inv_t).exp()).collect();
            let u = self.rng.uniform();
            draw_ranked(&top.ids[..k], &w, self.top_p, self.min_p, u).unwrap_or(first)
        };
        let x = top.ids.iter().position(|&i| i == id).map_or(m, |j| top.logits[j]);
        Sampled { id, logprob: logprob(x), top: top_n }
    }

    /// Records a generated token for the penalty counts (optional: `sample` also counts the
    /// new tokens of `generated`; each token is counted once either way).
    pub fn accept(&mut self, token: u32) {
        if self.processors.needs_counts() {
            self.counts.push(token);
        }
    }

    fn top_logprobs(&self, logits: &[f32], logprob: impl Fn(f32) -> f32) -> Vec<TokenLogprob> {
        match self.logprobs {
            Some(n) if n > 0 => {
                top_n_ids(logits, n).into_iter().map(|id| TokenLogprob { id, logprob: logprob(logits[id as usize]) }).collect()
            }
            _ => Vec::new(),
        }
    }

    fn sample_greedy(&mut self, logits: &[f32]) -> Sampled {
        let (id, m, lse) = argmax_logsumexp(logits);
        if m == f32::NEG_INFINITY {
            return Sampled { id, logprob: f32::NEG_INFINITY, top: Vec::new() };
        }
        let logprob = |x: f32| (f64::from(x) - f64::from(m) - lse) as f32;
        Sampled { id, logprob: logprob(m), top: self.top_logprobs(logits, logprob) }
    }

    fn sample_random(&mut self, logits: &mut [f32]) -> Sampled {
        let v = logits.len();
        // Pass 1: NaN → -inf, the max.
        let mut m = f32::NEG_INFINITY;
        let mut amax = 0usize;
        for (i, x) in logits.iter_mut().enumerate() {
            if x.is_nan() {
                *x = f32::NEG_INFINITY;
            } else if *x > m {
                m = *x;
                amax = i;
            }
        }
        if !m.is_finite() {
            // Every token masked (or a +inf logit): nothing to draw from.
            let logprob = if m == f32::INFINITY { 0.0 } else { f32::NEG_INFINITY };
            return Sampled { id: amax as u32, logprob, top: Vec::new() };
        }
        // Pass 2: temperature-scaled weights relative to the max.
        let inv_t = 1.0 / self.temperature;
        self.weights.clear();
        self.weights.reserve(v);
        let mut z = 0f64;
        for &x in logits.iter() {
            let w = ((x - m) * inv_t).exp();
            self.weights.push(w);
            z += f64::from(w);
        }
        let lse = z.ln();
        let w = &self.weights[..];
        let logits_ro: &[f32] = logits;
        let k = if self.top_k == 0 || self.top_k >= v { v } else { self.top_k };
        let min_p = self.min_p;
        let keep = |i: u32| w[i as usize] >= min_p;
        let u = self.rng.uniform();

        let chosen = if self.top_k == 0 && self.top_p >= 1.0 {
            // The whole vocabulary (min-p filtered): no candidate list at all.
            let total: f64 = if min_p > 0.0 { w.iter().filter(|&&x| x >= min_p).map(|&x| f64::from(x)).sum() } else { z };
            walk((0..v as u32).filter(|&i| keep(i)), w, u * total).unwrap_or(amax as u32)
        } else if self.top_k > 0 {
            // Ranking by u64 keys (logit descending, then id) keeps the selection and the
            // sort on plain integers in one contiguous buffer. The k candidates are walked
            // in rank order, exactly as [`Sampler::sample_top`] walks a device's top list.
            let keys = &mut self.keys;
            keys.clear();
            keys.extend(logits_ro.iter().enumerate().map(|(i, &x)| rank_key(x, i as u32)));
            if k < v {
                keys.select_nth_unstable(k - 1);
                keys.truncate(k);
            }
            keys.sort_unstable();
            let ids: Vec<u32> = keys.iter().map(|&key| key_id(key)).collect();
            let cand_w: Vec<f32> = ids.iter().map(|&i| w[i as usize]).collect();
            draw_ranked(&ids, &cand_w, self.top_p, min_p, u).unwrap_or(amax as u32)
        } else {
            let keys = &mut self.keys;
            keys.clear();
            keys.extend(logits_ro.iter().enumerate().map(|(i, &x)| rank_key(x, i as u32)));
            let len = top_p_prefix(keys, w, f64::from(self.top_p) * z);
            let cand = keys[..len].iter().map(|&key| key_id(key));
            let total: f64 = cand.clone().filter(|&i| keep(i)).map(|i| f64::from(w[i as usize])).sum();
            walk(cand.filter(|&i| keep(i)), w, u * total).unwrap_or(amax as u32)
        };

        let t = f64::from(self.temperature);
        let logprob = |x: f32| ((f64::from(x) - f64::from(m)) / t - lse) as f32;
        Sampled { id: chosen, logprob: logprob(logits_ro[chosen as usize]), top: self.top_logprobs(logits_ro, logprob) }
    }
}

/// Draws from candidates in rank order (best first) with weights `w` (relative to the row
/// max, temperature applied): top-p keeps the shortest prefix holding `top_p` of their mass,
/// min-p keeps `w ≥ min_p`, then `u ∈ [0, 1)` picks by the running sum. `None` when every
/// weight is zero.
fn draw_ranked(ids: &[u32], w: &[f32], top_p: f32, min_p: f32, u: f64) -> Option<u32> {
    let mut len = ids.len();
    if top_p < 1.0 {
        let target = f64::from(top_p) * w.iter().map(|&x| f64::from(x)).sum::<f64>();
        let mut acc = 0f64;
        if let Some(j) = w.iter().position(|&x| {
            acc += f64::from(x);
            acc >= target
        }) {
            len = j + 1;
        }
    }
    let kept = || (0..len).filter(|&j| w[j] >= min_p);
    let total: f64 = kept().map(|j| f64::from(w[j])).sum();
    let mut acc = 0f64;
    let mut last = None;
    for j in kept() {
        if w[j] > 0.0 {
            acc += f64::from(w[j]);
            last = Some(ids[j]);
            if acc > u * total {
                return last;
            }
        }
    }
    last
}

/// A sort key ordering tokens by logit descending, then id ascending (`-0.0` ranks as
/// `0.0`; the logit must not be NaN): the high half is the logit's bits made
/// order-preserving and inverted, the low half the id.
fn rank_key(logit: f32, id: u32) -> u64 {
    let bits = (logit + 0.0).to_bits();
    let ascending = if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 };
    (u64::from(!ascending) << 32) | u64::from(id)
}

fn key_id(key: u64) -> u32 {
    key as u32
}

/// Sorts `cand` (rank keys) best first in growing chunks (64, ×8, ...) until the sorted
/// prefix holds `target` weight; returns that prefix's length (all of `cand` when rounding
/// keeps it short).
fn top_p_prefix(cand: &mut [u64], w: &[f32], target: f64) -> usize {
    let len = cand.len();
    let mut sorted = 0;
    let mut chunk = 64;
    let mut acc = 0f64;
    while sorted < len {
        let end = (sorted + chunk).min(len);
        if end < len {
            cand[sorted..].select_nth_unstable(end - sorted - 1);
        }
        cand[sorted..end].sort_unstable();
        for (j, &key) in cand[sorted..end].iter().enumerate() {
            acc += f64::from(w[key_id(key) as usize]);
            if acc >= target {
                return sorted + j + 1;
            }
        }
        sorted = end;
        chunk *= 8;
    }
    len
}

/// The first of `ids` at which the running sum of weights passes `target`; the last id with
/// positive weight when rounding leaves the sum short; `None` when all weights are zero.
fn walk(ids: impl Iterator<Item = u32>, w: &[f32], target: f64) -> Option<u32> {
    let mut acc = 0f64;
    let mut last = None;
    for i in ids {
        let wi = f64::from(w[i as usize]);
        if wi > 0.0 {
            acc += wi;
            last = Some(i);
            if acc > target {
                return Some(i);
            }
        }
    }
    last
}

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;
