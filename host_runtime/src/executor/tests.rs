//! Executor tests over a deterministic toy backend ([`Toy`]): a "model" whose KV entry at
//! each position is a hash chained over the KV entry before it and the token (so it depends
//! on the whole prefix, read through the block table, as real KV does) and whose logits are
//! a Markov table over the last token plus a small perturbation from that hash. Any
//! wrong KV (a missing or misdirected beam block copy, a bad swap) changes the logits, so
//! comparing against a brute-force search over the same function checks the whole path:
//! scheduler beam groups, block copies, the backend call order and `BeamSearch`.

use super::*;
use crate::kv::BlockId;
use crate::sampling::SamplingParams;
use crate::scheduler::CapacityPolicy;
use crate::testing::Rng;
use std::time::Duration;

const SEED: u64 = 0x5EED;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The toy model: next-token logits from the last token, perturbed by the prefix hash.
#[derive(Clone)]
struct ToyModel {
    base: Vec<Vec<f32>>,
    noise: f32,
}

impl ToyModel {
    fn from_probs(rows: &[&[f64]], noise: f32) -> ToyModel {
        ToyModel { base: rows.iter().map(|r| r.iter().map(|&p| p.ln() as f32).collect()).collect(), noise }
    }

    fn random(seed: u64, vocab: usize, spread: f32) -> ToyModel {
        let mut r = Rng::new(seed);
        ToyModel { base: (0..vocab).map(|_| (0..vocab).map(|_| r.uniform(-spread, spread)).collect()).collect(), noise: 0.05 }
    }

    fn vocab(&self) -> usize {
        self.base.len()
    }

