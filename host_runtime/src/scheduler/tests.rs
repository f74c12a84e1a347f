//! Scheduler tests: scenario unit tests, then property tests (random operation sequences
//! checked by the [`harness`](super::harness), and liveness).

use proptest::prelude::*;

use super::harness::{Harness, Op, run_bytes};
use super::*;
use crate::kv::{BlockId, KvCacheConfig};

fn cfg(policy: CapacityPolicy, chunked: bool, batch: usize, tokens: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_size: batch,
        max_num_tokens: tokens,
        max_queue_size: 16,
        max_seq_len: 1024,
        policy,
        chunked_context: chunked,
    }
}

fn kv(blocks: usize, reuse: bool, host: usize) -> KvCacheConfig {
    KvCacheConfig {
        tokens_per_block: 8,
        num_blocks: blocks,
        enable_reuse: reuse,
        host_cache_blocks: host,
    }
}

fn seq(start: u32, n: usize) -> Vec<u32> {
    (start..start + n as u32).collect()
}

/// Runs one step, confirming every item with token 1; returns the step.
fn step(s: &mut Scheduler) -> Step {
    let st = s.schedule();
    s.check_step(&st).unwrap();
    for it in &st.items {
        s.on_step_done(it.id, it.needs_logits.then_some(1));
    }
    s.check_invariants().unwrap();
    st
}

fn summary(st: &Step) -> Vec<(RequestId, usize, usize, bool)> {
    st.items
        .iter()
        .map(|i| (i.id, i.start_pos, i.tokens.len(), i.needs_logits))
        .collect()
}

#[test]
fn context_then_generation() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 64),
        kv(16, false, 0),
    )
    .unwrap();
    s.submit(7, seq(100, 10), 3).unwrap();
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(7, 0, 10, true)]);
    assert!(st.items[0].is_context && st.items[0].tokens == seq(100, 10));
    assert_eq!(
        st.items[0].block_table,
        vec![1, 2],
        "whole reservation not allocated up front"
    );
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(7, 10, 1, true)]);
    assert!(!st.items[0].is_context && st.items[0].tokens == vec![1]);
    step(&mut s);
    assert!(
        step(&mut s).items.is_empty(),
        "all 3 tokens generated: waits for finish()"
    );
    assert_eq!(s.request_tokens(7).unwrap().len(), 13);
    s.finish(7);
    assert_eq!(s.kv_block_counts(), (15, 0, 15));
}

#[test]
fn submit_refusals_name_the_limits() {
    let mut c = cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 32);
    c.max_queue_size = 2;
    c.max_seq_len = 100;
    let mut s = Scheduler::new(c, kv(6, false, 0)).unwrap(); // 5 usable blocks = 40 positions
    assert_eq!(s.submit(1, vec![], 5), Err(SubmitError::EmptyPrompt));
    assert_eq!(s.submit(1, vec![1], 0), Err(SubmitError::ZeroMaxNewTokens));
    let e = s.submit(1, seq(0, 90), 20).unwrap_err().to_string();
    assert!(
        e.contains("90") && e.contains("20") && e.contains("110") && e.contains("100"),
        "{e}"
    );
    let e = s.submit(1, seq(0, 30), 12).unwrap_err().to_string();
    assert!(e.contains("6 KV blocks") && e.contains("has 5"), "{e}");
    let e = s.submit(1, seq(0, 33), 1).unwrap_err().to_string();
    assert!(e.contains("33") && e.contains("max_num_tokens = 32"), "{e}");
    s.submit(1, seq(0, 4), 4).unwrap();
    assert_eq!(
        s.submit(1, seq(0, 4), 4),
        Err(SubmitError::DuplicateId { id: 1 })
    );
    s.submit(2, seq(0, 4), 4).unwrap();
    let e = s.submit(3, seq(0, 4), 4).unwrap_err();
    assert_eq!(
        e,
        SubmitError::QueueFull {
            queued: 2,
            max_queue_size: 2
        }
    );
    assert!(
        Scheduler::new(
            cfg(CapacityPolicy::MaxUtilization, true, 4, 7),
            kv(6, false, 0)
        )
        .unwrap_err()
        .to_string()
        .contains("max_num_tokens = 7")
    );
    assert!(
        Scheduler::new(
            cfg(CapacityPolicy::MaxUtilization, true, 0, 8),
            kv(6, false, 0)
        )
        .is_err()
    );
}

