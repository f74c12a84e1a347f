//! Text for the output stream: the executor turns token ids into text deltas through a
//! [`Detokenizer`] supplied by whoever loaded the model (the tokenizer lives in `models`).

/// Incremental detokenisation of one sequence.
pub trait TextStream: Send {
    /// Adds one id; returns the text it completes (never a split UTF-8 character; empty
    /// while a character is incomplete).
    fn push(&mut self, id: u32) -> String;
    /// Flushes whatever is held back.
    fn finish(&mut self) -> String;
}

/// Makes a [`TextStream`] per sequence.
pub trait Detokenizer: Send + Sync {
    fn stream(&self) -> Box<dyn TextStream>;
}

/// No text (token ids only): for tests and callers that detokenize themselves.
pub struct NoText;

struct NoTextStream;

impl TextStream for NoTextStream {
    fn push(&mut self, _id: u32) -> String {
        String::new()
    }
    fn finish(&mut self) -> String {
        String::new()
    }
}

impl Detokenizer for NoText {
    fn stream(&self) -> Box<dyn TextStream> {
        Box::new(NoTextStream)
    }
}
