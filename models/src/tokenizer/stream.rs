//! Incremental detokenisation: a growing id sequence in, text deltas out.
//!
//! A token of a byte-level vocabulary can end in the middle of a UTF-8 character (an emoji
//! is often two or three tokens). Decoding each token alone would print U+FFFD halves; the
//! [`StreamDecoder`] instead re-decodes a short window of recent ids and emits only the text
//! that has grown past what was already emitted, holding it back while the window's text ends
//! in an incomplete character (which decodes to U+FFFD). Decoding a window rather than single
//! tokens also keeps decoders right whose output for a token depends on its neighbours
//! (sentencepiece's leading-space rule).
//!
//! The window is the ids of the last emitted delta plus the ids not yet emitted, so the work
//! per token is constant. A run of more than [`MAX_HELD_TOKENS`] held tokens is emitted as it
//! is (an invalid byte sequence would otherwise stall the stream), and [`StreamDecoder::finish`]
//! flushes whatever is still held.

use super::{Result, Tokenizer};

/// Most ids held back waiting for a character to complete (a UTF-8 character is at most four
/// bytes, so four byte tokens; the rest is slack for skipped special tokens).
pub const MAX_HELD_TOKENS: usize = 8;

/// Turns one generated id sequence into text deltas that never split a UTF-8 character.
/// It borrows no tokenizer: pass the same one to every call.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    skip_special: bool,
    /// ids[..read] were already emitted (context for the decoder), ids[read..] not yet.
    ids: Vec<u32>,
    read: usize,
}

impl StreamDecoder {
    /// A decoder; `skip_special` as in [`Tokenizer::decode`].
    pub fn new(skip_special: bool) -> Self {
        Self {
            skip_special,
            ids: Vec::new(),
            read: 0,
        }
    }

    /// Adds the next id; returns the text it completes (`None` while a character is still
    /// incomplete, or when the id adds no text, like a skipped special token).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let prefix = tokenizer.decode(&self.ids[..self.read], self.skip_special)?;
        let full = tokenizer.decode(&self.ids, self.skip_special)?;
        let held = self.ids.len() - self.read;
        let complete = !full.ends_with('\u{FFFD}');
        if !(complete || held > MAX_HELD_TOKENS) {
            return Ok(None);
        }
        let delta = Self::delta(&prefix, &full);
        // The emitted ids become the context of the next window.
        self.ids.drain(..self.read);
        self.read = self.ids.len();
        Ok((!delta.is_empty()).then_some(delta))
    }

    /// Adds several ids; returns the concatenated deltas.
    pub fn push_all(&mut self, tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            if let Some(d) = self.push(tokenizer, id)? {
                out.push_str(&d);
            }
        }
        Ok(out)
    }

    /// Emits whatever is held back (an incomplete character as U+FFFD) and resets the decoder
    /// for a new sequence.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let prefix = tokenizer.decode(&self.ids[..self.read], self.skip_special)?;
        let full = tokenizer.decode(&self.ids, self.skip_special)?;
        self.ids.clear();
        self.read = 0;
        Ok(Self::delta(&prefix, &full))
    }

    /// Number of ids pushed but not yet turned into text.
    pub fn pending(&self) -> usize {
        self.ids.len() - self.read
    }

    /// The text `full` has past `prefix`. For the decoders we use `full` extends `prefix`; if a
    /// decoder ever rewrites earlier text, fall back to the longest common prefix (on a char
    /// boundary) so nothing is emitted twice or sliced mid-character.
    fn delta(prefix: &str, full: &str) -> String {
        if let Some(rest) = full.strip_prefix(prefix) {
            return rest.to_string();
        }
        let common = prefix
            .char_indices()
            .zip(full.chars())
            .find(|((_, a), b)| a != b)
            .map(|((i, _), _)| i)
            .unwrap_or(prefix.len().min(full.len()));
        let mut cut = common.min(full.len());
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        full[cut..].to_string()
    }
}
