//! Health probes: a real one-token greedy generation through the loop thread and the
//! backend, on a KV block of its own.
//!
//! The executor keeps the last device block (`num_blocks - 1`) out of the scheduler's pool:
//! the scheduler hands out blocks `1..num_blocks - 1` (0 is the null block), so a probe never
//! takes a user's KV, is never refused because the pool, the batch or the queue is full, and
//! never preempts anyone. A probe's prompt fits in that one block (`1..=tokens_per_block`
//! tokens); the loop runs pending probes as a step of their own between user steps (one
//! forward pass of a few tokens), takes the arg-max of the logits row (which must be finite
//! and `vocab_size` long) and replies. A backend that errors fails the probe; one that
//! panics fails it and stops the loop, as a panicking user step does.

use super::backend::BackendItem;
use super::engine::LoopCtx;
use crate::kv::{BlockId, KvCacheConfig};
use std::sync::mpsc;
use std::time::Duration;

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("probe prompt: {0}")]
    Invalid(String),
    #[error("the engine loop is not running: {0}")]
    Stopped(String),
    #[error("no answer within {0:?} (the engine loop is stuck or a step takes longer)")]
    TimedOut(Duration),
    #[error("probe generation failed: {0}")]
    Failed(String),
}

/// One pending probe: its prompt and where the loop replies.
pub(super) struct Probe {
    pub prompt: Vec<u32>,
    pub reply: mpsc::Sender<Result<u32, String>>,
}

/// The scheduler's KV config (one block fewer) and the block kept for probes.
pub(super) fn reserve_block(mut kv: KvCacheConfig) -> Result<(KvCacheConfig, BlockId), String> {
    if kv.num_blocks < 3 {
        return Err(format!("kv.num_blocks = {}: at least 3 are needed (the null block, the health probe's block and one for requests)", kv.num_blocks));
    }
    kv.num_blocks -= 1;
    let block = BlockId::try_from(kv.num_blocks).map_err(|_| format!("kv.num_blocks = {} exceeds the block id range", kv.num_blocks + 1))?;
    Ok((kv, block))
}

/// Checks a probe prompt against the vocabulary and the one block it may use.
pub(super) fn check_prompt(prompt: &[u32], vocab_size: usize, tokens_per_block: usize) -> Result<(), ProbeError> {
    if prompt.is_empty() || prompt.len() > tokens_per_block {
        return Err(ProbeError::Invalid(format!("{} tokens (must be 1..={tokens_per_block}, one KV block)", prompt.len())));
    }
    match prompt.iter().find(|&&t| t as usize >= vocab_size) {
        Some(t) => Err(ProbeError::Invalid(format!("token id {t} is outside the vocabulary (size {vocab_size})"))),
        None => Ok(()),
    }
}

/// The greedy token of a logits row; an error when the row is malformed or not finite.
fn argmax(row: &[f32], vocab_size: usize) -> Result<u32, String> {
    if row.len() != vocab_size {
        return Err(format!("the logits row has {} entries (vocabulary {vocab_size})", row.len()));
    }
    if let Some(i) = row.iter().position(|v| !v.is_finite()) {
        return Err(format!("logit {i} is {} (not finite)", row[i]));
    }
    let best = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
    Ok(best as u32)
}

impl LoopCtx {
    /// Runs each probe as a step of its own on the reserved block and replies. A panic
    /// makes the loop stop (see [`LoopCtx::run`]).
    pub(super) fn run_probes(&mut self, probes: Vec<Probe>) {
        for p in probes {
            let result = self.probe_once(&p.prompt);
            let _ = p.reply.send(result);
            if self.fatal.is_some() {
                return;
            }
        }
    }

    fn probe_once(&mut self, prompt: &[u32]) -> Result<u32, String> {
        let table = [self.probe_block];
        let item = BackendItem { tokens: prompt, start_pos: 0, block_table: &table, needs_logits: true };
        let vocab = self.backend.vocab_size();
        let backend = &mut self.backend;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.step(&[item])));
        let rows = match run {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(p) => {
                let msg = format!("backend panicked: {}", super::engine::panic_message(&p));
                // Dead before the prober hears of it.
                super::engine::mark_stopped(&mut self.shared.0.lock().unwrap_or_else(|e| e.into_inner()), msg.clone());
                self.fatal = Some(msg.clone());
                return Err(msg);
            }
        };
        match rows.as_slice() {
            [row] => argmax(row, vocab),
            _ => Err(format!("backend returned {} logits rows for 1 probe", rows.len())),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn the_last_block_is_reserved_and_tiny_pools_are_refused() {
        let kv = KvCacheConfig { tokens_per_block: 8, num_blocks: 10, enable_reuse: false, host_cache_blocks: 0 };
        let (k, b) = reserve_block(kv.clone()).unwrap();
        assert_eq!((k.num_blocks, b), (9, 9));
        let err = reserve_block(KvCacheConfig { num_blocks: 2, ..kv }).unwrap_err();
        assert!(err.contains("kv.num_blocks = 2"), "{err}");
    }

    #[test]
    fn prompts_and_logits_are_checked() {
        assert!(check_prompt(&[1, 2], 4, 8).is_ok());
        assert!(matches!(check_prompt(&[], 4, 8), Err(ProbeError::Invalid(_))));
        assert!(matches!(check_prompt(&[0; 9], 4, 8), Err(ProbeError::Invalid(_))));
        assert!(matches!(check_prompt(&[4], 4, 8), Err(ProbeError::Invalid(_))));
        assert_eq!(argmax(&[0.0, 3.0, 1.0], 3), Ok(1));
        assert!(argmax(&[0.0, f32::NAN, 1.0], 3).unwrap_err().contains("logit 1"));
        assert!(argmax(&[0.0], 3).is_err());
    }
}