#[test]
fn chunked_context_splits_on_block_boundaries() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, true, 4, 20),
        kv(32, false, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 43), 2).unwrap();
    let chunks: Vec<_> = (0..4).map(|_| summary(&step(&mut s))[0]).collect();
    assert_eq!(
        chunks,
        vec![
            (1, 0, 16, false),
            (1, 16, 16, false),
            (1, 32, 11, true),
            (1, 43, 1, true)
        ]
    );
}

#[test]
fn generation_goes_before_contexts_and_limits_hold() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, true, 2, 16),
        kv(64, false, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 5), 10).unwrap();
    step(&mut s);
    s.submit(2, seq(0, 40), 10).unwrap();
    s.submit(3, seq(0, 5), 10).unwrap();
    let st = step(&mut s);
    // Generation of 1 first (1 token), then 15 tokens left: one block of request 2's context.
    assert_eq!(summary(&st), vec![(1, 5, 1, true), (2, 0, 8, false)]);
    assert_eq!(s.queue_len(), 1, "request 3 waits: max_batch_size 2");
}

#[test]
fn guaranteed_no_evict_reserves_the_whole_request() {
    // 6 usable blocks; each request needs blocks for 16 + 16 - 1 positions = 4 blocks.
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 64),
        kv(7, false, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 16), 16).unwrap();
    s.submit(2, seq(0, 16), 16).unwrap();
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(1, 0, 16, true)]);
    assert_eq!(s.queue_len(), 1);
    for _ in 0..15 {
        let st = step(&mut s);
        assert!(st.items.iter().all(|i| i.id == 1) && st.preempted.is_empty());
    }
    s.finish(1);
    assert_eq!(summary(&step(&mut s)), vec![(2, 0, 16, true)]);
}

#[test]
fn max_utilization_preempts_the_newest() {
    // 4 usable blocks of 8; two requests of 12 prompt tokens (2 blocks each).
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::MaxUtilization, false, 4, 64),
        kv(5, false, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 12), 20).unwrap();
    s.submit(2, seq(50, 12), 20).unwrap();
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(1, 0, 12, true), (2, 0, 12, true)]);
    for _ in 0..4 {
        assert_eq!(step(&mut s).items.len(), 2);
    }
    // Both now hold 16 positions (12 prompt + 4 generated); the next token needs a third block each.
    let st = step(&mut s);
    assert_eq!(st.preempted, vec![2]);
    assert_eq!(summary(&st), vec![(1, 16, 1, true)]);
    assert_eq!(s.queue_len(), 1);
    assert_eq!(
        s.request_tokens(2).unwrap().len(),
        17,
        "prompt + generated kept"
    );
    assert_eq!(s.stats().preempted, 1);
    s.finish(1);
    // Recomputed as one context of all 17 tokens, then generation continues.
    assert_eq!(summary(&step(&mut s)), vec![(2, 0, 17, true)]);
    assert_eq!(summary(&step(&mut s)), vec![(2, 17, 1, true)]);
    assert_eq!(s.request_tokens(2).unwrap().len(), 19);
}

#[test]
fn prefix_reuse_skips_cached_blocks() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 64),
        kv(16, true, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 20), 2).unwrap();
    step(&mut s);
    step(&mut s);
    s.finish(1);
    // Same 16-token prefix: two full blocks reused, compute from position 16.
    s.submit(2, seq(0, 22), 2).unwrap();
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(2, 16, 6, true)]);
    assert_eq!(
        (s.stats().reused_blocks, s.stats().total_reused_blocks),
        (2, 2)
    );
    // An exact multiple of the block size still computes its last block (logits need a token).
    s.submit(3, seq(0, 16), 2).unwrap();
    assert_eq!(summary(&step(&mut s))[1], (3, 8, 8, true));
    // Shared blocks: request 2 and 3 hold block table[0] together.
    s.check_invariants().unwrap();
}

