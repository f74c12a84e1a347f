//! Beam search for one request ([`BeamSearch`]): `beam_width` live beams advanced one token
//! per step, finished hypotheses scored with the length penalty.
//!
//! Each step, for every live beam row: the processors (penalties over the beam's own
//! tokens, bad words, min-tokens masking), then log-softmax (f64 log-sum-exp; temperature
//! and top-k/top-p/min-p do not apply to beam search). The best `W × (1 + E)` candidates
//! (`E` = distinct last tokens of end ids and stop sequences; `2W` with one end id) over all
//! rows are ranked by cumulative log-prob (ties → lower beam, then lower token). In rank
//! order, a candidate that completes an end id or stop sequence (past `min_new_tokens`)
//! becomes a finished hypothesis when its rank is below `W` (else it is dropped), others
//! become the next live beams until there are `W`. Finished hypotheses keep the `W` best by
//! `score = cum_logprob / len^length_penalty`, where `len` counts the generated tokens
//! including the end token (whose log-prob is part of `cum_logprob`); their tokens are
//! returned without the end id / stop sequence.
//!
//! Done (Hugging Face's default, non-exhaustive criterion) when `W` hypotheses finished and
//! the best live beam's current score does not beat the worst finished one, when no live
//! beam is left, or at `max_new_tokens`, where the live beams join the finished set.
//!
//! The first step uses only the first row of logits (all beams are equal then). When fewer
//! than `W` candidates are possible (a vocabulary smaller than `W`, or masking), the
//! missing beams are dead copies of the best one (cumulative log-prob `-inf`): the executor
//! still gets `W` parents and tokens, and dead beams are never returned.

use super::params::SamplingParams;
use super::processors::{Processors, TokenCounts};
use super::sample::argmax_logsumexp;
use super::stop::StopMatcher;
use std::cmp::Ordering;

/// The outcome of one beam step: new beam `i` is old beam `parents[i]` extended by
/// `tokens[i]` (the executor reorders its KV caches by `parents`).
#[derive(Clone, Debug, PartialEq)]
pub struct BeamStep {
    pub parents: Vec<usize>,
    pub tokens: Vec<u32>,
    pub done: bool,
}

/// A returned hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamHypothesis {
    /// Generated tokens, without the end id / stop sequence.
    pub tokens: Vec<u32>,
    /// Sum of the chosen tokens' log-probs (the end token's included).
    pub cum_logprob: f32,
    /// `cum_logprob / len^length_penalty`.
    pub score: f32,
}

#[derive(Clone, Debug)]
struct Beam {
    tokens: Vec<u32>,
    cum: f64,
    counts: TokenCounts,
}

#[derive(Clone, Debug)]
struct Finished {
    tokens: Vec<u32>,
    cum: f64,
    score: f64,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    beam: usize,
    token: u32,
    cum: f64,
}

/// Beam search state of one request.
#[derive(Clone, Debug)]
pub struct BeamSearch {
    width: usize,
    length_penalty: f64,
    max_new_tokens: usize,
    /// Candidates kept per step: `W × (1 + E)`.
    candidates: usize,
    processors: Processors,
    stop: StopMatcher,
    live: Vec<Beam>,
    finished: Vec<Finished>,
    steps: usize,
    done: bool,
    row: Vec<f32>,
    order: Vec<u32>,
    cands: Vec<Candidate>,
}

impl BeamSearch {
    /// Beam search without a prompt for the repetition penalty; see
    /// [`BeamSearch::with_prompt`]. `end_ids`: the model's (replaced by `params.end_id`,
    /// none with `ignore_eos`).
    pub fn new(params: &SamplingParams, end_ids: &[u32]) -> BeamSearch {
        BeamSearch::with_prompt(params, &[], end_ids)
    }

