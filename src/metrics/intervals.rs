//! Wilson score intervals for rates, and the report's `intervals` object.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use utoipa::ToSchema;

/// A two-sided 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// 95% intervals: Wilson score for every rate with a count over a denominator, paired
/// bootstrap percentile for `delta_accuracy`. Null where the rate is null or not a proportion
/// (accuracies of continuous generation scores).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Intervals {
    pub nfr: Option<Interval>,
    pub pfr: Option<Interval>,
    pub nfi: Option<Interval>,
    pub pfi: Option<Interval>,
    pub btc: Option<Interval>,
    pub bec: Option<Interval>,
    pub nfr_mc: Option<Interval>,
    pub agreement: Option<Interval>,
    pub acc_old: Option<Interval>,
    pub acc_new: Option<Interval>,
    pub delta_accuracy: Option<Interval>,
}

impl Intervals {
    /// Names usable as `intervals.<name>.lower|upper` in a gate.
    pub const NAMES: [&'static str; 11] = [
        "nfr",
        "pfr",
        "nfi",
        "pfi",
        "btc",
        "bec",
        "nfr_mc",
        "agreement",
        "acc_old",
        "acc_new",
        "delta_accuracy",
    ];

    /// The interval called `name`, if that name exists and the interval is defined.
    pub fn get(&self, name: &str) -> Option<Interval> {
        match name {
            "nfr" => self.nfr,
            "pfr" => self.pfr,
            "nfi" => self.nfi,
            "pfi" => self.pfi,
            "btc" => self.btc,
            "bec" => self.bec,
            "nfr_mc" => self.nfr_mc,
            "agreement" => self.agreement,
            "acc_old" => self.acc_old,
            "acc_new" => self.acc_new,
            "delta_accuracy" => self.delta_accuracy,
            _ => None,
        }
    }
}

/// Two-sided standard normal quantile for 95% coverage (z_{0.975}).
pub fn z_95() -> f64 {
    Normal::standard().inverse_cdf(0.975)
}

/// Wilson score 95% interval for `k` successes out of `n`; `None` when `n == 0`.
///
/// Same formula as statsmodels' `proportion_confint(method="wilson")`, clipped to [0, 1];
/// the bound at k = 0 (lower) or k = n (upper) is exact.
pub fn wilson(k: u64, n: u64) -> Option<Interval> {
    wilson_z(k, n, z_95())
}

/// Wilson score interval for a given normal quantile `z`.
pub fn wilson_z(k: u64, n: u64, z: f64) -> Option<Interval> {
    if n == 0 || k > n {
        return None;
    }
    let nf = n as f64;
    let p = k as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    let lower = if k == 0 {
        0.0
    } else {
        (center - half).clamp(0.0, 1.0)
    };
    let upper = if k == n {
        1.0
    } else {
        (center + half).clamp(0.0, 1.0)
    };
    Some(Interval { lower, upper })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_matches_known_quantile() {
        assert!((z_95() - 1.959_963_984_540_054).abs() < 1e-12);
    }

    #[test]
    fn wilson_hand_computed() {
        // k = 5, n = 10: center 0.5, half = z*sqrt(0.025 + z^2/400)/(1 + z^2/10).
        let iv = wilson(5, 10).unwrap();
        assert!((iv.lower - 0.236_593_090_512_563_94).abs() < 1e-9, "{iv:?}");
        assert!((iv.upper - 0.763_406_909_487_436_1).abs() < 1e-9, "{iv:?}");
    }

    #[test]
    fn wilson_edges() {
        assert_eq!(wilson(0, 0), None);
        assert_eq!(wilson(3, 2), None);
        let zero = wilson(0, 20).unwrap();
        assert_eq!(zero.lower, 0.0);
        assert!(zero.upper > 0.0 && zero.upper < 0.2);
        let all = wilson(20, 20).unwrap();
        assert_eq!(all.upper, 1.0);
        assert!(all.lower > 0.8 && all.lower < 1.0);
        let one = wilson(1, 1).unwrap();
        assert_eq!(one.upper, 1.0);
        assert!(one.lower > 0.0);
    }

    #[test]
    fn intervals_get_covers_every_name() {
        let iv = Interval {
            lower: 0.1,
            upper: 0.2,
        };
        let all = Intervals {
            nfr: Some(iv),
            pfr: Some(iv),
            nfi: Some(iv),
            pfi: Some(iv),
            btc: Some(iv),
            bec: Some(iv),
            nfr_mc: Some(iv),
            agreement: Some(iv),
            acc_old: Some(iv),
            acc_new: Some(iv),
            delta_accuracy: Some(iv),
        };
        for name in Intervals::NAMES {
            assert_eq!(all.get(name), Some(iv), "{name}");
        }
        assert_eq!(all.get("nope"), None);
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(json.as_object().unwrap().len(), Intervals::NAMES.len());
    }
}
