//! Per-request sampling: pure CPU logic, one instance per request (or per returned
//! sequence), no device memory.
//!
//! - [`params`]: [`SamplingParams`] (serde, `#[serde(default)]`) and
//!   [`SamplingParams::validate`], which rejects a bad field with [`InvalidParam`] naming it.
//! - [`processors`]: logits processors: repetition (prompt + generated), presence/frequency
//!   (generated), bad words, min-tokens masking of end ids and single-token stop ids.
//! - [`sample`]: [`Sampler`]: processors → temperature → top-k → top-p → min-p → draw from
//!   the renormalised distribution (f64 accumulation); greedy (temperature 0) is one pass
//!   with ties to the lowest id; log-probs and top-n log-probs in [`Sampled`].
//! - [`beam`]: [`BeamSearch`]: `beam_width` beams, finished hypotheses scored with the
//!   length penalty, [`BeamSearch::best`].
//! - [`stop`]: [`StopMatcher`]: end ids and stop token sequences (stripped from the
//!   output), stop strings on the detokenized text, and the streaming hold-back.
//! - [`rng`]: [`RequestRng`]: ChaCha12 seeded from the request's `u64` seed, one stream per
//!   sequence, reproducible across runs and platforms.
//!
//! End ids: every constructor takes the model's end ids; `SamplingParams::end_id` replaces
//! them and `ignore_eos` removes them ([`SamplingParams::effective_end_ids`]). Parameters
//! are assumed validated; invalid ones may panic or misbehave, never cause UB.
//!
//! A decode step for a sampled request: `let s = sampler.sample(&mut logits, &generated);
//! sampler.accept(s.id); generated.push(s.id);` then `stop.check_tokens(&generated)` (strip
//! and finish on `Some`), `stop.reached_max(generated.len())`, and for stop strings
//! `stop.check_text(&text)` / `stop.holdback(&text)` on the detokenized output.

pub mod beam;
pub mod params;
pub mod processors;
pub mod rng;
pub mod sample;
pub mod stop;

pub use beam::{BeamHypothesis, BeamSearch, BeamStep};
pub use params::{InvalidParam, MAX_LOGPROBS, SamplingParams};
pub use processors::{Processors, TokenCounts};
pub use rng::RequestRng;
pub use sample::{LogitsWant, Sampled, Sampler, TokenLogprob, TopLogits};
pub use stop::StopMatcher;
