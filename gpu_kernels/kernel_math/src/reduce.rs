//! Mergeable running statistics: the per-thread state of row reductions, combined across
//! lanes and warps by [`Welford::merge`] and [`OnlineSoftmax::merge`] in any order.

use crate::Transcendentals;

/// Running count, mean and sum of squared deviations (Welford / Chan et al.).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Welford {
    pub count: f32,
    pub mean: f32,
    pub m2: f32,
}

impl Welford {
    /// Adds one observation.
    #[inline(always)]
    pub fn push(&mut self, x: f32) {
        self.count += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.count;
        self.m2 += delta * (x - self.mean);
    }

    /// Combines two partial states (parallel algorithm of Chan et al.).
    #[inline(always)]
    pub fn merge(self, other: Welford) -> Welford {
        let count = self.count + other.count;
        if count == 0.0 {
            return Welford::default();
        }
        let delta = other.mean - self.mean;
        let w = other.count / count;
        Welford {
            count,
            mean: self.mean + delta * w,
            m2: self.m2 + other.m2 + delta * delta * self.count * w,
        }
    }

    /// Population variance (`m2 / count`), 0 for an empty state.
    #[inline(always)]
    pub fn variance(&self) -> f32 {
        if self.count > 0.0 { self.m2 / self.count } else { 0.0 }
    }
}

/// Running maximum and sum of `exp(x - max)`: the numerically safe softmax denominator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OnlineSoftmax {
    pub max: f32,
    pub sum: f32,
}

impl Default for OnlineSoftmax {
    fn default() -> Self {
        OnlineSoftmax { max: f32::NEG_INFINITY, sum: 0.0 }
    }
}

impl OnlineSoftmax {
    /// Adds one logit.
    #[inline(always)]
    pub fn push<T: Transcendentals>(&mut self, x: f32) {
        if x > self.max {
            self.sum = self.sum * T::exp(self.max - x) + 1.0;
            self.max = x;
        } else {
            self.sum += T::exp(x - self.max);
        }
    }

    /// Combines two partial states; an empty state (max = -inf) is the identity.
    #[inline(always)]
    pub fn merge<T: Transcendentals>(self, other: OnlineSoftmax) -> OnlineSoftmax {
        if other.max == f32::NEG_INFINITY {
            return self;
        }
        if self.max == f32::NEG_INFINITY {
            return other;
        }
        let max = if self.max > other.max { self.max } else { other.max };
        OnlineSoftmax {
            max,
            sum: self.sum * T::exp(self.max - max) + other.sum * T::exp(other.max - max),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::host::Std;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn split_merge_welford(xs: &[f32], cut: usize) -> Welford {
        let mut a = Welford::default();
        let mut b = Welford::default();
        xs[..cut].iter().for_each(|&x| a.push(x));
        xs[cut..].iter().for_each(|&x| b.push(x));
        a.merge(b)
    }

    proptest! {
        #[test]
        fn welford_matches_two_pass(
            xs in proptest::collection::vec(-1e3f32..1e3, 1..300),
            offset in -1e4f32..1e4,
            cut_frac in 0.0f64..1.0,
        ) {
            let xs: Vec<f32> = xs.iter().map(|x| x + offset).collect();
            let n = xs.len() as f64;
            let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            let cut = ((xs.len() as f64) * cut_frac) as usize;
            let w = split_merge_welford(&xs, cut);
            prop_assert!((w.mean as f64 - mean).abs() <= 1e-5 * mean.abs().max(1.0));
            prop_assert!((w.variance() as f64 - var).abs() <= 1e-3 * var.max(1e-2),
                "var {} vs {}", w.variance(), var);
        }

        #[test]
        fn online_softmax_matches_direct(
            xs in proptest::collection::vec(-80f32..80.0, 1..300),
            cut_frac in 0.0f64..1.0,
        ) {
            let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = xs.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let cut = ((xs.len() as f64) * cut_frac) as usize;
            let mut a = OnlineSoftmax::default();
            let mut b = OnlineSoftmax::default();
            xs[..cut].iter().for_each(|&x| a.push::<Std>(x));
            xs[cut..].iter().for_each(|&x| b.push::<Std>(x));
            let m = a.merge::<Std>(b);
            prop_assert_eq!(m.max, max);
            prop_assert!((m.sum as f64 - sum).abs() <= 1e-5 * sum);
        }
    }

    #[test]
    fn empty_states_are_identities() {
        let mut a = OnlineSoftmax::default();
        a.push::<Std>(3.0);
        assert_eq!(a.merge::<Std>(OnlineSoftmax::default()), a);
        assert_eq!(OnlineSoftmax::default().merge::<Std>(a), a);
        let mut w = Welford::default();
        w.push(2.0);
        assert_eq!(w.merge(Welford::default()), w);
        assert_eq!(Welford::default().merge(w), w);
    }
}
