//! Stop conditions on a request's growing output ([`StopMatcher`]): end ids and stop token
//! sequences on the tokens, stop strings on the detokenized text, and the hold-back a
//! streaming server needs so that it never emits the start of a stop string it will later
//! have to take back.
//!
//! Token rule: after appending a token, a stop sequence (or an end id, unless `ignore_eos`)
//! that ends at the last token stops generation, and its tokens are stripped from the
//! output. When several end there the longest is stripped. Nothing fires while the output
//! has at most `min_new_tokens` tokens (so the stopping token is at position
//! `min_new_tokens` or later, matching the sampler's min-tokens masking).
//!
//! Text rule: the text is truncated before the earliest occurrence of any stop string.
//! Every byte index returned is a char boundary.

use super::params::SamplingParams;

/// A request's stop conditions.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    /// Stop token sequences and the end ids in force (as one-token sequences).
    sequences: Vec<Vec<u32>>,
    stop_strings: Vec<String>,
    /// The longest stop string, in bytes.
    max_stop_len: usize,
    min_new_tokens: usize,
    max_new_tokens: usize,
}

impl StopMatcher {
    /// `end_ids`: the model's end ids (replaced by `params.end_id` when set; none with
    /// `ignore_eos`).
    pub fn new(params: &SamplingParams, end_ids: &[u32]) -> StopMatcher {
        let mut sequences: Vec<Vec<u32>> = params.stop_token_ids.iter().filter(|s| !s.is_empty()).cloned().collect();
        sequences.extend(params.effective_end_ids(end_ids).into_iter().map(|id| vec![id]));
        let stop_strings: Vec<String> = params.stop_strings.iter().filter(|s| !s.is_empty()).cloned().collect();
        StopMatcher {
            max_stop_len: stop_strings.iter().map(String::len).max().unwrap_or(0),
            sequences,
            stop_strings,
            min_new_tokens: params.min_new_tokens,
            max_new_tokens: params.max_new_tokens,
        }
    }

    /// After appending a token: `Some(n)` when a stop sequence or end id ends at the last
    /// token of `generated` (strip the last `n` tokens), else `None`. Honours `ignore_eos`
    /// and `min_new_tokens`.
    pub fn check_tokens(&self, generated: &[u32]) -> Option<usize> {
        if generated.len() <= self.min_new_tokens {
            return None;
        }
        self.sequences.iter().filter(|s| generated.ends_with(s)).map(Vec::len).max()
    }

    /// [`StopMatcher::check_tokens`] of `generated` followed by `next`, without building it.
    pub fn check_next(&self, generated: &[u32], next: u32) -> Option<usize> {
        if generated.len() < self.min_new_tokens {
            return None;
        }
        self.sequences
            .iter()
            .filter(|s| s.split_last().is_some_and(|(&last, rest)| last == next && generated.ends_with(rest)))
            .map(Vec::len)
            .max()
    }

    /// Whether a sequence of `generated_len` tokens has reached `max_new_tokens`.
    pub fn reached_max(&self, generated_len: usize) -> bool {
        generated_len >= self.max_new_tokens
    }

    /// Whether there are stop strings at all (no need to detokenize for them otherwise).
    pub fn has_stop_strings(&self) -> bool {
        !self.stop_strings.is_empty()
    }

    /// `Some(byte index to truncate `text` at)` when any stop string occurs in `text` (the
    /// start of the earliest occurrence), else `None`.
    pub fn check_text(&self, text: &str) -> Option<usize> {
        self.check_text_from(text, 0)
    }

    /// [`StopMatcher::check_text`] for a text whose first `checked` bytes were already
    /// checked without a match: only occurrences ending past `checked` are searched for, so
    /// a stream costs time proportional to its deltas, not quadratic.
    pub fn check_text_from(&self, text: &str, checked: usize) -> Option<usize> {
        let mut start = checked.min(text.len()).saturating_sub(self.max_stop_len.saturating_sub(1));
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let window = &text[start..];
        self.stop_strings.iter().filter_map(|s| window.find(s.as_str())).min().map(|i| start + i)
    }