#[test]
fn host_tier_swaps_out_then_in() {
    // 4 usable blocks, 4 host slots.
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::MaxUtilization, false, 4, 64),
        kv(5, true, 4),
    )
    .unwrap();
    s.submit(1, seq(0, 17), 1).unwrap();
    step(&mut s);
    s.finish(1); // blocks 1, 2 cached (block 3, partial, not)
    s.submit(2, seq(500, 30), 1).unwrap(); // needs all 4 blocks: evicts both cached ones
    let st = step(&mut s);
    assert_eq!(st.swap_out.len(), 2, "{st:?}");
    assert_eq!(st.items[0].start_pos, 0);
    s.finish(2);
    s.submit(3, seq(0, 20), 1).unwrap();
    let st = step(&mut s);
    assert_eq!(st.swap_in.len(), 2, "{st:?}");
    assert_eq!(summary(&st), vec![(3, 16, 4, true)]);
    let targets: Vec<_> = st.swap_in.iter().map(|&(_, b)| b).collect();
    assert_eq!(&st.items[0].block_table[..2], &targets[..]);
    assert_eq!(s.stats().reused_blocks, 2);
}

#[test]
fn cancel_frees_at_once_and_is_forgotten() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::MaxUtilization, true, 4, 64),
        kv(16, true, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 30), 10).unwrap();
    s.submit(2, seq(0, 30), 10).unwrap();
    step(&mut s);
    assert!(s.cancel(1));
    assert!(!s.cancel(1));
    assert!(!s.cancel(99));
    s.finish(99);
    s.on_step_done(99, Some(3));
    for _ in 0..5 {
        assert!(step(&mut s).items.iter().all(|i| i.id == 2));
    }
    assert!(s.cancel(2));
    assert_eq!(s.kv_block_counts().1, 0);
}

#[test]
fn unconfirmed_items_are_planned_again() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 64),
        kv(16, false, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 5), 4).unwrap();
    let a = s.schedule();
    let b = s.schedule();
    assert_eq!(summary(&a), summary(&b));
    s.on_step_done(1, None); // needed logits, no token: not run
    assert_eq!(summary(&s.schedule()), summary(&a));
    s.check_invariants().unwrap();
}

#[test]
fn stats_serialize_to_json() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 64),
        kv(16, false, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 5), 4).unwrap();
    s.submit(2, seq(0, 5), 4).unwrap();
    step(&mut s);
    let st = s.stats();
    assert_eq!(
        (
            st.step,
            st.active_requests,
            st.context_requests,
            st.scheduled_tokens
        ),
        (1, 2, 2, 10)
    );
    assert_eq!(
        (
            st.used_kv_blocks,
            st.max_kv_blocks,
            st.tokens_per_block,
            st.queue_len
        ),
        (2, 15, 8, 0)
    );
    assert!(st.timestamp_us > 1_600_000_000_000_000);
    let json = serde_json::to_string(&st).unwrap();
    for field in [
        "\"step\":1",
        "\"free_kv_blocks\":13",
        "\"total_reused_blocks\":0",
        "\"preempted\":0",
    ] {
        assert!(json.contains(field), "{json}");
    }
}

fn tables(s: &Scheduler, st: &Step, id: RequestId) -> Vec<Vec<BlockId>> {
    let _ = s;
    st.items
        .iter()
        .filter(|i| i.id == id)
        .map(|i| i.block_table.clone())
        .collect()
}

