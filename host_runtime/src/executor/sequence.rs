//! One running request's output state: sampler, stop conditions, and what has been
//! released to the caller. Tokens that could still turn out to be the start of a stop
//! token sequence, and text that could be the start of a stop string, are held back until
//! they are known not to be; stop matches are never released.
//!
//! A beam search request (`beam_width > 1`) is not streamed: its [`BeamSearch`] advances
//! once per step and the one final output carries the `n` best hypotheses. Stop token
//! sequences and end ids end hypotheses inside the search; stop strings do not apply to
//! beam search, and per-token log-probs are not returned (each hypothesis has its
//! cumulative log-prob and score).

use super::detok::{Detokenizer, TextStream};
use super::request::{BeamOutput, FinishReason, Output, OutputSink, TokenLogprobs};
use super::backend::LogitsRow;
use crate::sampling::{BeamSearch, BeamStep, Sampled, Sampler, SamplingParams, StopMatcher};

pub(super) struct Sequence {
    pub params: SamplingParams,
    pub prompt_len: usize,
    pub sampler: Sampler,
    stop: StopMatcher,
    sink: Box<dyn OutputSink>,
    text_stream: Box<dyn TextStream>,
    /// Every sampled token (stop matches included until stripped).
    pub generated: Vec<u32>,
    logprobs: Vec<TokenLogprobs>,
    /// `generated[..released]` went to the caller.
    released: usize,
    /// Text of `generated[..released]`; `text[..text_released]` went to the caller.
    text: String,
    text_released: usize,
    cum_logprob: f32,
    pub reused_tokens: usize,
    /// A context chunk of this request was seen (the first one tells the reused prefix).
    pub seen_context: bool,
    /// The receiver went away.
    pub disconnected: bool,
    /// Beam search state (beam requests only) and the steps it took.
    beam: Option<BeamSearch>,
    beam_steps: usize,
}

impl Sequence {
    pub fn new(params: SamplingParams, prompt: &[u32], end_ids: &[u32], sink: Box<dyn OutputSink>, text_stream: Box<dyn TextStream>) -> Self {
        let beam = params.is_beam_search().then(|| BeamSearch::with_prompt(&params, prompt, end_ids));
        Sequence {
            sampler: Sampler::new(&params, prompt, end_ids),
            stop: StopMatcher::new(&params, end_ids),
            prompt_len: prompt.len(),
            params,
            sink,
            text_stream,
            generated: Vec::new(),
            logprobs: Vec::new(),
            released: 0,
            text: String::new(),
            text_released: 0,
            cum_logprob: 0.0,
            reused_tokens: 0,
            seen_context: false,
            disconnected: false,
            beam,
            beam_steps: 0,
        }
    }

    /// Whether this is a beam search request.
    pub fn is_beam(&self) -> bool {
        self.beam.is_some()
    }

    /// Tokens each beam generated so far.
    pub fn beam_steps(&self) -> usize {
        self.beam_steps
    }

    /// One beam search step over `rows` of logits in beam order: the context's single row
    /// first, then one row per beam.
    pub fn beam_step(&mut self, rows: &[&[f32]]) -> Result<BeamStep, String> {
        let Some(bs) = self.beam.as_mut() else {
            return Err("not a beam search request".into());
        };
        let want = if self.beam_steps == 0 { 1 } else { bs.width() };
        let vocab = rows.first().map_or(0, |r| r.len());
        if rows.len() != want || vocab == 0 || rows.iter().any(|r| r.len() != vocab) {
            return Err(format!("beam search step got {} logits rows, expected {want} of equal, non-zero length", rows.len()));
        }
        let flat: Vec<f32> = rows.concat();
        let step = bs.step(&flat, vocab);
        self.beam_steps += 1;
        Ok(step)
    }

    /// Ends a beam request with its `n` best hypotheses (text through `detok`): `Stop` when
    /// the best one ended with an end id or stop sequence, else `Length`.
    pub fn finish_beams(&mut self, detok: &dyn Detokenizer) -> FinishReason {
        let best = self.beam.as_ref().map(|b| b.best(self.params.n.max(1))).unwrap_or_default();
        let beams: Vec<BeamOutput> = best
            .into_iter()
            .map(|h| {
                let mut stream = detok.stream();
                let mut text: String = h.tokens.iter().map(|&id| stream.push(id)).collect();
                text.push_str(&stream.finish());
                BeamOutput { token_ids: h.tokens, text, cum_logprob: h.cum_logprob, score: h.score }
            })
            .collect();
        let first = beams.first().cloned().unwrap_or_default();
        let reason = if beams.first().is_some_and(|b| b.token_ids.len() < self.beam_steps) { FinishReason::Stop } else { FinishReason::Length };
        let out = Output {
            generated_tokens: first.token_ids.len(),
            token_ids: first.token_ids,
            text: first.text,
            cum_logprob: first.cum_logprob,
            finish: Some(reason.clone()),
            prompt_tokens: self.prompt_len,
            reused_tokens: self.reused_tokens,
            beams,
            ..Default::default()
        };
        if !self.disconnected && !self.sink.send(out) {
            self.disconnected = true;
        }
        reason
    }