    /// The number of trailing bytes of `text` that could be the start of a stop string (a
    /// proper prefix of one): a streaming server emits only `text[..text.len() - holdback]`.
    /// Always leaves a char boundary.
    pub fn holdback(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let mut best = 0;
        for s in &self.stop_strings {
            let longest = (s.len() - 1).min(bytes.len());
            if let Some(k) = (best + 1..=longest)
                .rev()
                .find(|&k| s.is_char_boundary(k) && bytes.ends_with(&s.as_bytes()[..k]))
            {
                best = k;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use proptest::prelude::*;

    fn matcher(stop_strings: &[&str]) -> StopMatcher {
        let params =
            SamplingParams { stop_strings: stop_strings.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        StopMatcher::new(&params, &[])
    }

    #[test]
    fn stop_sequences_across_token_boundaries() {
        let params = SamplingParams { stop_token_ids: vec![vec![5, 6, 7], vec![9]], ..Default::default() };
        let m = StopMatcher::new(&params, &[2]);
        assert_eq!(m.check_tokens(&[1, 5]), None);
        assert_eq!(m.check_tokens(&[1, 5, 6]), None);
        assert_eq!(m.check_tokens(&[1, 5, 6, 7]), Some(3));
        assert_eq!(m.check_tokens(&[5, 6, 7]), Some(3));
        assert_eq!(m.check_tokens(&[6, 7]), None);
        assert_eq!(m.check_tokens(&[5, 6, 7, 1]), None);
        assert_eq!(m.check_tokens(&[1, 9]), Some(1));
        assert_eq!(m.check_tokens(&[1, 2]), Some(1), "the end id is stripped too");
        assert_eq!(m.check_next(&[1, 5, 6], 7), Some(3));
        assert_eq!(m.check_next(&[1, 5, 6], 8), None);
        assert_eq!(m.check_next(&[], 2), Some(1));
    }

    #[test]
    fn longest_match_is_stripped() {
        let params = SamplingParams { stop_token_ids: vec![vec![7], vec![6, 7], vec![4, 6, 7]], ..Default::default() };
        let m = StopMatcher::new(&params, &[]);
        assert_eq!(m.check_tokens(&[4, 6, 7]), Some(3));
        assert_eq!(m.check_tokens(&[3, 6, 7]), Some(2));
    }

    #[test]
    fn ignore_eos_min_new_tokens_and_end_id_override() {
        let base = SamplingParams { stop_token_ids: vec![vec![9]], ..Default::default() };
        let m = StopMatcher::new(&SamplingParams { ignore_eos: true, ..base.clone() }, &[2]);
        assert_eq!(m.check_tokens(&[1, 2]), None);
        assert_eq!(m.check_tokens(&[1, 9]), Some(1), "stop ids still stop with ignore_eos");
        let m = StopMatcher::new(&SamplingParams { min_new_tokens: 2, ..base.clone() }, &[2]);
        assert_eq!(m.check_tokens(&[2]), None);
        assert_eq!(m.check_tokens(&[1, 2]), None);
        assert_eq!(m.check_tokens(&[1, 1, 2]), Some(1));
        assert_eq!(m.check_next(&[1], 2), None);
        assert_eq!(m.check_next(&[1, 1], 2), Some(1));
        let m = StopMatcher::new(&SamplingParams { end_id: Some(3), ..base }, &[2]);
        assert_eq!((m.check_tokens(&[2]), m.check_tokens(&[3])), (None, Some(1)));
        assert!(m.reached_max(16) && !m.reached_max(15));
    }

    #[test]
    fn stop_strings_and_holdback() {
        let m = matcher(&["world", "\n\n"]);
        assert_eq!(m.check_text("hello wor"), None);
        assert_eq!(m.holdback("hello wor"), 3);
        assert_eq!(m.check_text("hello world!"), Some(6));
        assert_eq!(m.check_text("a\n\nb world"), Some(1));
        assert_eq!(m.holdback("a\n"), 1);
        assert_eq!(m.holdback("hello"), 0);
        assert_eq!(m.holdback(""), 0);
        assert_eq!(m.check_text_from("hello world", 8), Some(6));
        assert_eq!(m.check_text_from("hello world", 9), Some(6), "\"hello wor\" was checked");
    }

    #[test]
    fn utf8_boundaries() {
        let m = matcher(&["😀!", "停止"]);
        assert_eq!(m.holdback("abc😀"), "😀".len());
        assert_eq!(m.holdback("abc停"), "停".len());
        assert_eq!(m.check_text("ab😀!c"), Some(2));
        assert_eq!(m.check_text("说停止了"), Some("说".len()));
        assert_eq!(m.check_text("😀停"), None);
        // A stop string sharing only a lead byte pattern with the text never splits a char.
        let m = matcher(&["é"]);
        assert_eq!(m.holdback("è"), 0);
        // Windowed search starts on a char boundary even when `checked` falls inside a char.
        let m = matcher(&["止x"]);
        assert_eq!(m.check_text_from("停止x", 4), Some(3));
    }

    const ALPHABET: [&str; 7] = ["a", "b", "é", "😀", "停", "止", "\n"];

    fn random_text(r: &mut Rng, chars: usize) -> String {
        (0..chars).map(|_| ALPHABET[r.below(ALPHABET.len() as u64) as usize]).collect()
    }

    proptest! {
        /// A streaming server that emits `text[..len - holdback]` after each delta and stops
        /// at `check_text_from` never has to take anything back, and emits exactly the text
        /// seen when a stop string first occurred, truncated at the earliest occurrence then
        /// (a long stop string that would have started earlier but was not complete yet does
        /// not count: generation has stopped).
        #[test]
        fn streaming_with_holdback_emits_the_truncated_text(seed in any::<u64>(), chars in 0usize..40, nstops in 1usize..3) {
            let mut r = Rng::new(seed);
            let text = random_text(&mut r, chars);
            let stops: Vec<String> = (0..nstops).map(|_| { let n = 1 + r.below(3) as usize; random_text(&mut r, n) }).collect();
            let m = matcher(&stops.iter().map(String::as_str).collect::<Vec<_>>());
            // Split into deltas at random char boundaries.
            let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
            let mut deltas = Vec::new();
            let mut prev = 0;
            for &b in &bounds[1..] {
                if r.below(3) == 0 || b == text.len() {
                    deltas.push(&text[prev..b]);
                    prev = b;
                }
            }
            // The reference: the first delta boundary where some stop string occurs, and the
            // earliest occurrence in the text up to there.
            let mut want_cut = None;
            let mut end = 0;
            for d in &deltas {
                end += d.len();
                want_cut = stops.iter().filter_map(|s| text[..end].find(s.as_str())).min();
                if want_cut.is_some() {
                    break;
                }
            }
            let want = &text[..want_cut.unwrap_or(text.len())];

            let mut buf = String::new();
            let mut emitted = String::new();
            let mut checked = 0;
            let mut stopped = false;
            for d in deltas {
                buf.push_str(d);
                prop_assert_eq!(m.check_text_from(&buf, checked), m.check_text(&buf));
                if let Some(cut) = m.check_text_from(&buf, checked) {
                    prop_assert!(cut >= emitted.len(), "already emitted past the stop");
                    emitted.push_str(&buf[emitted.len()..cut]);
                    stopped = true;
                    break;
                }
                checked = buf.len();
                let safe = buf.len() - m.holdback(&buf);
                prop_assert!(safe >= emitted.len(), "holdback shrank below what was emitted");
                emitted.push_str(&buf[emitted.len()..safe]);
            }
            if !stopped {
                emitted.push_str(&buf[emitted.len()..]);
            }
            prop_assert_eq!(emitted.as_str(), want);
            prop_assert_eq!(stopped, want_cut.is_some());
        }

        /// holdback is the longest suffix that is a proper prefix of a stop string.
        #[test]
        fn holdback_matches_reference(seed in any::<u64>(), chars in 0usize..12) {
            let mut r = Rng::new(seed);
            let text = random_text(&mut r, chars);
            let stops: Vec<String> = (0..2).map(|_| { let n = 1 + r.below(4) as usize; random_text(&mut r, n) }).collect();
            let m = matcher(&stops.iter().map(String::as_str).collect::<Vec<_>>());
            let mut want = 0;
            for start in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let suffix = &text[start..];
                if !suffix.is_empty() && stops.iter().any(|s| s.len() > suffix.len() && s.starts_with(suffix)) {
                    want = want.max(suffix.len());
                }
            }
            prop_assert_eq!(m.holdback(&text), want);
        }
    }
}
