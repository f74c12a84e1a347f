//! The per-request random generator: ChaCha12 (`rand_chacha`) seeded from the request's
//! `u64` seed, with one stream per returned sequence.
//!
//! The same seed (and stream) gives the same draws on every platform and every run, so a
//! seeded request is reproducible whatever else the engine batches with it. Without a seed
//! the generator is seeded from the process's hash randomness, the clock and a counter.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// One request's (or one of its sequences') generator.
#[derive(Clone, Debug)]
pub struct RequestRng(ChaCha12Rng);

impl RequestRng {
    /// `seed` expanded by ChaCha's `seed_from_u64`; `stream` selects an independent stream
    /// of the same key (sequence `i` of an `n > 1` request uses stream `i`).
    pub fn new(seed: Option<u64>, stream: u64) -> RequestRng {
        let mut rng = ChaCha12Rng::seed_from_u64(seed.unwrap_or_else(fresh_seed));
        rng.set_stream(stream);
        RequestRng(rng)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    /// The next raw 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.random::<u64>()
    }
}

/// An unpredictable seed without OS randomness: std's per-process random hash keys, the
/// clock and a process-wide counter (so two requests in the same nanosecond differ).
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_streams_differ() {
        let draws = |seed, stream| {
            let mut r = RequestRng::new(Some(seed), stream);
            (0..8).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(42, 0), draws(42, 0));
        assert_ne!(draws(42, 0), draws(43, 0));
        assert_ne!(draws(42, 0), draws(42, 1));
    }

    #[test]
    fn unseeded_generators_differ() {
        let mut a = RequestRng::new(None, 0);
        let mut b = RequestRng::new(None, 0);
        assert_ne!((a.next_u64(), a.next_u64()), (b.next_u64(), b.next_u64()));
    }

    #[test]
    fn uniform_is_in_unit_interval_and_spread() {
        let mut r = RequestRng::new(Some(1), 0);
        let xs: Vec<f64> = (0..10_000).map(|_| r.uniform()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
