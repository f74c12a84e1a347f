//! Tests of [`super`]: the sampler against f64 references (greedy ties, temperature limits,
//! top-k/top-p/min-p sets, log-probs), reproducibility, and reduced rows sampling like whole rows.

use super::*;
use crate::testing::Rng;
use proptest::prelude::*;

fn random_logits(r: &mut Rng, v: usize, spread: f32) -> Vec<f32> {
    (0..v).map(|_| r.uniform(-spread, spread)).collect()
}

/// f64 log-softmax of `logits / t`.
fn log_softmax(logits: &[f32], t: f64) -> Vec<f64> {
    let s: Vec<f64> = logits.iter().map(|&x| f64::from(x) / t).collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + s.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    s.iter().map(|x| x - lse).collect()
}

/// Ids sorted best first (ties → lower id).
fn sorted_ids(logits: &[f32]) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    ids.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
    ids
}

/// The reference allowed set: top-k, then the smallest prefix with mass ≥ p (of the
/// renormalised top-k set), then min-p, all in f64. `slack` widens each cut so that
/// rounding at a boundary cannot fail the test.
fn reference_allowed(logits: &[f32], t: f64, k: usize, p: f64, min_p: f64, slack: f64) -> Vec<bool> {
    let v = logits.len();
    let lp = log_softmax(logits, t);
    let ids = sorted_ids(logits);
    let k = if k == 0 { v } else { k.min(v) };
    let mass: f64 = ids[..k].iter().map(|&i| lp[i].exp()).sum();
    let mut cut = k;
    if p < 1.0 {
        let mut acc = 0.0;
        for (j, &i) in ids[..k].iter().enumerate() {
            acc += lp[i].exp() / mass;
            if acc >= (p + slack).min(1.0) {
                cut = j + 1;
                break;
            }
        }
    }
    let pmax = lp[ids[0]].exp();
    let mut allowed = vec![false; v];
    for &i in &ids[..cut] {
        allowed[i] = lp[i].exp() >= (min_p - slack) * pmax;
    }
    allowed
}

fn draw(params: &SamplingParams, logits: &[f32], draws: usize) -> Vec<u32> {
    let mut s = Sampler::new(params, &[], &[]);
    (0..draws).map(|_| s.sample(&mut logits.to_vec(), &[]).id).collect()
}