#[test]
fn beam_group_forks_shares_full_blocks_and_copies_partial_ones() {
    // Prompt 12 = one full block + a partial one; 3 beams, 5 new tokens.
    // Reservation: 1 shared prompt block + 3 beams x 1 block (positions 8..16).
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 64),
        kv(5, false, 0),
    )
    .unwrap();
    assert_eq!(s.reservation_blocks(12, 5, 3), 4);
    s.submit_beam(1, seq(100, 12), 5, 3).unwrap();
    let st = s.schedule();
    s.check_step(&st).unwrap();
    assert_eq!(summary(&st), vec![(1, 0, 12, true)], "the prompt once");
    assert!(
        !s.on_beam_step_done(1, &[0, 0], &[5, 6]),
        "wrong width refused"
    );
    assert!(
        !s.on_beam_step_done(1, &[0, 1, 0], &[5, 6, 7]),
        "only beam 0 exists"
    );
    assert!(s.on_beam_step_done(1, &[0, 0, 0], &[5, 6, 7]));
    s.check_invariants().unwrap();
    assert_eq!(s.beam_count(1), Some(3));
    assert_eq!(s.beam_tokens(1, 2).unwrap()[12..], [7]);
    let st = s.schedule();
    s.check_step(&st).unwrap();
    let t = tables(&s, &st, 1);
    assert_eq!(t[0], vec![1, 2], "the first child takes the partial block");
    assert_eq!(
        (t[1][0], t[2][0]),
        (1, 1),
        "the full prompt block is shared"
    );
    assert_eq!(st.block_copies, vec![(2, t[1][1]), (2, t[2][1])]);
    assert_eq!(s.pool().refcount(1), 3);
    let items: Vec<_> = st
        .items
        .iter()
        .map(|i| (i.beam, i.start_pos, i.tokens.clone()))
        .collect();
    assert_eq!(
        items,
        vec![(0, 12, vec![5]), (1, 12, vec![6]), (2, 12, vec![7])]
    );
    assert_eq!(s.stats().copied_blocks, 2);
    // Beam 1 dies; beam 2 has two children (its partial block is copied once).
    assert!(s.on_beam_step_done(1, &[2, 2, 0], &[8, 9, 10]));
    s.check_invariants().unwrap();
    assert_eq!(s.beam_tokens(1, 0).unwrap()[12..], [7, 8]);
    assert_eq!(s.beam_tokens(1, 1).unwrap()[12..], [7, 9]);
    assert_eq!(s.beam_tokens(1, 2).unwrap()[12..], [5, 10]);
    let st = s.schedule();
    s.check_step(&st).unwrap();
    let u = tables(&s, &st, 1);
    assert_eq!((u[0][1], u[2][1]), (t[2][1], t[0][1]));
    assert_eq!(st.block_copies, vec![(t[2][1], u[1][1])]);
    assert_eq!(s.kv_block_counts(), (0, 4, 4), "exactly the reservation");
    // Run to the end: 5 tokens in all.
    for k in 0..3 {
        assert!(s.on_beam_step_done(1, &[0, 1, 2], &[k, k, k]));
        s.check_invariants().unwrap();
        let st = s.schedule();
        s.check_step(&st).unwrap();
        assert!(
            st.block_copies.is_empty(),
            "one child per parent: no copies"
        );
        assert_eq!(st.items.len(), if k < 2 { 3 } else { 0 });
    }
    assert_eq!(s.request_tokens(1).unwrap().len(), 17);
    s.finish(1);
    assert_eq!(s.kv_block_counts(), (4, 0, 4));
    s.check_invariants().unwrap();
}

#[test]
fn beam_group_refusals_and_whole_reservation() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::GuaranteedNoEvict, false, 4, 64),
        kv(4, false, 0),
    )
    .unwrap();
    let e = s.submit_beam(1, seq(0, 12), 5, 5).unwrap_err();
    assert!(
        matches!(e, SubmitError::BeamWidth { beam_width: 5, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("max_batch_size = 4"), "{e}");
    // 4 blocks needed, 3 usable.
    let e = s.submit_beam(1, seq(0, 12), 5, 3).unwrap_err();
    assert!(e.to_string().contains("needs 4 KV blocks"), "{e}");
    // Width 1 is an ordinary request.
    s.submit_beam(1, seq(0, 12), 5, 1).unwrap();
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(1, 0, 12, true)]);
    // A group waits until its whole reservation is free (and its width fits the slots).
    s.submit_beam(2, seq(0, 4), 4, 2).unwrap(); // 2 blocks: the prompt block is partial
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(1, 12, 1, true)], "{st:?}");
    assert_eq!(s.queue_len(), 1);
    s.finish(1);
    let st = step(&mut s);
    assert_eq!(summary(&st), vec![(2, 0, 4, true)]);
}

