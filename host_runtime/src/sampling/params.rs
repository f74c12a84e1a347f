//! Per-request sampling parameters ([`SamplingParams`]), their defaults, and their
//! validation against the model ([`SamplingParams::validate`]).
//!
//! The struct derives `serde` with `#[serde(default)]`, so a server can parse a partial JSON
//! object (`{"temperature": 0.7, "max_new_tokens": 64}`) and get the defaults for the rest.
//! Parsing never validates: call [`SamplingParams::validate`] with the model's vocabulary
//! size before using the parameters; every sampler in this module assumes valid parameters.

use serde::{Deserialize, Serialize};

/// The largest `logprobs` count a request may ask for.
pub const MAX_LOGPROBS: usize = 20;

/// What one request asks of the sampler. See the module docs of [`crate::sampling`] for the
/// order in which the fields are applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 = greedy (argmax, ties → lowest id). Default 1.0.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = off. (`i64` so that a negative value
    /// can be rejected with a message rather than failing to parse.)
    pub top_k: i64,
    /// Nucleus sampling: keep the smallest most-likely prefix with mass ≥ `top_p`; 1.0 = off.
    /// Must be in (0, 1].
    pub top_p: f32,
    /// Keep tokens whose probability is ≥ `min_p` × the top probability; 0 = off. In [0, 1].
    pub min_p: f32,
    /// Hugging Face repetition penalty over the prompt and the generated tokens (each
    /// distinct token once): `logit > 0 ? logit / p : logit * p`. 1.0 = off; must be > 0.
    pub repetition_penalty: f32,
    /// OpenAI presence penalty over generated tokens: `logit -= presence` if the token
    /// occurred. 0 = off.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty over generated tokens: `logit -= frequency × count`. 0 = off.
    pub frequency_penalty: f32,
    /// Beam search hypothesis score = `cum_logprob / len^length_penalty`. Default 1.0.
    pub length_penalty: f32,
    /// Number of beams; 1 = no beam search.
    pub beam_width: usize,
    /// Number of returned sequences: ≤ `beam_width` with beam search; with `beam_width` 1,
    /// `n` independently sampled sequences. Default 1.
    pub n: usize,
    /// Seed of the request's generator; `None` = a fresh unpredictable seed.
    pub seed: Option<u64>,
    /// Strings that end generation; the output is truncated before the first occurrence.
    pub stop_strings: Vec<String>,
    /// Token sequences that end generation (a single id is a one-element sequence); the
    /// matched tokens are stripped from the output.
    pub stop_token_ids: Vec<Vec<u32>>,
    /// Token sequences never to produce: the last token is banned whenever the generated
    /// tokens end with the rest of the sequence (a one-token sequence is always banned).
    pub bad_words: Vec<Vec<u32>>,
    /// Overrides the model's end-of-sequence id; `None` = the model's (the executor fills it).
    pub end_id: Option<u32>,
    /// Treat end ids as ordinary tokens (generate until `max_new_tokens` or a stop).
    pub ignore_eos: bool,
    /// End ids and single-token stop sequences are masked until this many tokens were
    /// generated; no stop condition fires before.
    pub min_new_tokens: usize,
    /// The most tokens to generate. Default 16.
    pub max_new_tokens: usize,
    /// `Some(n)`: return the chosen token's log-prob and the `n` most likely (n ≤ 20).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            length_penalty: 1.0,
            beam_width: 1,
            n: 1,
            seed: None,
            stop_strings: Vec::new(),
            stop_token_ids: Vec::new(),
            bad_words: Vec::new(),
            end_id: None,
            ignore_eos: false,
            min_new_tokens: 0,
            max_new_tokens: 16,
            logprobs: None,
        }
    }
}

/// A rejected sampling parameter: the field's name (as in [`SamplingParams`]) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidParam {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Result<(), InvalidParam> {
    Err(InvalidParam { field, message: message.into() })
}

fn check_sequences(field: &'static str, seqs: &[Vec<u32>], vocab_size: usize) -> Result<(), InvalidParam> {
    for (i, seq) in seqs.iter().enumerate() {
        if seq.is_empty() {
            return invalid(field, format!("sequence {i} is empty"));
        }
        if let Some(&id) = seq.iter().find(|&&id| id as usize >= vocab_size) {
            return invalid(field, format!("sequence {i} has token id {id}, outside the vocabulary of {vocab_size}"));
        }
    }
    Ok(())
}

impl SamplingParams {
    /// Whether this request samples greedily (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether this request runs beam search (`beam_width > 1`).
    pub fn is_beam_search(&self) -> bool {
        self.beam_width > 1
    }

