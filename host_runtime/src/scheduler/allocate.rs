//! Stage 3, allocation: extend each planned beam's block table to cover the positions it
//! computes, and build the step's items. Also the registration of full computed blocks for
//! reuse, run when the backend confirms a step.
//!
//! The capacity stage reserved the blocks, so allocation does not fail; if it ever did,
//! the item is dropped and the fault is reported by `check_invariants`.

use super::microbatch::Planned;
use super::request::Scheduled;
use super::{RequestId, Scheduler, StepItem};
use crate::kv::Registered;

impl Scheduler {
    pub(super) fn allocate(&mut self, plan: &[Planned]) -> Vec<StepItem> {
        plan.iter().filter_map(|p| self.allocate_one(p)).collect()
    }

    fn allocate_one(&mut self, p: &Planned) -> Option<StepItem> {
        let tpb = self.tpb;
        let r = self.reqs.get_mut(&p.id)?;
        let start = r.computed;
        let end = start + p.len;
        let beam = r.beams.get_mut(p.beam)?;
        while beam.table.len() * tpb < end {
            match self.pool.allocate() {
                Some(b) => beam.table.push(b),
                None => {
                    let msg = format!(
                        "request {}: no free block for positions up to {end} (reservation broken)",
                        p.id
                    );
                    self.faults.push(msg);
                    return None;
                }
            }
        }
        r.scheduled = Some(Scheduled {
            len: p.len,
            needs_logits: p.needs_logits,
        });
        Some(StepItem {
            id: p.id,
            tokens: beam.tokens[start..end].to_vec(),
            start_pos: start,
            block_table: beam.table.clone(),
            needs_logits: p.needs_logits,
            is_context: p.is_context,
            beam: p.beam,
        })
    }

    /// Registers the request's blocks that are now full of computed tokens, continuing its
    /// chain; stops for good at a collision. A beam group registers nothing once forked.
    pub(super) fn register_full_blocks(&mut self, id: RequestId) {
        if !self.pool.reuse_enabled() {
            return;
        }
        let tpb = self.tpb;
        let Some(r) = self.reqs.get_mut(&id) else {
            return;
        };
        let [beam] = &r.beams[..] else { return };
        let full = (r.computed / tpb).min(beam.table.len());
        while r.reg.blocks < full && !r.reg.broken {
            let i = r.reg.blocks;
            match self.pool.register(
                r.reg.parent,
                &beam.tokens[i * tpb..(i + 1) * tpb],
                beam.table[i],
            ) {
                Registered::New(s) | Registered::Duplicate(s) => {
                    r.reg.parent = s;
                    r.reg.blocks += 1;
                }
                Registered::Collision | Registered::Skipped => r.reg.broken = true,
            }
        }
    }
}