#[test]
fn max_utilization_never_preempts_a_beam_group() {
    // 5 usable blocks. Request 1 (older) grows into a third block while the group, newer,
    // holds the rest: request 1 waits instead of preempting the group.
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::MaxUtilization, false, 4, 64),
        kv(6, false, 0),
    )
    .unwrap();
    s.submit(1, seq(0, 12), 20).unwrap();
    s.submit_beam(2, seq(50, 8), 9, 2).unwrap(); // reservation 1 + 2 x 1 = 3 blocks
    let mut group_tokens = 0;
    let mut skipped = 0;
    for _ in 0..40 {
        let st = s.schedule();
        s.check_step(&st).unwrap();
        assert!(st.preempted.is_empty(), "{st:?}");
        let group_items: Vec<_> = st.items.iter().filter(|i| i.id == 2).collect();
        if !group_items.is_empty() {
            let parents: Vec<usize> = vec![0; 2];
            assert!(s.on_beam_step_done(2, &parents, &[1, 2]));
            group_tokens += 1;
        }
        if st.items.iter().any(|i| i.id == 1) {
            s.on_step_done(1, Some(3));
        } else if s.request_tokens(1).unwrap().len() < 32 {
            skipped += 1;
        }
        s.check_invariants().unwrap();
        if s.request_tokens(2).is_some_and(|t| t.len() == 17) {
            s.finish(2);
        }
    }
    assert_eq!(group_tokens, 9, "the group ran to the end");
    assert!(skipped > 0, "request 1 waited for the group's blocks");
    assert_eq!(s.request_tokens(1).unwrap().len(), 32);
    assert_eq!(s.stats().preempted, 0);
}

#[test]
fn cancelling_a_beam_group_frees_every_beam_and_drops_its_copies() {
    let mut s = Scheduler::new(
        cfg(CapacityPolicy::MaxUtilization, true, 8, 64),
        kv(32, true, 0),
    )
    .unwrap();
    s.submit_beam(1, seq(0, 21), 10, 4).unwrap();
    s.submit(2, seq(0, 21), 10).unwrap();
    let st = step(&mut s);
    assert_eq!(st.items.len(), 2);
    // The group's context item was reported through on_step_done: not run, planned again.
    let st = s.schedule();
    assert_eq!(summary(&st), vec![(2, 21, 1, true), (1, 0, 21, true)]);
    assert!(s.on_beam_step_done(1, &[0; 4], &[1, 2, 3, 4]));
    s.on_step_done(2, Some(1));
    s.check_invariants().unwrap();
    assert!(s.cancel(1));
    s.check_invariants().unwrap();
    let st = step(&mut s);
    assert!(st.block_copies.is_empty() && st.items.iter().all(|i| i.id == 2));
    s.finish(2);
    assert_eq!(s.kv_block_counts().1, 0);
}

/// The random drivers below actually reach preemption, chunking, reuse and both swaps
/// (fixed seeds, so this is deterministic).
#[test]
fn random_drivers_reach_every_path() {
    let mut total = super::harness::Coverage::default();
    for seed in 0..300u64 {
        let mut rng = crate::testing::Rng::new(seed);
        let data: Vec<u8> = (0..600).map(|_| rng.next_u64() as u8).collect();
        total.add(&run_bytes(&data).unwrap_or_else(|e| panic!("seed {seed}: {e}")));
    }
    eprintln!("{total:?}");
    let c = total;
    assert!(
        c.steps > 1000 && c.items > 1000 && c.chunks > 0 && c.preempted > 0,
        "{c:?}"
    );
    assert!(
        c.reused_blocks > 0 && c.swap_out > 0 && c.swap_in > 0,
        "{c:?}"
    );
    assert!(c.beam_steps > 100 && c.block_copies > 100, "{c:?}");
}

// ---- property tests ----

