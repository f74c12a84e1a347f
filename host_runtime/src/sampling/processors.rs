//! Logits processors: the request-dependent edits made to the raw logits before any
//! temperature or truncation, in this order:
//!
//! 1. repetition penalty (Hugging Face): every distinct token of the prompt and of the
//!    generated tokens, once: `logit > 0 ? logit / p : logit * p`;
//! 2. presence and frequency penalties (OpenAI), over generated tokens only:
//!    `logit -= frequency × count + presence`;
//! 3. bad words: a one-token sequence is always banned (`-inf`); a longer one bans its last
//!    token whenever the generated tokens end with the rest of it;
//! 4. min-tokens masking: while fewer than `min_new_tokens` tokens were generated, the end
//!    ids (none with `ignore_eos`) and every single-token stop sequence are banned.
//!    Multi-token stop sequences are not masked; [`super::StopMatcher`] just does not fire
//!    before `min_new_tokens`.
//!
//! Token ids outside the logits (a prompt token past the vocabulary) are skipped, never a
//! panic. Every processor touches only the tokens it names: the cost is proportional to
//! the history, not to the vocabulary.

use super::params::SamplingParams;
use std::collections::HashMap;

/// Counts of the generated tokens (for presence/frequency penalties and the generated half
/// of the repetition penalty), kept incrementally.
#[derive(Clone, Debug, Default)]
pub struct TokenCounts {
    counts: HashMap<u32, u32>,
    counted: usize,
}

impl TokenCounts {
    pub fn new() -> TokenCounts {
        TokenCounts::default()
    }

    /// Counts one more generated token.
    pub fn push(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
        self.counted += 1;
    }

    /// Counts the tokens of `generated` past the ones already counted (by earlier `sync`s
    /// or `push`es). A `generated` no longer than what was counted changes nothing.
    pub fn sync(&mut self, generated: &[u32]) {
        if generated.len() > self.counted {
            for &t in &generated[self.counted..] {
                *self.counts.entry(t).or_insert(0) += 1;
            }
            self.counted = generated.len();
        }
    }

    /// How many tokens were counted.
    pub fn len(&self) -> usize {
        self.counted
    }

    pub fn is_empty(&self) -> bool {
        self.counted == 0
    }

    /// How often `token` was counted.
    pub fn get(&self, token: u32) -> u32 {
        self.counts.get(&token).copied().unwrap_or(0)
    }

    /// `(token, count)` for every distinct counted token, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.counts.iter().map(|(&t, &c)| (t, c))
    }
}