    /// The end ids in force: `[end_id]` when the request overrides it, else `model_end_ids`;
    /// none with `ignore_eos`.
    pub fn effective_end_ids(&self, model_end_ids: &[u32]) -> Vec<u32> {
        if self.ignore_eos {
            Vec::new()
        } else if let Some(id) = self.end_id {
            vec![id]
        } else {
            model_end_ids.to_vec()
        }
    }

    /// Checks every field against the model (`vocab_size` ids) and the engine
    /// (`max_beam_width`). Rejected, with the field named: NaN/negative/infinite
    /// temperature; `top_p` outside (0, 1]; `top_k` < 0; `min_p` outside [0, 1];
    /// `repetition_penalty` ≤ 0, NaN or infinite; NaN or infinite presence, frequency or
    /// length penalty; `beam_width` 0 or > `max_beam_width`; `n` 0, or > `beam_width` under
    /// beam search (`n` > 1 with `beam_width` 1 is allowed, even greedy); token ids outside
    /// the vocabulary (`stop_token_ids`, `bad_words`, `end_id`); empty stop strings; empty
    /// token sequences; `max_new_tokens` 0; `min_new_tokens` > `max_new_tokens`; `logprobs`
    /// > 20.
    pub fn validate(&self, vocab_size: usize, max_beam_width: usize) -> Result<(), InvalidParam> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return invalid("temperature", format!("{t} (must be finite and ≥ 0; 0 = greedy)"));
        }
        if self.top_k < 0 {
            return invalid("top_k", format!("{} (must be ≥ 0; 0 = off)", self.top_k));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return invalid("top_p", format!("{p} (must be in (0, 1]; 1 = off)"));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return invalid("min_p", format!("{m} (must be in [0, 1]; 0 = off)"));
        }
        let r = self.repetition_penalty;
        if !r.is_finite() || r <= 0.0 {
            return invalid("repetition_penalty", format!("{r} (must be finite and > 0; 1 = off)"));
        }
        for (field, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
            ("length_penalty", self.length_penalty),
        ] {
            if !v.is_finite() {
                return invalid(field, format!("{v} (must be finite)"));
            }
        }
        if self.beam_width == 0 || self.beam_width > max_beam_width {
            return invalid("beam_width", format!("{} (must be in 1..={max_beam_width})", self.beam_width));
        }
        if self.n == 0 {
            return invalid("n", "0 (must be ≥ 1)");
        }
        if self.beam_width > 1 && self.n > self.beam_width {
            return invalid("n", format!("{} (must be ≤ beam_width {} under beam search)", self.n, self.beam_width));
        }
        if let Some(i) = self.stop_strings.iter().position(|s| s.is_empty()) {
            return invalid("stop_strings", format!("string {i} is empty"));
        }
        check_sequences("stop_token_ids", &self.stop_token_ids, vocab_size)?;
        check_sequences("bad_words", &self.bad_words, vocab_size)?;
        if let Some(id) = self.end_id.filter(|&id| id as usize >= vocab_size) {
            return invalid("end_id", format!("{id} is outside the vocabulary of {vocab_size}"));
        }
        if self.max_new_tokens == 0 {
            return invalid("max_new_tokens", "0 (must be ≥ 1)");
        }
        if self.min_new_tokens > self.max_new_tokens {
            return invalid(
                "min_new_tokens",
                format!("{} is more than max_new_tokens {}", self.min_new_tokens, self.max_new_tokens),
            );
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_LOGPROBS) {
            return invalid("logprobs", format!("{n} (at most {MAX_LOGPROBS})"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 100;

    fn rejected(p: SamplingParams) -> &'static str {
        match p.validate(VOCAB, 4) {
            Ok(()) => panic!("accepted {p:?}"),
            Err(e) => {
                assert!(e.to_string().starts_with(&format!("invalid {}: ", e.field)), "{e}");
                e.field
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        let p = SamplingParams::default();
        assert_eq!(p.validate(VOCAB, 1), Ok(()));
        assert_eq!((p.temperature, p.top_p, p.beam_width, p.n, p.max_new_tokens), (1.0, 1.0, 1, 1, 16));
    }

    #[test]
    fn accepts_edge_values() {
        let ok = |p: SamplingParams| assert_eq!(p.validate(VOCAB, 4), Ok(()), "{p:?}");
        ok(SamplingParams { temperature: 0.0, n: 3, ..Default::default() });
        ok(SamplingParams { top_p: 1.0, min_p: 1.0, top_k: 1000, ..Default::default() });
        ok(SamplingParams { beam_width: 4, n: 4, ..Default::default() });
        ok(SamplingParams { end_id: Some(99), stop_token_ids: vec![vec![99, 0]], bad_words: vec![vec![5]], ..Default::default() });
        ok(SamplingParams { min_new_tokens: 16, logprobs: Some(20), presence_penalty: -2.0, ..Default::default() });
    }

    #[test]
    fn rejects_temperature() {
        for t in [f32::NAN, -0.5, f32::INFINITY] {
            assert_eq!(rejected(SamplingParams { temperature: t, ..Default::default() }), "temperature");
        }
    }

    #[test]
    fn rejects_top_k() {
        assert_eq!(rejected(SamplingParams { top_k: -1, ..Default::default() }), "top_k");
    }

    #[test]
    fn rejects_top_p() {
        for p in [0.0, -0.1, 1.01, f32::NAN] {
            assert_eq!(rejected(SamplingParams { top_p: p, ..Default::default() }), "top_p");
        }
    }

    #[test]
    fn rejects_min_p() {
        for p in [-0.01, 1.5, f32::NAN] {
            assert_eq!(rejected(SamplingParams { min_p: p, ..Default::default() }), "min_p");
        }
    }

    #[test]
    fn rejects_repetition_penalty() {
        for p in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(rejected(SamplingParams { repetition_penalty: p, ..Default::default() }), "repetition_penalty");
        }
    }

    #[test]
    fn rejects_nan_penalties() {
        assert_eq!(rejected(SamplingParams { presence_penalty: f32::NAN, ..Default::default() }), "presence_penalty");
        assert_eq!(rejected(SamplingParams { frequency_penalty: f32::NAN, ..Default::default() }), "frequency_penalty");
        assert_eq!(rejected(SamplingParams { length_penalty: f32::NAN, ..Default::default() }), "length_penalty");
        assert_eq!(rejected(SamplingParams { frequency_penalty: f32::INFINITY, ..Default::default() }), "frequency_penalty");
    }

    #[test]
    fn rejects_beam_width() {
        assert_eq!(rejected(SamplingParams { beam_width: 0, ..Default::default() }), "beam_width");
        assert_eq!(rejected(SamplingParams { beam_width: 5, ..Default::default() }), "beam_width");
    }

    #[test]
    fn rejects_n() {
        assert_eq!(rejected(SamplingParams { n: 0, ..Default::default() }), "n");
        assert_eq!(rejected(SamplingParams { beam_width: 2, n: 3, ..Default::default() }), "n");
    }

    #[test]
    fn rejects_stop_token_ids() {
        assert_eq!(rejected(SamplingParams { stop_token_ids: vec![vec![1], vec![100]], ..Default::default() }), "stop_token_ids");
        assert_eq!(rejected(SamplingParams { stop_token_ids: vec![vec![]], ..Default::default() }), "stop_token_ids");
    }

    #[test]
    fn rejects_bad_words() {
        assert_eq!(rejected(SamplingParams { bad_words: vec![vec![3, 1000]], ..Default::default() }), "bad_words");
        assert_eq!(rejected(SamplingParams { bad_words: vec![vec![]], ..Default::default() }), "bad_words");
    }

    #[test]
    fn rejects_end_id() {
        assert_eq!(rejected(SamplingParams { end_id: Some(100), ..Default::default() }), "end_id");
    }

    #[test]
    fn rejects_stop_strings() {
        assert_eq!(rejected(SamplingParams { stop_strings: vec!["a".into(), String::new()], ..Default::default() }), "stop_strings");
    }

    #[test]
    fn rejects_max_new_tokens() {
        assert_eq!(rejected(SamplingParams { max_new_tokens: 0, min_new_tokens: 0, ..Default::default() }), "max_new_tokens");
    }

    #[test]
    fn rejects_min_new_tokens() {
        assert_eq!(rejected(SamplingParams { min_new_tokens: 17, ..Default::default() }), "min_new_tokens");
    }

    #[test]
    fn rejects_logprobs() {
        assert_eq!(rejected(SamplingParams { logprobs: Some(21), ..Default::default() }), "logprobs");
    }

    #[test]
    fn effective_end_ids() {
        let p = SamplingParams::default();
        assert_eq!(p.effective_end_ids(&[2, 7]), vec![2, 7]);
        let p = SamplingParams { end_id: Some(5), ..Default::default() };
        assert_eq!(p.effective_end_ids(&[2, 7]), vec![5]);
        let p = SamplingParams { end_id: Some(5), ignore_eos: true, ..Default::default() };
        assert!(p.effective_end_ids(&[2, 7]).is_empty());
    }

    #[test]
    fn serde_defaults_and_round_trip() {
        let p: SamplingParams = serde_json::from_str(r#"{"temperature": 0.5, "stop_token_ids": [[1, 2]], "seed": 9}"#).unwrap();
        assert_eq!(
            p,
            SamplingParams { temperature: 0.5, stop_token_ids: vec![vec![1, 2]], seed: Some(9), ..Default::default() }
        );
        let q: SamplingParams = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(p, q);
        let d: SamplingParams = serde_json::from_str("{}").unwrap();
        assert_eq!(d, SamplingParams::default());
    }
}