fn any_config() -> impl Strategy<Value = (SchedulerConfig, KvCacheConfig)> {
    let kv = (0u32..5, 2usize..40, any::<bool>(), 0usize..5);
    let sched = (
        any::<bool>(),
        any::<bool>(),
        1usize..8,
        0usize..200,
        1usize..12,
        1usize..8,
        0usize..16,
    );
    (kv, sched).prop_map(
        |(
            (t, blocks, reuse, host),
            (maxu, chunked, batch, extra, queue, seq_blocks, seq_extra),
        )| {
            let tpb = 8usize << t;
            let kv = KvCacheConfig {
                tokens_per_block: tpb,
                num_blocks: blocks,
                enable_reuse: reuse,
                host_cache_blocks: if reuse { host } else { 0 },
            };
            let policy = if maxu {
                CapacityPolicy::MaxUtilization
            } else {
                CapacityPolicy::GuaranteedNoEvict
            };
            let cfg = SchedulerConfig {
                max_batch_size: batch,
                max_num_tokens: tpb + extra,
                max_queue_size: queue,
                max_seq_len: tpb * seq_blocks + seq_extra,
                policy,
                chunked_context: chunked,
            };
            (cfg, kv)
        },
    )
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..400, 0usize..80, 0u8..3, 0usize..400, 0u64..4)
            .prop_map(|(prompt_len, max_new, family, shared, seed)| Op::Submit { prompt_len, max_new, family, shared, seed }),
        1 => (any::<usize>(), 0usize..40, 0usize..40, 0u64..4)
            .prop_map(|(pick, extra, max_new, seed)| Op::SubmitFollowUp { pick, extra, max_new, seed }),
        2 => (0usize..200, 0usize..40, 1usize..6, 0u8..3, 0usize..200, 0u64..4)
            .prop_map(|(prompt_len, max_new, width, family, shared, seed)| Op::SubmitBeam { prompt_len, max_new, width, family, shared, seed }),
        1 => any::<usize>().prop_map(|pick| Op::SubmitDuplicate { pick }),
        6 => any::<u64>().prop_map(|seed| Op::Step { seed }),
        1 => any::<usize>().prop_map(|pick| Op::Finish { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => Just(Op::FinishDone),
    ]
}

// 256 cases each by default; PROPTEST_CASES=N runs more.
proptest! {
    /// Random operation sequences keep every invariant, and draining frees every block.
    #[test]
    fn random_operations_keep_invariants((cfg, kv) in any_config(), ops in prop::collection::vec(any_op(), 1..120)) {
        let mut h = Harness::new(cfg, kv).unwrap();
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = h.apply(op) {
                prop_assert!(false, "op {i} {op:?}: {e}");
            }
        }
        if let Err(e) = h.drain() {
            prop_assert!(false, "drain: {e}");
        }
    }

    /// Every accepted request (beam groups too) completes within a bounded number of steps.
    #[test]
    fn accepted_requests_complete(
        (cfg, kv) in any_config(),
        reqs in prop::collection::vec((1usize..200, 1usize..40, 1usize..5, 0u8..3, 0usize..200, 0u64..4), 1..12),
    ) {
        let mut h = Harness::new(cfg, kv).unwrap();
        let (mut work, mut longest) = (0usize, 0usize);
        for &(prompt_len, max_new, width, family, shared, seed) in &reqs {
            let before = h.accepted;
            let op = if width > 2 {
                Op::SubmitBeam { prompt_len, max_new, width: width - 1, family, shared, seed }
            } else {
                Op::Submit { prompt_len, max_new, family, shared, seed }
            };
            h.apply(&op).unwrap();
            if h.accepted > before {
                work += 2 * (prompt_len + max_new) + 4;
                longest = longest.max(max_new);
            }
        }
        let bound = 2 * (work + longest * reqs.len()) + 64;
        match h.run_until_idle(bound) {
            Ok(_) => prop_assert_eq!(h.finished, h.accepted),
            Err(e) => prop_assert!(false, "{}", e),
        }
        prop_assert_eq!(h.sched.kv_block_counts().1, 0);
    }

    /// Arbitrary bytes through the fuzz target's decoder.
    #[test]
    fn fuzz_decoder_runs(data in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Err(e) = run_bytes(&data) {
            prop_assert!(false, "{}", e);
        }
    }
}