    /// Beam search whose repetition penalty also covers `prompt`.
    pub fn with_prompt(params: &SamplingParams, prompt: &[u32], end_ids: &[u32]) -> BeamSearch {
        let width = params.beam_width.max(1);
        let effective_end = params.effective_end_ids(end_ids);
        let mut terminals: Vec<u32> = effective_end.clone();
        terminals.extend(params.stop_token_ids.iter().filter_map(|s| s.last().copied()));
        terminals.sort_unstable();
        terminals.dedup();
        BeamSearch {
            width,
            length_penalty: f64::from(params.length_penalty),
            max_new_tokens: params.max_new_tokens,
            candidates: width * (1 + terminals.len()),
            processors: Processors::new(params, prompt, &effective_end),
            stop: StopMatcher::new(params, end_ids),
            live: vec![Beam { tokens: Vec::new(), cum: 0.0, counts: TokenCounts::new() }; width],
            finished: Vec::new(),
            steps: 0,
            done: false,
            row: Vec::new(),
            order: Vec::new(),
            cands: Vec::new(),
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The generated tokens of live beam `i`.
    pub fn live_tokens(&self, i: usize) -> &[u32] {
        &self.live[i].tokens
    }

    fn score(&self, cum: f64, len: usize) -> f64 {
        cum / (len.max(1) as f64).powf(self.length_penalty)
    }

    /// One step. `logits`: `beam_width` rows of `vocab` (only the first row is read at the
    /// first step; it may then hold just one row). After `done`, returns an empty step.
    pub fn step(&mut self, logits: &[f32], vocab: usize) -> BeamStep {
        if self.done {
            return BeamStep { parents: Vec::new(), tokens: Vec::new(), done: true };
        }
        let w = self.width;
        let rows = if self.steps == 0 { 1 } else { w };
        assert!(vocab > 0 && logits.len() >= rows * vocab, "BeamSearch::step: {} logits for {rows} rows of {vocab}", logits.len());
        let per_row = self.candidates.min(vocab);

        self.cands.clear();
        for b in 0..rows {
            let beam = &self.live[b];
            if beam.cum == f64::NEG_INFINITY {
                continue;
            }
            self.row.clear();
            self.row.extend_from_slice(&logits[b * vocab..(b + 1) * vocab]);
            self.processors.apply(&mut self.row, &beam.tokens, &beam.counts);
            let (_, m, lse) = argmax_logsumexp(&self.row);
            if m == f32::NEG_INFINITY {
                continue;
            }
            let row = &self.row;
            self.order.clear();
            self.order.extend(0..vocab as u32);
            let cmp = |a: &u32, b: &u32| {
                let (x, y) = (row[*a as usize], row[*b as usize]);
                // NaN sorts last.
                match (x.is_nan(), y.is_nan()) {
                    (false, false) => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
                    (nx, ny) => nx.cmp(&ny),
                }
                .then(a.cmp(b))
            };
            if per_row < vocab {
                self.order.select_nth_unstable_by(per_row - 1, cmp);
            }
            for &t in &self.order[..per_row] {
                let lp = f64::from(row[t as usize]) - f64::from(m) - lse;
                if lp.is_finite() {
                    self.cands.push(Candidate { beam: b, token: t, cum: beam.cum + lp });
                }
            }
        }
        self.cands.sort_unstable_by(|a, b| {
            b.cum.partial_cmp(&a.cum).unwrap_or(Ordering::Equal).then(a.beam.cmp(&b.beam)).then(a.token.cmp(&b.token))
        });
        self.cands.truncate(self.candidates);

        let mut next: Vec<Beam> = Vec::with_capacity(w);
        let mut parents = Vec::with_capacity(w);
        let mut tokens = Vec::with_capacity(w);
        let needs_counts = self.processors.needs_counts();
        for rank in 0..self.cands.len() {
            if next.len() == w {
                break;
            }
            let c = self.cands[rank];
            let parent = &self.live[c.beam];
            if let Some(strip) = self.stop.check_next(&parent.tokens, c.token) {
                if rank < w {
                    let len = parent.tokens.len() + 1;
                    let mut hyp = parent.tokens.clone();
                    hyp.push(c.token);
                    hyp.truncate(len - strip);
                    let score = self.score(c.cum, len);
                    self.finished.push(Finished { tokens: hyp, cum: c.cum, score });
                }
                continue;
            }
            let mut beam = Beam { tokens: parent.tokens.clone(), cum: c.cum, counts: parent.counts.clone() };
            beam.tokens.push(c.token);
            if needs_counts {
                beam.counts.push(c.token);
            }
            next.push(beam);
            parents.push(c.beam);
            tokens.push(c.token);
        }
        // Dead fillers: copies of the best new beam (or of beam 0) that can never win.
        while next.len() < w {
            let (parent, token) = match (parents.first(), tokens.first()) {
                (Some(&p), Some(&t)) => (p, t),
                _ => (0, self.cands.first().map_or(0, |c| c.token)),
            };
            let mut beam = self.live[parent].clone();
            beam.tokens.push(token);
            beam.cum = f64::NEG_INFINITY;
            next.push(beam);
            parents.push(parent);
            tokens.push(token);
        }
        self.live = next;
        self.steps += 1;
        self.finished.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal));
        self.finished.truncate(w);

        let best_live = self.live.iter().map(|b| b.cum).filter(|c| c.is_finite()).fold(f64::NEG_INFINITY, f64::max);
        if self.steps >= self.max_new_tokens {
            let steps = self.steps;
            for b in self.live.iter().filter(|b| b.cum.is_finite()) {
                let score = b.cum / (steps as f64).powf(self.length_penalty);
                self.finished.push(Finished { tokens: b.tokens.clone(), cum: b.cum, score });
            }
            self.finished.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal));
            self.finished.truncate(w);
            self.done = true;
        } else if best_live == f64::NEG_INFINITY {
            self.done = true;
        } else if self.finished.len() >= w {
            let worst = self.finished[self.finished.len() - 1].score;
            self.done = worst >= self.score(best_live, self.steps);
        }
        BeamStep { parents, tokens, done: self.done }
    }

    /// The `n` best hypotheses, best first: finished ones by score, then (if fewer than `n`
    /// finished) live beams by their current score. Fewer than `n` when there are not
    /// enough (dead beams are never returned).
    pub fn best(&self, n: usize) -> Vec<BeamHypothesis> {
        let mut out: Vec<BeamHypothesis> = self
            .finished
            .iter()
            .take(n)
            .map(|f| BeamHypothesis { tokens: f.tokens.clone(), cum_logprob: f.cum as f32, score: f.score as f32 })
            .collect();
        if out.len() < n && !self.done {
            let mut live: Vec<BeamHypothesis> = self
                .live
                .iter()
                .filter(|b| b.cum.is_finite())
                .map(|b| BeamHypothesis {
                    tokens: b.tokens.clone(),
                    cum_logprob: b.cum as f32,
                    score: self.score(b.cum, b.tokens.len()) as f32,
                })
                .collect();
            live.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal));
            out.extend(live.into_iter().take(n - out.len()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::sample::Sampler;
    use crate::testing::Rng;
    use proptest::prelude::*;

    /// A Markov "model": the next-token logits depend only on the last token (`start` row
    /// for the first step).
    struct Markov {
        vocab: usize,
        start: Vec<f32>,
        table: Vec<Vec<f32>>,
    }

    impl Markov {
        fn random(r: &mut Rng, vocab: usize, spread: f32) -> Markov {
            let row = |r: &mut Rng| (0..vocab).map(|_| r.uniform(-spread, spread)).collect::<Vec<f32>>();
            Markov { vocab, start: row(r), table: (0..vocab).map(|_| row(r)).collect() }
        }

        fn from_probs(start: &[f64], table: &[&[f64]]) -> Markov {
            let ln = |p: &[f64]| p.iter().map(|&x| x.ln() as f32).collect::<Vec<f32>>();
            Markov { vocab: start.len(), start: ln(start), table: table.iter().map(|r| ln(r)).collect() }
        }

        fn logits(&self, tokens: &[u32]) -> &[f32] {
            tokens.last().map_or(&self.start, |&t| &self.table[t as usize])
        }

        fn logprob(&self, tokens: &[u32], next: u32) -> f64 {
            let l = self.logits(tokens);
            let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(m) + l.iter().map(|&x| (f64::from(x) - f64::from(m)).exp()).sum::<f64>().ln();
            f64::from(l[next as usize]) - lse
        }

        fn seq_logprob(&self, seq: &[u32]) -> f64 {
            (0..seq.len()).map(|i| self.logprob(&seq[..i], seq[i])).sum()
        }

        /// Runs beam search to the end, feeding each live beam's logits.
        fn beam(&self, params: &SamplingParams, end_ids: &[u32]) -> BeamSearch {
            let mut bs = BeamSearch::new(params, end_ids);
            let mut beams = vec![Vec::<u32>::new(); params.beam_width];
            loop {
                let logits: Vec<f32> = beams.iter().flat_map(|b| self.logits(b).to_vec()).collect();
                let step = bs.step(&logits, self.vocab);
                beams = step.parents.iter().zip(&step.tokens).map(|(&p, &t)| [&beams[p][..], &[t]].concat()).collect();
                for (i, b) in beams.iter().enumerate() {
                    assert_eq!(bs.live_tokens(i), &b[..]);
                }
                if step.done {
                    return bs;
                }
            }
        }

        /// Greedy decoding with the Sampler and StopMatcher.
        fn greedy(&self, params: &SamplingParams, end_ids: &[u32]) -> Vec<u32> {
            let params = SamplingParams { temperature: 0.0, ..params.clone() };
            let mut s = Sampler::new(&params, &[], end_ids);
            let stop = StopMatcher::new(&params, end_ids);
            let mut out = Vec::new();
            loop {
                let t = s.sample(&mut self.logits(&out).to_vec(), &out).id;
                out.push(t);
                if let Some(n) = stop.check_tokens(&out) {
                    out.truncate(out.len() - n);
                    return out;
                }
                if stop.reached_max(out.len()) {
                    return out;
                }
            }
        }

        fn brute_force_best(&self, len: usize) -> (Vec<u32>, f64) {
            let mut best = (Vec::new(), f64::NEG_INFINITY);
            let total = self.vocab.pow(len as u32);
            for mut code in 0..total {
                let seq: Vec<u32> = (0..len)
                    .map(|_| {
                        let t = (code % self.vocab) as u32;
                        code /= self.vocab;
                        t
                    })
                    .collect();
                let lp = self.seq_logprob(&seq);
                if lp > best.1 {
                    best = (seq, lp);
                }
            }
            best
        }
    }

    #[test]
    fn width_3_finds_the_best_sequence_where_greedy_does_not() {
        // Token 0 is the likeliest first token but leads to a flat distribution; token 1 is
        // second but leads to near-certain continuations.
        let flat: &[f64] = &[0.25, 0.25, 0.25, 0.25];
        let m = Markov::from_probs(&[0.5, 0.4, 0.05, 0.05], &[flat, &[0.01, 0.01, 0.97, 0.01], &[0.05, 0.03, 0.02, 0.9], flat]);
        let params = SamplingParams { beam_width: 3, n: 3, max_new_tokens: 3, ..Default::default() };
        let (want, want_lp) = m.brute_force_best(3);
        assert_eq!(want, vec![1, 2, 3]);
        let greedy = m.greedy(&params, &[]);
        assert_eq!(greedy[0], 0, "greedy takes the trap");
        let bs = m.beam(&params, &[]);
        let best = bs.best(3);
        assert_eq!(best.len(), 3);
        assert_eq!(best[0].tokens, want);
        assert!((f64::from(best[0].cum_logprob) - want_lp).abs() < 1e-4);
        for h in &best {
            assert!((f64::from(h.cum_logprob) - m.seq_logprob(&h.tokens)).abs() < 1e-4);
            assert!((h.score - h.cum_logprob / 3.0).abs() < 1e-5);
        }
        assert!(best.windows(2).all(|p| p[0].score >= p[1].score));
    }

    proptest! {
        /// With W = V^(L-1) beam search keeps every prefix: it is exhaustive, so it must find
        /// the brute-force optimum; its top-W list must be the W best sequences.
        #[test]
        fn exhaustive_width_matches_brute_force(seed in any::<u64>()) {
            let mut r = Rng::new(seed);
            let m = Markov::random(&mut r, 3, 3.0);
            let params = SamplingParams { beam_width: 9, n: 9, max_new_tokens: 3, length_penalty: 0.0, ..Default::default() };
            let (want, want_lp) = m.brute_force_best(3);
            let best = m.beam(&params, &[]).best(9);
            prop_assert_eq!(&best[0].tokens, &want);
            prop_assert!((f64::from(best[0].cum_logprob) - want_lp).abs() < 1e-4);
            for h in &best {
                prop_assert!((f64::from(h.cum_logprob) - m.seq_logprob(&h.tokens)).abs() < 1e-4);
            }
        }

        /// Beam width 1 is greedy decoding (with an end id and a min length too).
        #[test]
        fn width_1_is_greedy(seed in any::<u64>(), vocab in 2usize..12, max in 1usize..12, min in 0usize..3) {
            let mut r = Rng::new(seed);
            let m = Markov::random(&mut r, vocab, 4.0);
            let end = r.below(vocab as u64) as u32;
            let params = SamplingParams { beam_width: 1, max_new_tokens: max, min_new_tokens: min.min(max), ..Default::default() };
            let greedy = m.greedy(&params, &[end]);
            let best = m.beam(&params, &[end]).best(1);
            prop_assert_eq!(&best[0].tokens, &greedy);
        }

        /// The cumulative log-prob of every returned hypothesis is the sum of its tokens'
        /// log-probs, the end token's included when it ended.
        #[test]
        fn cum_logprob_is_the_sum_of_chosen_logprobs(seed in any::<u64>(), vocab in 3usize..10, w in 1usize..5) {
            let mut r = Rng::new(seed);
            let m = Markov::random(&mut r, vocab, 3.0);
            let end = 0u32;
            let params = SamplingParams { beam_width: w, n: w, max_new_tokens: 6, length_penalty: 0.7, ..Default::default() };
            let bs = m.beam(&params, &[end]);
            let best = bs.best(w);
            prop_assert!(!best.is_empty());
            for h in &best {
                prop_assert!(!h.tokens.contains(&end));
                // Six tokens: cut by max_new_tokens; fewer: ended by the end id.
                let body = m.seq_logprob(&h.tokens);
                let (lp, len) = if h.tokens.len() == 6 {
                    (body, 6)
                } else {
                    (body + m.logprob(&h.tokens, end), h.tokens.len() + 1)
                };
                prop_assert!((f64::from(h.cum_logprob) - lp).abs() < 1e-4, "{} vs {}", h.cum_logprob, lp);
                prop_assert!((f64::from(h.score) - lp / (len as f64).powf(0.7)).abs() < 1e-4);
            }
            prop_assert!(best.windows(2).all(|p| p[0].score >= p[1].score));
        }
    }

    #[test]
    fn end_id_finishes_a_hypothesis_without_the_end_token() {
        // From the start: token 1 (end) is likely; otherwise token 2 then certain end.
        let m = Markov::from_probs(
            &[0.1, 0.5, 0.4],
            &[&[0.4, 0.3, 0.3], &[0.34, 0.33, 0.33], &[0.01, 0.98, 0.01]],
        );
        let params = SamplingParams { beam_width: 2, n: 2, max_new_tokens: 5, length_penalty: 0.0, ..Default::default() };
        let bs = m.beam(&params, &[1]);
        let best = bs.best(2);
        assert_eq!(best[0].tokens, Vec::<u32>::new());
        assert!((f64::from(best[0].cum_logprob) - 0.5f64.ln()).abs() < 1e-5);
        assert_eq!(best[1].tokens, vec![2]);
        assert!((f64::from(best[1].cum_logprob) - (0.4f64 * 0.98).ln()).abs() < 1e-5);
        // min_new_tokens 1 forbids the immediate end.
        let params = SamplingParams { min_new_tokens: 1, ..params };
        let best = m.beam(&params, &[1]).best(1);
        assert_eq!(best[0].tokens, vec![2]);
    }

    #[test]
    fn vocabulary_smaller_than_width_leaves_dead_beams_out() {
        let m = Markov::from_probs(&[0.7, 0.3], &[&[0.6, 0.4], &[0.5, 0.5]]);
        let params = SamplingParams { beam_width: 4, n: 4, max_new_tokens: 1, ..Default::default() };
        let bs = m.beam(&params, &[]);
        let best = bs.best(4);
        assert_eq!(best.iter().map(|h| h.tokens.clone()).collect::<Vec<_>>(), vec![vec![0], vec![1]]);
        let params = SamplingParams { max_new_tokens: 2, ..params };
        let best = m.beam(&params, &[]).best(4);
        assert_eq!(best.len(), 4);
        assert_eq!(best[0].tokens, vec![0, 0]);
    }

    #[test]
    fn bad_words_apply_per_beam() {
        let flat: &[f64] = &[0.25, 0.25, 0.25, 0.25];
        let m = Markov::from_probs(&[0.4, 0.3, 0.2, 0.1], &[&[0.1, 0.7, 0.1, 0.1], flat, flat, flat]);
        let params = SamplingParams { beam_width: 2, max_new_tokens: 2, bad_words: vec![vec![0, 1]], ..Default::default() };
        let best = m.beam(&params, &[]).best(2);
        for h in &best {
            assert!(!h.tokens.windows(2).any(|w| w == [0, 1]), "{:?}", h.tokens);
        }
    }
}
