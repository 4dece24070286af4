//! How large a regression an evaluation could have seen (muscle.md section 8): a gate that passes
//! on 200 instances says little about a 3-point rise in negative flips. For McNemar's test of
//! the new model against the old (two-sided, alpha 0.05), with the positive flip rate held at
//! the one observed, the smallest nfr it finds with 80% power on this many instances. Normal
//! approximation with the variance under the alternative (Connor 1987).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use utoipa::ToSchema;

pub const POWER_ALPHA: f64 = 0.05;
pub const POWER_TARGET: f64 = 0.8;

/// The report's `power` object.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Power {
    /// The test's two-sided significance level (0.05).
    pub alpha: f64,
    /// The chance of finding a regression it must reach (0.8).
    pub power: f64,
    /// The smallest negative flip rate McNemar's test finds at that power with this many
    /// instances and the observed positive flip rate; null when no rate would be found (too few
    /// instances) or there are none.
    pub nfr_detectable: Option<f64>,
}

impl Default for Power {
    fn default() -> Self {
        Power {
            alpha: POWER_ALPHA,
            power: POWER_TARGET,
            nfr_detectable: None,
        }
    }
}

impl Power {
    pub fn of(n: u64, positive_flips: u64) -> Self {
        let nfr_detectable = (n > 0)
            .then(|| {
                detectable_nfr(
                    n,
                    positive_flips as f64 / n as f64,
                    POWER_ALPHA,
                    POWER_TARGET,
                )
            })
            .flatten();
        Power {
            nfr_detectable,
            ..Power::default()
        }
    }
}

/// The chance that McNemar's test at `alpha` finds the new model worse on `n` instances when
/// the true rates are `nfr` and `pfr` (nfr > pfr).
pub fn mcnemar_power(n: u64, nfr: f64, pfr: f64, alpha: f64) -> f64 {
    let normal = Normal::standard();
    let z = normal.inverse_cdf(1.0 - alpha / 2.0);
    let discordance = nfr + pfr;
    let delta = nfr - pfr;
    if discordance <= 0.0 || delta <= 0.0 {
        return 0.0;
    }
    let shift = delta * (n as f64).sqrt() - z * discordance.sqrt();
    let spread = (discordance - delta * delta).max(0.0).sqrt();
    if spread == 0.0 {
        return if shift > 0.0 { 1.0 } else { 0.0 };
    }
    normal.cdf(shift / spread)
}

/// The smallest nfr in (pfr, 1 - pfr] at which [`mcnemar_power`] reaches `target`; None when
/// even the largest does not.
pub fn detectable_nfr(n: u64, pfr: f64, alpha: f64, target: f64) -> Option<f64> {
    let (mut low, mut high) = (pfr, 1.0 - pfr);
    if high <= low || mcnemar_power(n, high, pfr, alpha) < target {
        return None;
    }
    // The power rises with nfr: bisect to well below any rate a report prints.
    for _ in 0..100 {
        let middle = (low + high) / 2.0;
        if mcnemar_power(n, middle, pfr, alpha) >= target {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_instances_see_smaller_regressions() {
        let small = detectable_nfr(200, 0.02, 0.05, 0.8).unwrap();
        let large = detectable_nfr(20_000, 0.02, 0.05, 0.8).unwrap();
        assert!(small > 0.05 && small < 0.1, "{small}");
        assert!(large > 0.02 && large < 0.03, "{large}");
        let power = mcnemar_power(200, small, 0.02, 0.05);
        assert!((power - 0.8).abs() < 1e-9, "{power}");
    }

    #[test]
    fn nothing_is_detectable_on_nothing() {
        assert_eq!(Power::of(0, 0).nfr_detectable, None);
        assert_eq!(detectable_nfr(2, 0.5, 0.05, 0.8), None);
    }
}