proptest! {
    #[test]
    fn greedy_is_argmax_with_lowest_tie(seed in any::<u64>(), v in 1usize..300, dup in 0usize..4) {
        let mut r = Rng::new(seed);
        let mut logits = random_logits(&mut r, v, 8.0);
        // Copy the max to a few random places so that ties happen.
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        for _ in 0..dup {
            logits[r.below(v as u64) as usize] = max;
        }
        let want = logits.iter().position(|&x| x == max).unwrap() as u32;
        let params = SamplingParams { temperature: 0.0, logprobs: Some(5), ..Default::default() };
        let got = Sampler::new(&params, &[], &[]).sample(&mut logits.clone(), &[]);
        prop_assert_eq!(got.id, want);
        let lp = log_softmax(&logits, 1.0);
        prop_assert!((f64::from(got.logprob) - lp[want as usize]).abs() < 1e-5);
        let ids = sorted_ids(&logits);
        prop_assert_eq!(got.top.iter().map(|t| t.id as usize).collect::<Vec<_>>(), ids[..5.min(v)].to_vec());
    }

    #[test]
    fn low_temperature_limit_is_greedy(seed in any::<u64>(), v in 2usize..200) {
        let mut r = Rng::new(seed);
        let logits = random_logits(&mut r, v, 10.0);
        let ids = sorted_ids(&logits);
        prop_assume!(logits[ids[0]] - logits[ids[1]] > 1e-3);
        for t in [1e-6f32, 1e-20, 1e-40] {
            let params = SamplingParams { temperature: t, seed: Some(seed), ..Default::default() };
            prop_assert!(draw(&params, &logits, 8).iter().all(|&i| i as usize == ids[0]));
        }
    }

    #[test]
    fn top_k_1_is_greedy(seed in any::<u64>(), v in 1usize..300, t in 0.1f32..3.0) {
        let mut r = Rng::new(seed);
        let logits = random_logits(&mut r, v, 5.0);
        let params = SamplingParams { temperature: t, top_k: 1, seed: Some(seed), ..Default::default() };
        let want = sorted_ids(&logits)[0] as u32;
        prop_assert!(draw(&params, &logits, 10).iter().all(|&i| i == want));
    }

    #[test]
    fn top_k_stays_in_the_k_largest(seed in any::<u64>(), v in 2usize..300, k in 1i64..40, t in 0.2f32..4.0) {
        let mut r = Rng::new(seed);
        let logits = random_logits(&mut r, v, 3.0);
        let params = SamplingParams { temperature: t, top_k: k, seed: Some(seed), ..Default::default() };
        let allowed = reference_allowed(&logits, f64::from(t), k as usize, 1.0, 0.0, 0.0);
        for id in draw(&params, &logits, 30) {
            prop_assert!(allowed[id as usize], "token {} outside the top {}", id, k);
        }
    }

    #[test]
    fn top_p_stays_in_the_nucleus(seed in any::<u64>(), v in 2usize..400, p in 0.05f32..1.0, t in 0.2f32..3.0) {
        let mut r = Rng::new(seed);
        let logits = random_logits(&mut r, v, 4.0);
        let params = SamplingParams { temperature: t, top_p: p, seed: Some(seed), ..Default::default() };
        let allowed = reference_allowed(&logits, f64::from(t), 0, f64::from(p), 0.0, 1e-5);
        for id in draw(&params, &logits, 30) {
            prop_assert!(allowed[id as usize], "token {} outside the top-p {} set", id, p);
        }
    }

    #[test]
    fn min_p_keeps_only_likely_tokens(seed in any::<u64>(), v in 2usize..400, mp in 0.0f32..1.0, t in 0.2f32..3.0) {
        let mut r = Rng::new(seed);
        let logits = random_logits(&mut r, v, 4.0);
        let params = SamplingParams { temperature: t, min_p: mp, seed: Some(seed), ..Default::default() };
        let allowed = reference_allowed(&logits, f64::from(t), 0, 1.0, f64::from(mp), 1e-5);
        for id in draw(&params, &logits, 30) {
            prop_assert!(allowed[id as usize], "token {} below min_p {}", id, mp);
        }
    }

    #[test]
    fn combined_truncation_matches_reference(
        seed in any::<u64>(), v in 2usize..400, k in 0i64..50, p in 0.05f32..1.0, mp in 0.0f32..0.5, t in 0.2f32..3.0,
    ) {
        let mut r = Rng::new(seed);
        let logits = random_logits(&mut r, v, 4.0);
        let params = SamplingParams { temperature: t, top_k: k, top_p: p, min_p: mp, seed: Some(seed), ..Default::default() };
        let allowed = reference_allowed(&logits, f64::from(t), k as usize, f64::from(p), f64::from(mp), 1e-5);
        for id in draw(&params, &logits, 30) {
            prop_assert!(allowed[id as usize], "token {} not allowed", id);
        }
    }

    #[test]
    fn logprobs_match_f64_reference(seed in any::<u64>(), v in 1usize..500, t in 0.05f32..3.0, n in 0usize..=20) {
        let mut r = Rng::new(seed);
        let logits = random_logits(&mut r, v, 20.0);
        let params = SamplingParams { temperature: t, logprobs: Some(n), seed: Some(seed), ..Default::default() };
        let mut s = Sampler::new(&params, &[], &[]);
        let got = s.sample(&mut logits.clone(), &[]);
        let lp = log_softmax(&logits, f64::from(t));
        // 1e-5 absolute, relative past |logprob| 1 (an f32 near -700 is only good to 6e-5).
        let close = |got: f32, want: f64| (f64::from(got) - want).abs() < 1e-5 * want.abs().max(1.0);
        prop_assert!(close(got.logprob, lp[got.id as usize]), "{} vs {}", got.logprob, lp[got.id as usize]);
        let ids = sorted_ids(&logits);
        prop_assert_eq!(got.top.len(), n.min(v));
        for (j, tl) in got.top.iter().enumerate() {
            prop_assert_eq!(tl.id as usize, ids[j]);
            prop_assert!(close(tl.logprob, lp[ids[j]]), "{} vs {}", tl.logprob, lp[ids[j]]);
            if j > 0 {
                prop_assert!(tl.logprob <= got.top[j - 1].logprob);
            }
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_seeds_differ() {
    let mut r = Rng::new(3);
    let logits = random_logits(&mut r, 50, 1.0);
    let p = |seed| SamplingParams { seed: Some(seed), top_p: 0.95, top_k: 40, ..Default::default() };
    let a = draw(&p(11), &logits, 64);
    assert_eq!(a, draw(&p(11), &logits, 64));
    assert_ne!(a, draw(&p(12), &logits, 64));
    // Sequences of one request differ from each other, and each is reproducible.
    let seq = |i| {
        let mut s = Sampler::for_sequence(&p(11), &[], &[], i);
        (0..64).map(|_| s.sample(&mut logits.clone(), &[]).id).collect::<Vec<_>>()
    };
    assert_eq!(seq(0), a);
    assert_ne!(seq(1), a);
    assert_eq!(seq(1), seq(1));
}

/// Pearson's chi-square of `counts` against `probs` (tokens with probability 0 must never
/// be drawn).
fn chi_square(counts: &[usize], probs: &[f64], draws: usize) -> f64 {
    let mut chi = 0.0;
    for (&c, &p) in counts.iter().zip(probs) {
        if p == 0.0 {
            assert_eq!(c, 0, "drew a token of probability 0");
        } else {
            let e = p * draws as f64;
            chi += (c as f64 - e).powi(2) / e;
        }
    }
    chi
}

#[test]
fn frequencies_match_probabilities() {
    const DRAWS: usize = 20_000;
    let logits = [1.0f32, 0.5, 0.0, -0.5, 2.0, -1.0, 0.25];
    // Plain temperature; top-k + top-p (cuts inside the top-k set); min-p. The kept set
    // and the renormalised probabilities come from the f64 reference.
    let cases = [
        SamplingParams { temperature: 0.8, seed: Some(1234), ..Default::default() },
        SamplingParams { temperature: 1.3, top_k: 4, top_p: 0.75, seed: Some(99), ..Default::default() },
        SamplingParams { temperature: 1.0, min_p: 0.2, seed: Some(7), ..Default::default() },
    ];
    for params in cases {
        let t = f64::from(params.temperature);
        let allowed = reference_allowed(&logits, t, params.top_k as usize, f64::from(params.top_p), f64::from(params.min_p), 0.0);
        let lp = log_softmax(&logits, t);
        let mass: f64 = (0..7).filter(|&i| allowed[i]).map(|i| lp[i].exp()).sum();
        let probs: Vec<f64> = (0..7).map(|i| if allowed[i] { lp[i].exp() / mass } else { 0.0 }).collect();
        let mut counts = [0usize; 7];
        for id in draw(&params, &logits, DRAWS) {
            counts[id as usize] += 1;
        }
        let df = probs.iter().filter(|&&p| p > 0.0).count() - 1;
        let chi = chi_square(&counts, &probs, DRAWS);
        // 99.9% quantiles of chi-square for df 1..=6.
        let crit = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46][df - 1];
        assert!(chi < crit, "{params:?}: chi-square {chi:.2} ≥ {crit} (df {df}); counts {counts:?}, probs {probs:?}");
    }
}

#[test]
fn top_p_on_a_flat_large_vocabulary_grows_past_the_first_chunk() {
    let v = 5000;
    let mut r = Rng::new(8);
    let logits = random_logits(&mut r, v, 0.5);
    let params = SamplingParams { top_p: 0.9, seed: Some(5), ..Default::default() };
    let allowed = reference_allowed(&logits, 1.0, 0, 0.9, 0.0, 1e-5);
    let kept = allowed.iter().filter(|&&a| a).count();
    assert!(kept > 512, "the nucleus should need several chunks, has {kept}");
    let ids = draw(&params, &logits, 300);
    assert!(ids.iter().all(|&i| allowed[i as usize]));
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert!(distinct.len() > 200);
}

#[test]
fn min_new_tokens_masks_the_end_id() {
    let params = SamplingParams { temperature: 0.0, min_new_tokens: 3, ..Default::default() };
    let mut s = Sampler::new(&params, &[], &[2]);
    let logits = vec![0.5, 1.0, 3.0, -1.0];
    let mut generated = Vec::new();
    for _ in 0..4 {
        let t = s.sample(&mut logits.clone(), &generated).id;
        s.accept(t);
        generated.push(t);
    }
    assert_eq!(generated, vec![1, 1, 1, 2]);
    // ignore_eos: the end id is an ordinary token and is not masked.
    let params = SamplingParams { ignore_eos: true, ..params };
    assert_eq!(Sampler::new(&params, &[], &[2]).sample(&mut logits.clone(), &[]).id, 2);
    // An end_id override replaces the model's.
    let params = SamplingParams { ignore_eos: false, end_id: Some(1), ..params };
    assert_eq!(Sampler::new(&params, &[], &[2]).sample(&mut logits.clone(), &[]).id, 2);
}

#[test]
fn penalties_change_the_choice_and_count_each_token_once() {
    let params = SamplingParams { temperature: 0.0, frequency_penalty: 1.0, ..Default::default() };
    let base = vec![3.0f32, 2.5, 0.0];
    // accept + generated: token 0 counted once → 3.0 - 1.0 = 2.0 < 2.5.
    let mut s = Sampler::new(&params, &[], &[]);
    s.accept(0);
    let mut l = base.clone();
    assert_eq!(s.sample(&mut l, &[0]).id, 1);
    assert_eq!(l, vec![2.0, 2.5, 0.0]);
    // Only generated: the same.
    let mut s = Sampler::new(&params, &[], &[]);
    assert_eq!(s.sample(&mut base.clone(), &[0]).id, 1);
    // Repetition penalty sees the prompt.
    let params = SamplingParams { temperature: 0.0, repetition_penalty: 1.5, ..Default::default() };
    let mut s = Sampler::new(&params, &[0], &[]);
    assert_eq!(s.sample(&mut base.clone(), &[]).id, 1);
}

#[test]
fn fully_masked_logits_give_minus_infinity() {
    let params = SamplingParams { bad_words: vec![vec![0], vec![1]], ..Default::default() };
    let got = Sampler::new(&params, &[], &[]).sample(&mut [1.0, 2.0], &[]);
    assert_eq!(got.logprob, f32::NEG_INFINITY);
    let params = SamplingParams { temperature: 0.0, ..params };
    let got = Sampler::new(&params, &[], &[]).sample(&mut [1.0, 2.0], &[]);
    assert_eq!((got.id, got.logprob), (0, f32::NEG_INFINITY));
}

#[test]
fn nan_logits_are_never_chosen() {
    let logits = vec![f32::NAN, 0.0, f32::NAN, 1.0];
    for t in [0.0, 1.0] {
        let params = SamplingParams { temperature: t, seed: Some(1), ..Default::default() };
        assert!(draw(&params, &logits, 50).iter().all(|&i| i == 1 || i == 3));
    }
}

#[test]
fn rank_keys_order_by_logit_then_id() {
    let xs = [3.0f32, -0.0, 0.0, -1.5, f32::NEG_INFINITY, 3.0, 1e-30, -1e-30, f32::MAX, f32::MIN];
    let mut keys: Vec<u64> = xs.iter().enumerate().map(|(i, &x)| rank_key(x, i as u32)).collect();
    keys.sort_unstable();
    let got: Vec<u32> = keys.iter().map(|&k| key_id(k)).collect();
    let mut want: Vec<u32> = (0..xs.len() as u32).collect();
    want.sort_by(|&a, &b| xs[b as usize].partial_cmp(&xs[a as usize]).unwrap().then(a.cmp(&b)));
    assert_eq!(got, want);
}

#[test]
fn argmax_logsumexp_matches_reference() {
    let mut r = Rng::new(77);
    let logits = random_logits(&mut r, 1000, 30.0);
    let (id, m, lse) = argmax_logsumexp(&logits);
    let ids = sorted_ids(&logits);
    assert_eq!(id as usize, ids[0]);
    assert_eq!(m, logits[ids[0]]);
    let want: f64 = logits.iter().map(|&x| (f64::from(x) - f64::from(m)).exp()).sum::<f64>().ln();
    assert!((lse - want).abs() < 1e-6);
}

proptest! {
    /// A row reduced to its top 32 (as the GPU does) samples exactly as the whole row
    /// whenever `want` asks for the reduced form: same token (same seed), same top-n ids,
    /// log-probs within rounding.
    #[test]
    fn reduced_rows_sample_like_whole_rows(
        seed in any::<u64>(), v in 1usize..400, t in prop_oneof![Just(0.0f32), 0.2f32..3.0],
        top_k in 0i64..40, top_p in prop_oneof![Just(1.0f32), 0.05f32..1.0], min_p in prop_oneof![Just(0.0f32), 0.0f32..0.5],
        logprobs in prop_oneof![Just(None), (0usize..8).prop_map(Some)], masked in 0usize..20, ties in 0usize..6,
    ) {
        let mut r = Rng::new(seed);
        // Coarse values so that ties happen; some -inf (masked) entries.
        let mut row: Vec<f32> = (0..v).map(|_| (r.uniform(-6.0, 6.0) * 4.0).round() / 4.0).collect();
        for _ in 0..masked.min(v - 1) {
            row[r.below(v as u64) as usize] = f32::NEG_INFINITY;
        }
        for _ in 0..ties {
            let (a, b) = (r.below(v as u64) as usize, r.below(v as u64) as usize);
            row[a] = row[b];
        }
        let params = SamplingParams { temperature: t, top_k, top_p, min_p, logprobs, seed: Some(seed), ..Default::default() };
        let mut whole = Sampler::new(&params, &[], &[]);
        let mut reduced = whole.clone();
        match whole.want(&[], 32) {
            LogitsWant::Full => prop_assert!(t > 0.0 && !(1..=32).contains(&top_k)),
            LogitsWant::Top { inv_temperature } => {
                for _ in 0..4 {
                    let a = whole.sample(&mut row.clone(), &[]);
                    let b = reduced.sample_top(&TopLogits::of_row(&row, 32, inv_temperature));
                    prop_assert_eq!(a.id, b.id);
                    prop_assert!(a.logprob == b.logprob || (a.logprob - b.logprob).abs() <= 1e-5 * a.logprob.abs().max(1.0), "{} vs {}", a.logprob, b.logprob);
                    prop_assert_eq!(a.top.iter().map(|x| x.id).collect::<Vec<_>>(), b.top.iter().map(|x| x.id).collect::<Vec<_>>());
                }
            }
        }
    }
}

#[test]
fn processors_force_whole_rows() {
    let base = SamplingParams { temperature: 0.0, ..Default::default() };
    for p in [
        SamplingParams { repetition_penalty: 1.1, ..base.clone() },
        SamplingParams { presence_penalty: 0.5, ..base.clone() },
        SamplingParams { bad_words: vec![vec![3]], ..base.clone() },
        SamplingParams { logprobs: Some(20), ..base.clone() },
    ] {
        assert_eq!(Sampler::new(&p, &[1, 2], &[0]).want(&[], 16), LogitsWant::Full, "{p:?}");
    }
    let min = SamplingParams { min_new_tokens: 2, ..base.clone() };
    let s = Sampler::new(&min, &[1], &[0]);
    assert_eq!(s.want(&[5], 32), LogitsWant::Full);
    assert_eq!(s.want(&[5, 6], 32), LogitsWant::Top { inv_temperature: 1.0 });
}
