//! Per-iteration statistics ([`IterationStats`]), serialisable for the executor's logs.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Step;
use crate::kv::BlockPool;

/// One step's statistics (a snapshot taken when `schedule()` returns).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IterationStats {
    /// Steps planned so far (1 for the first).
    pub step: u64,
    /// Microseconds since the UNIX epoch.
    pub timestamp_us: u64,
    /// Requests admitted (holding blocks).
    pub active_requests: usize,
    pub context_requests: usize,
    pub generation_requests: usize,
    pub scheduled_tokens: usize,
    pub free_kv_blocks: usize,
    pub used_kv_blocks: usize,
    pub max_kv_blocks: usize,
    pub tokens_per_block: usize,
    /// Blocks reused by admissions this step (host-tier hits included).
    pub reused_blocks: usize,
    pub total_reused_blocks: u64,
    /// Waiting requests.
    pub queue_len: usize,
    /// Requests preempted this step.
    pub preempted: usize,
    /// Host-tier copies this step.
    pub swapped_out_blocks: usize,
    pub swapped_in_blocks: usize,
    /// Block copies of beam reorders this step.
    pub copied_blocks: usize,
}

/// The counters behind the snapshots.
pub(crate) struct StatsState {
    pub(crate) last: IterationStats,
    pub(crate) total_preempted: u64,
}

impl StatsState {
    pub(crate) fn new(pool: &BlockPool) -> Self {
        let last = IterationStats {
            free_kv_blocks: pool.free_blocks(),
            max_kv_blocks: pool.usable_blocks(),
            tokens_per_block: pool.tokens_per_block(),
            ..Default::default()
        };
        StatsState {
            last,
            total_preempted: 0,
        }
    }

    pub(crate) fn record(
        &mut self,
        step: &Step,
        reused: usize,
        pool: &BlockPool,
        active: usize,
        queued: usize,
    ) {
        let contexts = step.items.iter().filter(|i| i.is_context).count();
        self.last = IterationStats {
            step: self.last.step + 1,
            timestamp_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            active_requests: active,
            context_requests: contexts,
            generation_requests: step.items.len() - contexts,
            scheduled_tokens: step.items.iter().map(|i| i.tokens.len()).sum(),
            free_kv_blocks: pool.free_blocks(),
            used_kv_blocks: pool.used_blocks(),
            max_kv_blocks: pool.usable_blocks(),
            tokens_per_block: pool.tokens_per_block(),
            reused_blocks: reused,
            total_reused_blocks: self.last.total_reused_blocks + reused as u64,
            queue_len: queued,
            preempted: step.preempted.len(),
            swapped_out_blocks: step.swap_out.len(),
            swapped_in_blocks: step.swap_in.len(),
            copied_blocks: step.block_copies.len(),
        };
    }
}
