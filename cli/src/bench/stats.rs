//! Percentiles and the summary rows the reports print.

use serde::Serialize;

/// The `p`-th percentile (0..=100) of `sorted` (ascending), interpolating linearly between
/// the two nearest ranks (numpy's default, as vLLM's and TensorRT-LLM's benchmarks report).
/// `None` when `sorted` is empty or `p` is out of range.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Mean, median, p90 and p99 of a set of samples (all 0 when there are none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// Number of samples.
    pub count: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let p = |q| percentile(&v, q).unwrap_or(0.0);
        Summary { mean, p50: p(50.0), p90: p(90.0), p99: p(99.0), count: v.len() }
    }
}

/// Sample mean and (population) standard deviation.
pub fn mean_stdev(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        // numpy.percentile([1,2,3,4], 90) = 3.7
        assert!((percentile(&v, 90.0).unwrap() - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v, 101.0), None);
        assert_eq!(percentile(&v, -1.0), None);
    }

    #[test]
    fn summary_is_ordered_and_ignores_order_of_input() {
        let v: Vec<f64> = (0..1000).rev().map(|i| i as f64).collect();
        let s = Summary::of(&v);
        assert_eq!(s.count, 1000);
        assert!((s.mean - 499.5).abs() < 1e-9);
        assert!((s.p50 - 499.5).abs() < 1e-9);
        assert!((s.p90 - 899.1).abs() < 1e-9);
        assert!((s.p99 - 989.01).abs() < 1e-9);
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99);
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(Summary::of(&[f64::NAN, 2.0]).count, 1);
    }

    #[test]
    fn mean_and_stdev() {
        let (m, s) = mean_stdev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert_eq!(s, 2.0);
    }
}