    /// The KV entry of a position: its token over the entry before it.
    fn state(prev: u64, tok: u32) -> u64 {
        mix(prev ^ (u64::from(tok) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn logits(&self, state: u64, last: u32) -> Vec<f32> {
        let unit = |v: usize| (mix(state ^ v as u64) >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
        self.base[last as usize].iter().enumerate().map(|(v, &b)| b + self.noise * unit(v)).collect()
    }

    /// Log-prob of `seq` after `prompt` (f64 log-softmax, as `BeamSearch` computes it).
    fn seq_logprob(&self, prompt: &[u32], seq: &[u32]) -> f64 {
        let mut state = prompt.iter().fold(SEED, |s, &t| Self::state(s, t));
        let mut last = *prompt.last().unwrap();
        let mut total = 0.0;
        for &t in seq {
            let l = self.logits(state, last);
            let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(m) + l.iter().map(|&x| (f64::from(x) - f64::from(m)).exp()).sum::<f64>().ln();
            total += f64::from(l[t as usize]) - lse;
            state = Self::state(state, t);
            last = t;
        }
        total
    }

    /// Every sequence of `len` tokens with its log-prob, best first.
    fn ranked(&self, prompt: &[u32], len: usize) -> Vec<(Vec<u32>, f64)> {
        let v = self.vocab();
        let mut all: Vec<(Vec<u32>, f64)> = (0..v.pow(len as u32))
            .map(|mut code| {
                let seq: Vec<u32> = (0..len)
                    .map(|_| {
                        let t = (code % v) as u32;
                        code /= v;
                        t
                    })
                    .collect();
                let lp = self.seq_logprob(prompt, &seq);
                (seq, lp)
            })
            .collect();
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        all
    }
}

/// The toy backend: paged KV of one `u64` per position, host slots, an optional delay.
struct Toy {
    model: ToyModel,
    tpb: usize,
    kv: Vec<u64>,
    host: Vec<Vec<u64>>,
    delay: Duration,
}

impl Toy {
    fn new(model: ToyModel, kv: &KvCacheConfig, delay: Duration) -> Toy {
        let tpb = kv.tokens_per_block;
        Toy { model, tpb, kv: vec![0; kv.num_blocks * tpb], host: vec![Vec::new(); kv.host_cache_blocks], delay }
    }

    fn slot(&self, table: &[BlockId], p: usize) -> Result<usize, BackendError> {
        match table.get(p / self.tpb) {
            Some(&b) if b != 0 && (b as usize + 1) * self.tpb <= self.kv.len() => Ok(b as usize * self.tpb + p % self.tpb),
            other => Err(BackendError(format!("position {p}: bad block {other:?}"))),
        }
    }

    fn block(&self, b: BlockId) -> Result<std::ops::Range<usize>, BackendError> {
        let at = b as usize * self.tpb;
        if b == 0 || at + self.tpb > self.kv.len() {
            return Err(BackendError(format!("bad block {b}")));
        }
        Ok(at..at + self.tpb)
    }
}

impl Backend for Toy {
    fn vocab_size(&self) -> usize {
        self.model.vocab()
    }

    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError> {
        std::thread::sleep(self.delay);
        let mut out = Vec::new();
        for it in items {
            let mut state = if it.start_pos == 0 { SEED } else { self.kv[self.slot(it.block_table, it.start_pos - 1)?] };
            for (i, &t) in it.tokens.iter().enumerate() {
                state = ToyModel::state(state, t);
                let at = self.slot(it.block_table, it.start_pos + i)?;
                self.kv[at] = state;
            }
            if it.needs_logits {
                out.push(self.model.logits(state, *it.tokens.last().unwrap()));
            }
        }
        Ok(out)
    }

    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError> {
        let r = self.block(block)?;
        self.host[slot] = self.kv[r].to_vec();
        Ok(())
    }

    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError> {
        let r = self.block(block)?;
        self.kv[r].copy_from_slice(&self.host[slot]);
        Ok(())
    }

    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError> {
        let (s, d) = (self.block(src)?, self.block(dst)?);
        self.kv.copy_within(s, d.start);
        Ok(())
    }
}

fn config(policy: CapacityPolicy, num_blocks: usize, batch: usize) -> ExecutorConfig {
    ExecutorConfig {
        scheduler: SchedulerConfig { max_batch_size: batch, max_num_tokens: 64, max_queue_size: 64, max_seq_len: 64, policy, chunked_context: true },
        kv: KvCacheConfig { tokens_per_block: 8, num_blocks, enable_reuse: true, host_cache_blocks: 4 },
        max_beam_width: 9,
        end_ids: vec![],
    }
}

fn executor(model: &ToyModel, cfg: ExecutorConfig, delay: Duration) -> Executor {
    let backend = Toy::new(model.clone(), &cfg.kv, delay);
    Executor::new(cfg, Box::new(backend), Arc::new(NoText)).unwrap()
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_new_tokens: n, ignore_eos: true, ..Default::default() }
}

fn beam(width: usize, n: usize, max_new: usize) -> SamplingParams {
    SamplingParams { beam_width: width, n, max_new_tokens: max_new, length_penalty: 0.0, ignore_eos: true, ..Default::default() }
}

fn run(e: &Executor, prompt: &[u32], params: &SamplingParams) -> Output {
    e.submit(Request { prompt: prompt.to_vec(), sampling: params.clone() }).unwrap().wait()
}

/// Token 3 leads to 0 (likeliest, then a flat distribution) or 1 (then near-certain 2, 3).
fn trap() -> ToyModel {
    let flat: &[f64] = &[0.25, 0.25, 0.25, 0.25];
    ToyModel::from_probs(&[flat, &[0.01, 0.01, 0.97, 0.01], &[0.05, 0.03, 0.02, 0.9], &[0.5, 0.4, 0.05, 0.05]], 0.02)
}

fn check_hypotheses(model: &ToyModel, prompt: &[u32], out: &Output) {
    assert!(out.beams.windows(2).all(|p| p[0].score >= p[1].score), "sorted by score: {:?}", out.beams);
    for h in &out.beams {
        let want = model.seq_logprob(prompt, &h.token_ids);
        assert!((f64::from(h.cum_logprob) - want).abs() < 1e-4, "{:?}: {} vs {want}", h.token_ids, h.cum_logprob);
    }
    let best = &out.beams[0];
    assert_eq!((&out.token_ids, out.cum_logprob), (&best.token_ids, best.cum_logprob));
    assert_eq!(out.generated_tokens, best.token_ids.len());
}

#[test]
fn beam_search_finds_the_best_sequence_that_greedy_misses() {
    let model = trap();
    let e = executor(&model, config(CapacityPolicy::GuaranteedNoEvict, 64, 16), Duration::ZERO);
    // 12 prompt tokens: the fork copies a partial block.
    let prompt = [2, 0, 1, 3, 3, 1, 0, 2, 3, 3, 0, 3];
    let g = run(&e, &prompt, &greedy(3));
    assert_eq!(g.token_ids[0], 0, "greedy takes the trap");
    let ranked = model.ranked(&prompt, 3);
    assert_eq!(ranked[0].0, vec![1, 2, 3]);
    let out = run(&e, &prompt, &beam(3, 3, 3));
    assert_eq!(out.finish, Some(FinishReason::Length));
    assert_eq!(out.token_ids, ranked[0].0);
    assert_eq!(out.beams.len(), 3);
    check_hypotheses(&model, &prompt, &out);
    assert!(f64::from(out.cum_logprob) > model.seq_logprob(&prompt, &g.token_ids));
    assert_eq!(e.kv_blocks().1, 0, "every block free at the end");
}

#[test]
fn exhaustive_width_returns_the_n_best_sequences_in_a_mixed_batch() {
    // W = V^(L-1): beam search keeps every prefix, so its W hypotheses are the W best.
    let cfg = config(CapacityPolicy::GuaranteedNoEvict, 128, 48);
    for seed in 0..4u64 {
        let model = ToyModel::random(seed, 3, 2.0);
        let e = executor(&model, cfg.clone(), Duration::ZERO);
        // Prompts of 7 (the fork copies, then the beams cross a block boundary) and 8
        // (the fork shares every block) tokens, in flight with greedy requests.
        let prompts: Vec<Vec<u32>> = vec![vec![0, 1, 2, 0, 1, 2, 1], vec![2, 2, 1, 0, 0, 1, 2, 0], vec![1, 0, 2, 2, 1, 0, 1]];
        let mut handles = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            handles.push(e.submit(Request { prompt: p.clone(), sampling: greedy(5) }).unwrap());
            let params = SamplingParams { n: 9 - i, ..beam(9, 9, 3) };
            handles.push(e.submit(Request { prompt: p.clone(), sampling: params }).unwrap());
        }
        let outs: Vec<Output> = handles.into_iter().map(Handle::wait).collect();
        for (i, p) in prompts.iter().enumerate() {
            let out = &outs[2 * i + 1];
            let ranked = model.ranked(p, 3);
            let got: Vec<&Vec<u32>> = out.beams.iter().map(|b| &b.token_ids).collect();
            let want: Vec<&Vec<u32>> = ranked.iter().take(9 - i).map(|(s, _)| s).collect();
            assert_eq!(got, want, "seed {seed} prompt {i}");
            check_hypotheses(&model, p, out);
            // The greedy requests beside them are unaffected.
            let alone = run(&e, p, &greedy(5));
            assert_eq!(outs[2 * i].token_ids, alone.token_ids, "seed {seed} prompt {i}");
        }
        assert_eq!(e.kv_blocks().1, 0);
    }
}

#[test]
fn an_end_id_ends_hypotheses_with_stop() {
    let model = trap();
    let e = executor(&model, config(CapacityPolicy::GuaranteedNoEvict, 64, 16), Duration::ZERO);
    let prompt = [1, 0, 3];
    // End id 2: the path 3 -> 1 -> 2 ends after one token.
    let params = SamplingParams { end_id: Some(2), ignore_eos: false, ..beam(3, 2, 6) };
    let out = run(&e, &prompt, &params);
    assert_eq!(out.finish, Some(FinishReason::Stop), "{out:?}");
    assert_eq!(out.beams.len(), 2);
    for h in &out.beams {
        assert!(!h.token_ids.contains(&2));
    }
    let best = &out.beams[0];
    let with_end: Vec<u32> = best.token_ids.iter().copied().chain([2]).collect();
    assert!((f64::from(best.cum_logprob) - model.seq_logprob(&prompt, &with_end)).abs() < 1e-4);
}

#[test]
fn beams_are_never_preempted_and_match_their_run_alone() {
    let model = ToyModel::random(7, 5, 2.0);
    let prompt = vec![4, 3, 2, 1, 0, 1, 2];
    let params = SamplingParams { length_penalty: 1.0, ..beam(4, 4, 10) };
    let alone = {
        let e = executor(&model, config(CapacityPolicy::MaxUtilization, 64, 16), Duration::ZERO);
        run(&e, &prompt, &params)
    };
    // 11 usable blocks: the group reserves 8; three greedy requests of up to 4 blocks each
    // must preempt each other, never the group.
    // Each step takes 2 ms, so every submission below lands while the first steps run and
    // the four requests compete for blocks (with instant steps the first could finish
    // before the others arrive, and nothing would be preempted).
    // (13 device blocks: the null block and the health probe's are not usable.)
    let e = executor(&model, config(CapacityPolicy::MaxUtilization, 13, 16), Duration::from_millis(2));
    let others: Vec<Vec<u32>> = (0..3).map(|i| vec![i, 1, 2, 3, 4, 0, i]).collect();
    let want: Vec<Vec<u32>> = others.iter().map(|p| run(&e, p, &greedy(20)).token_ids).collect();
    let mut handles: Vec<Handle> = others.iter().map(|p| e.submit(Request { prompt: p.clone(), sampling: greedy(20) }).unwrap()).collect();
    handles.insert(1, e.submit(Request { prompt: prompt.clone(), sampling: params.clone() }).unwrap());
    let outs: Vec<Output> = handles.into_iter().map(Handle::wait).collect();
    assert!(e.metrics().preempted > 0, "{:?}", e.metrics());
    assert_eq!(outs[1].beams, alone.beams);
    for (i, w) in want.iter().enumerate() {
        let o = &outs[if i == 0 { 0 } else { i + 1 }];
        assert_eq!(&o.token_ids, w, "greedy request {i}");
    }
    assert_eq!(e.kv_blocks().1, 0);
}

#[test]
fn cancelling_a_beam_request_frees_every_block() {
    let model = ToyModel::random(3, 6, 1.0);
    let e = executor(&model, config(CapacityPolicy::GuaranteedNoEvict, 64, 16), Duration::from_millis(2));
    let h = e.submit(Request { prompt: vec![1, 2, 3, 4, 5, 0, 1, 2, 3], sampling: beam(4, 2, 40) }).unwrap();
    let t0 = std::time::Instant::now();
    while e.metrics().steps < 4 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(e.kv_blocks().1 > 0);
    assert!(e.cancel(h.id));
    assert_eq!(e.kv_blocks().1, 0, "blocks free right after cancel");
    let out = h.wait();
    assert_eq!(out.finish, Some(FinishReason::Cancelled));
    assert!(out.beams.is_empty());
}

#[test]
fn beam_requests_are_validated() {
    let model = trap();
    let e = executor(&model, config(CapacityPolicy::GuaranteedNoEvict, 64, 4), Duration::ZERO);
    let submit = |p: SamplingParams| e.submit(Request { prompt: vec![1, 2], sampling: p });
    match submit(beam(10, 1, 4)) {
        Err(ExecutorError::Invalid(p)) => assert_eq!(p.field, "beam_width"),
        other => panic!("{:?}", other.map(|h| h.id)),
    }
    match submit(beam(3, 4, 4)) {
        Err(ExecutorError::Invalid(p)) => assert_eq!(p.field, "n"),
        other => panic!("{:?}", other.map(|h| h.id)),
    }
    // Within max_beam_width but wider than the batch: refused by the scheduler.
    match submit(beam(6, 1, 4)) {
        Err(ExecutorError::Rejected(crate::scheduler::SubmitError::BeamWidth { beam_width: 6, .. })) => {}
        other => panic!("{:?}", other.map(|h| h.id)),
    }
    assert_eq!(e.active_requests(), 0);
}

// ---- health probes and backend faults -----------------------------------------------

/// Wraps [`Toy`]: from step `at` on (counting `step` calls), every step fails (`Error`) or
/// the first one panics (`Panic`).
struct Breaking {
    toy: Toy,
    steps: usize,
    at: usize,
    panic: bool,
}

impl Backend for Breaking {
    fn vocab_size(&self) -> usize {
        self.toy.vocab_size()
    }
    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.steps += 1;
        if self.steps >= self.at {
            if self.panic {
                panic!("injected panic at step {}", self.steps);
            }
            return Err(BackendError(format!("injected failure at step {}", self.steps)));
        }
        self.toy.step(items)
    }
    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError> {
        self.toy.swap_out(block, slot)
    }
    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError> {
        self.toy.swap_in(slot, block)
    }
    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError> {
        self.toy.copy_block(src, dst)
    }
}

fn breaking(model: &ToyModel, cfg: ExecutorConfig, at: usize, panic: bool) -> Executor {
    let toy = Toy::new(model.clone(), &cfg.kv, Duration::from_millis(2));
    Executor::new(cfg, Box::new(Breaking { toy, steps: 0, at, panic }), Arc::new(NoText)).unwrap()
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_probe_is_a_greedy_token_on_its_own_block() {
    let model = ToyModel::random(11, 6, 2.0);
    let e = executor(&model, config(CapacityPolicy::GuaranteedNoEvict, 16, 4), Duration::ZERO);
    // 16 device blocks: the null block and the probe's are not the scheduler's.
    assert_eq!(e.kv_blocks(), (14, 0, 14));
    let prompt = [1, 2, 3, 4, 5];
    let want = run(&e, &prompt, &greedy(1)).token_ids[0];
    assert_eq!(e.probe(&prompt, SECOND), Ok(want));
    assert_eq!(e.kv_blocks(), (14, 0, 14), "the probe took no pool block");
    assert!(matches!(e.probe(&[], SECOND), Err(ProbeError::Invalid(_))));
    assert!(matches!(e.probe(&[0; 9], SECOND), Err(ProbeError::Invalid(_))), "longer than one block (8)");
    assert!(matches!(e.probe(&[6], SECOND), Err(ProbeError::Invalid(_))), "outside the vocabulary");
}

#[test]
fn probes_answer_while_every_block_and_slot_is_taken() {
    let model = ToyModel::random(12, 6, 2.0);
    // 2 slots, 6 device blocks = 4 usable: two prompts of 9 tokens (+7 new: 2 blocks of 8
    // each, taken by the prefill) hold all of them; a third waits.
    let e = executor(&model, config(CapacityPolicy::GuaranteedNoEvict, 6, 2), Duration::from_millis(20));
    let prompt = |i: u32| vec![i, 1, 2, 3, 4, 5, 0, 1, 2];
    let handles: Vec<Handle> = (0..3).map(|i| e.submit(Request { prompt: prompt(i), sampling: greedy(7) }).unwrap()).collect();
    let t0 = std::time::Instant::now();
    while e.kv_blocks().0 > 0 || e.queue_counts() != (1, 2) {
        assert!(t0.elapsed() < Duration::from_secs(10), "never full: {:?} {:?}", e.kv_blocks(), e.queue_counts());
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = std::time::Instant::now();
    assert!(e.probe(&[1, 2], SECOND).is_ok());
    assert!(t.elapsed() < Duration::from_millis(500), "the probe waited {:?}", t.elapsed());
    assert_eq!(e.kv_blocks().0, 0, "the requests still hold every block");
    let outs: Vec<Output> = handles.into_iter().map(Handle::wait).collect();
    assert!(outs.iter().all(|o| o.finish == Some(FinishReason::Length) && o.token_ids.len() == 7), "{outs:?}");
    // The probe changed nothing the requests computed.
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o.token_ids, run(&e, &prompt(i as u32), &greedy(7)).token_ids);
    }
    assert_eq!(e.kv_blocks().1, 0);
}

#[test]
fn a_backend_error_fails_its_step_and_the_probe_but_not_the_loop() {
    let model = ToyModel::random(13, 6, 2.0);
    let e = breaking(&model, config(CapacityPolicy::GuaranteedNoEvict, 32, 4), 4, false);
    let out = run(&e, &[1, 2, 3], &greedy(10));
    assert!(matches!(&out.finish, Some(FinishReason::Error(m)) if m.contains("injected failure")), "{out:?}");
    assert!(matches!(e.probe(&[1], SECOND), Err(ProbeError::Failed(m)) if m.contains("injected failure")));
    assert!(e.is_alive() && !e.is_closed() && e.fault().is_none());
    assert_eq!(e.kv_blocks().1, 0);
}

#[test]
fn a_backend_panic_stops_the_loop_and_ends_every_request() {
    let model = ToyModel::random(14, 6, 2.0);
    let e = breaking(&model, config(CapacityPolicy::GuaranteedNoEvict, 32, 2), 6, true);
    // Two run, one waits (batch 2): all three end with an error naming the panic.
    let handles: Vec<Handle> = (0..3).map(|i| e.submit(Request { prompt: vec![i, 2, 3], sampling: greedy(30) }).unwrap()).collect();
    let outs: Vec<Output> = handles.into_iter().map(Handle::wait).collect();
    for o in &outs {
        assert!(matches!(&o.finish, Some(FinishReason::Error(m)) if m.contains("injected panic")), "{o:?}");
    }
    assert!(outs[..2].iter().all(|o| !o.token_ids.is_empty()), "the running ones had tokens first");
    let t0 = std::time::Instant::now();
    while e.is_alive() {
        assert!(t0.elapsed() < Duration::from_secs(5), "the loop did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(e.is_closed());
    assert!(e.fault().is_some_and(|f| f.contains("injected panic")));
    assert!(matches!(e.submit(Request { prompt: vec![1], sampling: greedy(1) }), Err(ExecutorError::Closed)));
    assert!(matches!(e.probe(&[1], SECOND), Err(ProbeError::Stopped(m)) if m.contains("injected panic")));
    assert_eq!(e.kv_blocks().1, 0);
}

#[test]
fn a_probe_that_panics_stops_the_loop() {
    let model = ToyModel::random(15, 6, 2.0);
    let e = breaking(&model, config(CapacityPolicy::GuaranteedNoEvict, 32, 2), 1, true);
    assert!(matches!(e.probe(&[1], SECOND), Err(ProbeError::Failed(m)) if m.contains("injected panic")));
    let t0 = std::time::Instant::now();
    while e.is_alive() {
        assert!(t0.elapsed() < Duration::from_secs(5), "the loop did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(e.submit(Request { prompt: vec![1], sampling: greedy(1) }), Err(ExecutorError::Closed)));
}

/// The toy backend reducing rows as a GPU does ([`Backend::step_reduced`] through
/// `TopLogits::of_row`), with few candidates so that the want rules matter.
struct Reducing(Toy);

const REDUCED_K: usize = 6;

impl Backend for Reducing {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.0.step(items)
    }
    fn step_reduced(&mut self, items: &[BackendItem], wants: &[crate::sampling::LogitsWant]) -> Result<Vec<LogitsRow>, BackendError> {
        let rows = self.0.step(items)?;
        assert_eq!(rows.len(), wants.len(), "one want per logits row");
        Ok(rows
            .into_iter()
            .zip(wants)
            .map(|(row, w)| match *w {
                crate::sampling::LogitsWant::Full => LogitsRow::Full(row),
                crate::sampling::LogitsWant::Top { inv_temperature } => LogitsRow::Top(crate::sampling::TopLogits::of_row(&row, REDUCED_K, inv_temperature)),
            })
            .collect())
    }
    fn top_candidates(&self) -> usize {
        REDUCED_K
    }
    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError> {
        self.0.swap_out(block, slot)
    }
    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError> {
        self.0.swap_in(slot, block)
    }
    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError> {
        self.0.copy_block(src, dst)
    }
}

/// A batch of greedy, top-k, top-p, penalised, beam and log-prob requests gives the same
/// outputs whether the backend returns whole rows or rows reduced where they were computed.
#[test]
fn reduced_rows_give_the_same_outputs_as_whole_rows() {
    let model = ToyModel::random(11, 24, 3.0);
    let cfg = || config(CapacityPolicy::MaxUtilization, 64, 8);
    let whole = executor(&model, cfg(), Duration::ZERO);
    let c = cfg();
    let reduced = Executor::new(c.clone(), Box::new(Reducing(Toy::new(model.clone(), &c.kv, Duration::ZERO))), Arc::new(NoText)).unwrap();
    let sampled = |t: f32, k: i64, p: f32, seed: u64| SamplingParams { temperature: t, top_k: k, top_p: p, seed: Some(seed), max_new_tokens: 12, ignore_eos: true, ..Default::default() };
    let params = vec![
        greedy(12),
        SamplingParams { logprobs: Some(3), ..greedy(12) },
        SamplingParams { logprobs: Some(9), ..greedy(12) },
        sampled(0.8, 4, 1.0, 1),
        sampled(1.3, 6, 0.7, 2),
        sampled(1.0, 0, 0.9, 3),
        SamplingParams { min_p: 0.2, ..sampled(0.9, 5, 1.0, 4) },
        SamplingParams { repetition_penalty: 1.3, ..sampled(1.0, 3, 1.0, 5) },
        SamplingParams { min_new_tokens: 4, end_id: Some(2), ..greedy(12) },
        beam(3, 2, 6),
    ];
    for (i, p) in params.iter().enumerate() {
        let prompt = [i as u32 % 24, 5, 7];
        let handles: Vec<_> = [&whole, &reduced].iter().map(|e| e.submit(Request { prompt: prompt.to_vec(), sampling: p.clone() }).unwrap()).collect();
        let outs: Vec<Output> = handles.into_iter().map(|h| h.wait()).collect();
        assert_eq!(outs[0].token_ids, outs[1].token_ids, "request {i}: {p:?}");
        assert_eq!(outs[0].beams.len(), outs[1].beams.len());
        for (a, b) in outs[0].logprobs.iter().zip(&outs[1].logprobs) {
            assert_eq!(a.id, b.id);
            assert!((a.logprob - b.logprob).abs() < 1e-5, "request {i}: {} vs {}", a.logprob, b.logprob);
            assert_eq!(a.top.iter().map(|t| t.id).collect::<Vec<_>>(), b.top.iter().map(|t| t.id).collect::<Vec<_>>());
        }
    }
}