/// Hugging Face repetition penalty on each of `tokens` (the caller passes each distinct token
/// once): `logit > 0 ? logit / penalty : logit * penalty`.
pub fn apply_repetition_penalty(logits: &mut [f32], penalty: f32, tokens: impl IntoIterator<Item = u32>) {
    for t in tokens {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// OpenAI presence/frequency penalties: `logit -= frequency × count + presence` for each
/// `(token, count)` with `count > 0`.
pub fn apply_presence_frequency_penalty(
    logits: &mut [f32],
    presence: f32,
    frequency: f32,
    counts: impl IntoIterator<Item = (u32, u32)>,
) {
    for (t, c) in counts {
        if c == 0 {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= frequency * c as f32 + presence;
        }
    }
}

/// Bans (sets to `-inf`) the last token of every bad-word sequence whose other tokens end
/// `generated`; a one-token sequence is always banned.
pub fn ban_bad_words(logits: &mut [f32], bad_words: &[Vec<u32>], generated: &[u32]) {
    for w in bad_words {
        if let Some((&last, _)) = w.split_last().filter(|(_, prefix)| generated.ends_with(prefix)) {
            mask_tokens(logits, &[last]);
        }
    }
}

/// Sets every id of `ids` to `-inf`.
pub fn mask_tokens(logits: &mut [f32], ids: &[u32]) {
    for &t in ids {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// One request's processors, configured once from its parameters (see the module docs for
/// the order).
#[derive(Clone, Debug)]
pub struct Processors {
    repetition_penalty: f32,
    presence_penalty: f32,
    frequency_penalty: f32,
    /// Distinct prompt tokens, sorted (only kept when the repetition penalty is on).
    prompt_set: Vec<u32>,
    bad_words: Vec<Vec<u32>>,
    min_new_tokens: usize,
    /// End ids and single-token stop sequences, sorted and distinct.
    min_mask: Vec<u32>,
}

impl Processors {
    /// `end_ids` are the end ids in force (see [`SamplingParams::effective_end_ids`]).
    pub fn new(params: &SamplingParams, prompt: &[u32], end_ids: &[u32]) -> Processors {
        let mut prompt_set = Vec::new();
        if params.repetition_penalty != 1.0 {
            prompt_set = prompt.to_vec();
            prompt_set.sort_unstable();
            prompt_set.dedup();
        }
        let mut min_mask = Vec::new();
        if params.min_new_tokens > 0 {
            min_mask.extend_from_slice(end_ids);
            min_mask.extend(params.stop_token_ids.iter().filter(|s| s.len() == 1).map(|s| s[0]));
            min_mask.sort_unstable();
            min_mask.dedup();
        }
        Processors {
            repetition_penalty: params.repetition_penalty,
            presence_penalty: params.presence_penalty,
            frequency_penalty: params.frequency_penalty,
            prompt_set,
            bad_words: params.bad_words.clone(),
            min_new_tokens: params.min_new_tokens,
            min_mask,
        }
    }

    /// Whether the penalties need the generated-token counts.
    pub fn needs_counts(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    /// Whether any processor changes a row at this step (`generated` = the tokens generated
    /// so far): a penalty, a bad word, or min-tokens masking still in force.
    pub fn acts(&self, generated: &[u32]) -> bool {
        self.needs_counts() || !self.bad_words.is_empty() || (generated.len() < self.min_new_tokens && !self.min_mask.is_empty())
    }

    /// Applies every processor to `logits` in place. `generated` is the request's (or the
    /// beam's) generated tokens and `counts` their counts (only read when
    /// [`Processors::needs_counts`]).
    pub fn apply(&self, logits: &mut [f32], generated: &[u32], counts: &TokenCounts) {
        if self.repetition_penalty != 1.0 {
            let prompt = &self.prompt_set;
            let generated_only = counts.iter().map(|(t, _)| t).filter(|t| prompt.binary_search(t).is_err());
            apply_repetition_penalty(logits, self.repetition_penalty, prompt.iter().copied().chain(generated_only));
        }
        if self.presence_penalty != 0.0 || self.frequency_penalty != 0.0 {
            apply_presence_frequency_penalty(logits, self.presence_penalty, self.frequency_penalty, counts.iter());
        }
        ban_bad_words(logits, &self.bad_words, generated);
        if generated.len() < self.min_new_tokens {
            mask_tokens(logits, &self.min_mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use proptest::prelude::*;

    /// The straightforward reference: a seen-flag per vocabulary entry, counts per entry.
    fn reference(logits: &[f32], p: &SamplingParams, prompt: &[u32], generated: &[u32], end_ids: &[u32]) -> Vec<f32> {
        let v = logits.len();
        let mut out = logits.to_vec();
        let mut seen = vec![false; v];
        for &t in prompt.iter().chain(generated) {
            seen[t as usize] = true;
        }
        let mut count = vec![0u32; v];
        for &t in generated {
            count[t as usize] += 1;
        }
        for i in 0..v {
            if seen[i] {
                out[i] = if out[i] > 0.0 { out[i] / p.repetition_penalty } else { out[i] * p.repetition_penalty };
            }
            if count[i] > 0 {
                out[i] -= p.presence_penalty;
                out[i] -= p.frequency_penalty * count[i] as f32;
            }
        }
        for w in &p.bad_words {
            let n = w.len();
            if generated.len() >= n - 1 && generated[generated.len() - (n - 1)..] == w[..n - 1] {
                out[w[n - 1] as usize] = f32::NEG_INFINITY;
            }
        }
        if generated.len() < p.min_new_tokens {
            for &e in end_ids {
                out[e as usize] = f32::NEG_INFINITY;
            }
            for s in &p.stop_token_ids {
                if s.len() == 1 {
                    out[s[0] as usize] = f32::NEG_INFINITY;
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn processors_match_reference(seed in any::<u64>(), v in 2usize..64, np in 0usize..20, ng in 0usize..30) {
            let mut r = Rng::new(seed);
            let logits: Vec<f32> = (0..v).map(|_| r.uniform(-5.0, 5.0)).collect();
            let prompt: Vec<u32> = (0..np).map(|_| r.below(v as u64) as u32).collect();
            let generated: Vec<u32> = (0..ng).map(|_| r.below(v as u64) as u32).collect();
            let pick = |r: &mut Rng, n: usize| (0..n).map(|_| r.below(v as u64) as u32).collect::<Vec<u32>>();
            let mut bad_words = vec![pick(&mut r, 1)];
            // A bad word whose prefix matches the generated suffix, when there is one.
            if ng >= 2 {
                let mut w = generated[ng - 2..].to_vec();
                w.push(r.below(v as u64) as u32);
                bad_words.push(w);
            }
            bad_words.push(pick(&mut r, 3));
            let params = SamplingParams {
                repetition_penalty: r.uniform(0.5, 2.0),
                presence_penalty: r.uniform(-1.0, 1.0),
                frequency_penalty: r.uniform(-1.0, 1.0),
                bad_words,
                stop_token_ids: vec![pick(&mut r, 1), pick(&mut r, 2)],
                min_new_tokens: r.below(40) as usize,
                max_new_tokens: 64,
                ..Default::default()
            };
            let n_end = 1 + r.below(2) as usize;
            let end_ids = pick(&mut r, n_end);
            let procs = Processors::new(&params, &prompt, &end_ids);
            let mut counts = TokenCounts::new();
            counts.sync(&generated);
            let mut got = logits.clone();
            procs.apply(&mut got, &generated, &counts);
            let want = reference(&logits, &params, &prompt, &generated, &end_ids);
            for i in 0..v {
                let (g, w) = (got[i], want[i]);
                prop_assert!(g == w || (g - w).abs() <= 1e-5 * w.abs().max(1.0), "token {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn repetition_penalty_hf_semantics() {
        let mut l = vec![2.0, -2.0, 3.0, 1.0];
        apply_repetition_penalty(&mut l, 2.0, [0, 1, 7]);
        assert_eq!(l, vec![1.0, -4.0, 3.0, 1.0]);
    }

    #[test]
    fn bad_words_ban_only_when_the_prefix_matches() {
        let base = vec![0.5, 1.5, -0.5, 2.5, 0.25];
        let words = vec![vec![1, 2, 3], vec![4]];
        let mut l = base.clone();
        ban_bad_words(&mut l, &words, &[0, 1, 2]);
        assert_eq!(l, vec![0.5, 1.5, -0.5, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        for generated in [&[0, 2, 1][..], &[2], &[1], &[]] {
            let mut l = base.clone();
            ban_bad_words(&mut l, &words, generated);
            assert_eq!(l[3], 2.5, "generated {generated:?}");
            assert_eq!(l[4], f32::NEG_INFINITY);
        }
    }

    #[test]
    fn min_new_tokens_masks_end_and_single_stop_ids() {
        let params = SamplingParams {
            min_new_tokens: 2,
            stop_token_ids: vec![vec![1], vec![2, 3]],
            ..Default::default()
        };
        let procs = Processors::new(&params, &[], &[0]);
        let counts = TokenCounts::new();
        let base = vec![3.0, 2.0, 1.0, 0.5, -1.0];
        let mut l = base.clone();
        procs.apply(&mut l, &[4], &counts);
        assert_eq!(l, vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, 0.5, -1.0]);
        let mut l = base.clone();
        procs.apply(&mut l, &[4, 4], &counts);
        assert_eq!(l, base);
    }

    #[test]
    fn counts_sync_and_push_count_each_token_once() {
        let mut c = TokenCounts::new();
        c.push(3);
        c.sync(&[3, 5, 3]);
        c.sync(&[3, 5, 3]);
        c.push(5);
        c.sync(&[3, 5, 3, 5]);
        assert_eq!((c.get(3), c.get(5), c.get(9), c.len()), (2, 2, 0, 4));
    }

    #[test]
    fn out_of_vocab_ids_are_skipped() {
        let params = SamplingParams { repetition_penalty: 2.0, bad_words: vec![vec![50]], ..Default::default() };
        let procs = Processors::new(&params, &[1, 99], &[]);
        let mut l = vec![1.0, 4.0];
        procs.apply(&mut l, &[], &TokenCounts::new());
        assert_eq!(l, vec![1.0, 2.0]);
    }
}
