//! The [`Backend`] trait: what the executor needs from a device (the CPU reference backend
//! now, the GPU backend later). A backend owns the KV storage (blocks numbered as the
//! scheduler's block pool numbers them) and runs one forward step for a whole batch; before
//! it, the step's host-tier swaps and block copies, in the order the executor calls them.

use crate::kv::BlockId;
use crate::sampling::{LogitsWant, TopLogits};

/// One request's part of a step.
#[derive(Clone, Copy, Debug)]
pub struct BackendItem<'a> {
    /// Tokens to compute (a context chunk, or the last sampled token).
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; earlier positions are in the KV cache already.
    pub start_pos: usize,
    /// The request's block table (covers `start_pos + tokens.len()` positions).
    pub block_table: &'a [BlockId],
    /// Whether logits of the last token are wanted.
    pub needs_logits: bool,
}

/// One logits row of a step, whole or reduced where it was computed.
#[derive(Clone, Debug, PartialEq)]
pub enum LogitsRow {
    Full(Vec<f32>),
    Top(TopLogits),
}

/// A backend failure; the requests of the failed step end with this message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("backend: {0}")]
pub struct BackendError(pub String);

/// A device that runs forward steps over a paged KV cache.
pub trait Backend: Send + 'static {
    /// Length of each logits row.
    fn vocab_size(&self) -> usize;
    /// Runs one step; returns one logits row per item with `needs_logits`, in item order.
    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError>;
    /// Runs one step like [`Backend::step`]; `wants` has one entry per item with
    /// `needs_logits`, in item order, and a row may come back as [`LogitsRow::Top`] where
    /// its want says [`LogitsWant::Top`] (with at least [`Backend::top_candidates`]
    /// candidates). The default returns whole rows.
    fn step_reduced(&mut self, items: &[BackendItem], wants: &[LogitsWant]) -> Result<Vec<LogitsRow>, BackendError> {
        let _ = wants;
        Ok(self.step(items)?.into_iter().map(LogitsRow::Full).collect())
    }
    /// How many candidates a [`LogitsRow::Top`] of this backend holds (0: it returns whole
    /// rows only).
    fn top_candidates(&self) -> usize {
        0
    }
    /// Copies device block `block` to host-tier slot `slot` (before it is reused).
    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError>;
    /// Copies host-tier slot `slot` back into device block `block`.
    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError>;
    /// Copies device block `src` (every layer's K and V) into device block `dst`: a beam
    /// reorder's copy of a partial block. A step's copies run after its swaps and before
    /// its compute (see [`crate::scheduler::Step::block_copies`]).
    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError>;
}
