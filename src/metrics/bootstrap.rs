//! Paired bootstrap percentile interval for the difference in mean score (new - old).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::intervals::Interval;

/// 95% percentile interval of mean(new - old) over `resamples` resamples of the instances,
/// drawn with `ChaCha8Rng::seed_from_u64(seed)`, so a fixed seed gives a fixed interval.
///
/// `diffs[i]` is new score - old score of instance i. Percentiles interpolate linearly between
/// order statistics (NumPy's default). `None` when there are no instances, no resamples, or a
/// non-finite difference.
pub fn paired_bootstrap_delta(diffs: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    if diffs.is_empty() || resamples == 0 || diffs.iter().any(|d| !d.is_finite()) {
        return None;
    }
    let n = diffs.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let sum: f64 = (0..n).map(|_| diffs[rng.random_range(0..n)]).sum();
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    Some(Interval {
        lower: percentile(&means, 0.025),
        upper: percentile(&means, 0.975),
    })
}

/// Linear-interpolation quantile `q` in [0, 1] of sorted, non-empty `sorted`.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert!((percentile(&v, 0.025) - 1.1).abs() < 1e-12);
        assert!((percentile(&v, 0.975) - 4.9).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.975), 7.0);
    }

    #[test]
    fn constant_differences_give_a_point_interval() {
        let iv = paired_bootstrap_delta(&[0.5; 17], 200, 3).unwrap();
        assert_eq!(
            iv,
            Interval {
                lower: 0.5,
                upper: 0.5
            }
        );
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(paired_bootstrap_delta(&[], 100, 0), None);
        assert_eq!(paired_bootstrap_delta(&[1.0], 0, 0), None);
        assert_eq!(paired_bootstrap_delta(&[1.0, f64::NAN], 10, 0), None);
    }

    #[test]
    fn deterministic_per_seed_and_brackets_the_mean() {
        let diffs: Vec<f64> = (0..200)
            .map(|i| [-1.0, 0.0, 0.0, 1.0, 1.0][i % 5])
            .collect();
        let a = paired_bootstrap_delta(&diffs, 500, 42).unwrap();
        let b = paired_bootstrap_delta(&diffs, 500, 42).unwrap();
        let c = paired_bootstrap_delta(&diffs, 500, 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.lower < 0.2 && 0.2 < a.upper, "{a:?}");
        // Standard error is about sqrt(0.56 / 200) = 0.053, so the interval is about +-0.10.
        assert!(
            a.upper - a.lower > 0.12 && a.upper - a.lower < 0.30,
            "{a:?}"
        );
    }
}