    /// Samples the next token from a step's row (whole, or reduced as the sampler's `want`
    /// asked) and records it. Returns it.
    pub fn sample_row(&mut self, row: &mut LogitsRow) -> u32 {
        let s: Sampled = match row {
            LogitsRow::Full(logits) => self.sampler.sample(logits, &self.generated),
            LogitsRow::Top(top) => self.sampler.sample_top(top),
        };
        self.record(s)
    }

    fn record(&mut self, s: Sampled) -> u32 {
        self.sampler.accept(s.id);
        self.generated.push(s.id);
        self.logprobs.push(TokenLogprobs { id: s.id, logprob: s.logprob, top: s.top });
        s.id
    }

    /// After a token was added: decides whether the request ends (stop or length, given the
    /// positions the model still has) and releases what can be released. Returns the reason
    /// when it ended (the final output was sent).
    pub fn advance(&mut self, context_left: usize) -> Option<FinishReason> {
        if let Some(strip) = self.stop.check_tokens(&self.generated) {
            let keep = self.generated.len().saturating_sub(strip).max(self.released);
            self.generated.truncate(keep);
            self.logprobs.truncate(keep);
            return Some(self.finish(FinishReason::Stop));
        }
        let hold = self.token_holdback();
        let upto = self.generated.len() - hold;
        let (ids, lps) = self.take_tokens(upto);
        if let Some(cut) = self.stop.check_text(&self.text) {
            self.text.truncate(cut.max(self.text_released));
            let reason = FinishReason::Stop;
            return Some(self.send_final(ids, lps, reason));
        }
        if self.generated.len() >= self.params.max_new_tokens || context_left == 0 {
            return Some(self.send_final(ids, lps, FinishReason::Length));
        }
        let text_hold = self.stop.holdback(&self.text);
        let text_end = self.text.len() - text_hold;
        let text = self.text_delta(text_end);
        if !ids.is_empty() || !text.is_empty() {
            self.emit(Output { token_ids: ids, text, logprobs: lps, ..Default::default() });
        }
        None
    }

    /// Ends the request now (stop, cancel, error): releases what is held (except for
    /// cancel/error) and sends the final output.
    pub fn finish(&mut self, reason: FinishReason) -> FinishReason {
        let flush = matches!(reason, FinishReason::Stop | FinishReason::Length);
        let (ids, lps) = if flush { self.take_tokens(self.generated.len()) } else { (Vec::new(), Vec::new()) };
        if flush {
            if let Some(cut) = self.stop.check_text(&self.text) {
                self.text.truncate(cut.max(self.text_released));
            }
        }
        self.send_final(ids, lps, reason)
    }

    fn send_final(&mut self, ids: Vec<u32>, lps: Vec<TokenLogprobs>, reason: FinishReason) -> FinishReason {
        let text = if matches!(reason, FinishReason::Stop | FinishReason::Length) {
            let tail = self.text_stream.finish();
            self.text.push_str(&tail);
            if let Some(cut) = self.stop.check_text(&self.text) {
                self.text.truncate(cut.max(self.text_released));
            }
            self.text_delta(self.text.len())
        } else {
            String::new()
        };
        self.emit(Output { token_ids: ids, text, logprobs: lps, finish: Some(reason.clone()), ..Default::default() });
        reason
    }

    /// Tokens at the end of `generated` that are a proper prefix of some stop sequence.
    fn token_holdback(&self) -> usize {
        let g = &self.generated[self.released..];
        let mut hold = 0;
        for seq in &self.params.stop_token_ids {
            for k in (1..seq.len()).rev() {
                if k <= g.len() && k > hold && g[g.len() - k..] == seq[..k] {
                    hold = k;
                    break;
                }
            }
        }
        hold
    }

    /// Releases `generated[released..upto]`: returns them with their log-probs and feeds
    /// their text into `self.text`.
    fn take_tokens(&mut self, upto: usize) -> (Vec<u32>, Vec<TokenLogprobs>) {
        let upto = upto.max(self.released).min(self.generated.len());
        let ids = self.generated[self.released..upto].to_vec();
        let lps = if self.params.logprobs.is_some() { self.logprobs[self.released..upto].to_vec() } else { Vec::new() };
        for &id in &ids {
            let piece = self.text_stream.push(id);
            self.text.push_str(&piece);
        }
        self.cum_logprob += self.logprobs[self.released..upto].iter().map(|l| l.logprob).sum::<f32>();
        self.released = upto;
        (ids, lps)
    }

    fn text_delta(&mut self, end: usize) -> String {
        let mut end = end.max(self.text_released).min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let delta = self.text[self.text_released..end].to_string();
        self.text_released = end;
        delta
    }

    fn emit(&mut self, mut out: Output) {
        out.cum_logprob = self.cum_logprob;
        out.prompt_tokens = self.prompt_len;
        out.generated_tokens = self.released;
        out.reused_tokens = self.reused_tokens;
        if !self.disconnected && !self.sink.send(out) {
            self.disconnected = true;
        }
    }
}
