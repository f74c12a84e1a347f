//! Stage 2, micro-batch: the items of one step, within `max_batch_size` items and
//! `max_num_tokens` tokens.
//!
//! Generation candidates first, oldest first, one token each (a forked beam group: one
//! item per beam, all or none; a group that does not fit is skipped this step, and later
//! candidates may still fill the slots). Then context candidates,
//! oldest first: the rest of the context when it fits the token budget and its blocks
//! (the last chunk, which yields logits); otherwise, if it may be chunked, the largest whole
//! number of blocks that fits (a non-last chunk, no logits); otherwise it waits, and so do
//! the contexts behind it (FIFO: a long prompt is not overtaken forever by short ones).
//! Chunks start block-aligned (contexts start after whole reused blocks and advance by
//! whole blocks), so every non-last chunk ends on a block boundary.

use super::capacity::Candidate;
use super::{RequestId, SchedulerConfig};

/// One item of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Planned {
    pub(crate) id: RequestId,
    pub(crate) beam: usize,
    pub(crate) len: usize,
    pub(crate) needs_logits: bool,
    pub(crate) is_context: bool,
}

/// Forms the step's items from the capacity stage's candidates (in age order).
pub(crate) fn form(cands: &[Candidate], cfg: &SchedulerConfig, tpb: usize) -> Vec<Planned> {
    let mut slots = cfg.max_batch_size;
    let mut budget = cfg.max_num_tokens;
    let mut out = Vec::new();
    for c in cands.iter().filter(|c| !c.is_context && c.max_tokens > 0) {
        if slots == 0 || budget == 0 {
            break;
        }
        if c.beams > slots || c.beams > budget {
            continue;
        }
        for beam in 0..c.beams {
            out.push(Planned {
                id: c.id,
                beam,
                len: 1,
                needs_logits: true,
                is_context: false,
            });
        }
        slots -= c.beams;
        budget -= c.beams;
    }
    for c in cands.iter().filter(|c| c.is_context) {
        if slots == 0 {
            break;
        }
        let Some(p) = context_chunk(c, budget, tpb) else {
            break;
        };
        out.push(p);
        slots -= 1;
        budget -= p.len;
    }
    out
}

/// The chunk of a context candidate that fits `budget` tokens, if any.
fn context_chunk(c: &Candidate, budget: usize, tpb: usize) -> Option<Planned> {
    let cap = c.max_tokens.min(budget);
    if c.remaining > 0 && c.remaining <= cap {
        return Some(Planned {
            id: c.id,
            beam: 0,
            len: c.remaining,
            needs_logits: true,
            is_context: true,
        });
    }
    let len = cap / tpb * tpb;
    (c.chunkable && len > 0).then_some(Planned {
        id: c.id,
        beam: 0,
        len,
        needs_logits: false,
        is_context: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::CapacityPolicy;

    fn cfg(batch: usize, tokens: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_batch_size: batch,
            max_num_tokens: tokens,
            max_queue_size: 8,
            max_seq_len: 4096,
            policy: CapacityPolicy::MaxUtilization,
            chunked_context: true,
        }
    }

    fn ctx(id: u64, remaining: usize, chunkable: bool) -> Candidate {
        Candidate {
            id,
            is_context: true,
            remaining,
            max_tokens: remaining,
            chunkable,
            beams: 1,
        }
    }

    fn gen_(id: u64) -> Candidate {
        Candidate {
            id,
            is_context: false,
            remaining: 1,
            max_tokens: 1,
            chunkable: false,
            beams: 1,
        }
    }

    #[test]
    fn generation_first_then_chunked_contexts() {
        let plan = form(
            &[ctx(1, 100, true), gen_(2), gen_(3), ctx(4, 10, true)],
            &cfg(8, 50),
            16,
        );
        let got: Vec<_> = plan.iter().map(|p| (p.id, p.len, p.needs_logits)).collect();
        // 48 tokens left after two generations: request 1 gets 3 blocks (not last), then
        // nothing is left for request 4.
        assert_eq!(got, vec![(2, 1, true), (3, 1, true), (1, 48, false)]);
    }

    #[test]
    fn unchunked_context_waits_and_blocks_later_ones() {
        let plan = form(
            &[gen_(2), ctx(1, 100, false), ctx(4, 10, false)],
            &cfg(8, 100),
            16,
        );
        let got: Vec<_> = plan.iter().map(|p| p.id).collect();
        assert_eq!(got, vec![2], "FIFO: request 4 does not overtake request 1");
    }

    #[test]
    fn a_beam_group_is_scheduled_whole_or_skipped() {
        let group = |id, beams| Candidate { beams, ..gen_(id) };
        let plan = form(&[gen_(1), group(2, 3), gen_(3)], &cfg(4, 100), 16);
        let got: Vec<_> = plan.iter().map(|p| (p.id, p.beam)).collect();
        assert_eq!(got, vec![(1, 0), (2, 0), (2, 1), (2, 2)]);
        // Three slots left after request 1 is not enough for a group of 4: skipped, 3 fills.
        let plan = form(&[gen_(1), group(2, 4), gen_(3)], &cfg(4, 100), 16);
        let got: Vec<_> = plan.iter().map(|p| (p.id, p.beam)).collect();
        assert_eq!(got, vec![(1, 0), (3, 0)]);
        // The token budget too.
        let plan = form(&[group(2, 3), ctx(4, 10, true)], &cfg(8, 8), 16);
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(|p| p.id == 2));
    }

    #[test]
    fn batch_and_token_limits() {
        let plan = form(&[gen_(1), gen_(2), gen_(3)], &cfg(2, 100), 16);
        assert_eq!(plan.len(), 2);
        let plan = form(&[gen_(1), gen_(2), gen_(3)], &cfg(8, 2), 16);
        assert_eq!(plan.len(), 2);
        // Capacity-limited context: two blocks' worth of tokens.
        let c = Candidate {
            max_tokens: 32,
            ..ctx(7, 100, true)
        };
        assert_eq!(form(&[c], &cfg(8, 1000), 16)[0].len, 32);
    }
}
