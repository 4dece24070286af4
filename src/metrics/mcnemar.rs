//! McNemar's exact test on the discordant pairs (negative vs positive flips).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Exact McNemar test of "old and new are equally accurate".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct McNemar {
    /// Two-sided p = min(1, 2 * P[X <= min(NF, PF)]), X ~ Binomial(NF + PF, 1/2); 1 when no pairs.
    /// Below about 1e-308 it underflows to 0.
    pub p_value: f64,
    /// NF + PF.
    pub discordant: u64,
}

/// Exact two-sided McNemar test for `negative_flips` vs `positive_flips`.
pub fn mcnemar_exact(negative_flips: u64, positive_flips: u64) -> McNemar {
    let discordant = negative_flips + positive_flips;
    let k = negative_flips.min(positive_flips);
    // With |NF - PF| <= 1, P[X <= min] >= 1/2, so the capped p is exactly 1.
    let p_value = if negative_flips.abs_diff(positive_flips) <= 1 {
        1.0
    } else {
        (2.0 * lower_tail_half(k, discordant)).min(1.0)
    };
    McNemar {
        p_value,
        discordant,
    }
}

/// P[X <= k] for X ~ Binomial(n, 1/2): (C(n, 0) + ... + C(n, k)) * 2^-n.
///
/// The binomial coefficients are built by the exact integer recurrence while they fit in
/// 53 bits (so small cases are exact) and are rescaled by powers of two, which loses nothing,
/// so large n neither overflows nor underflows before the end.
fn lower_tail_half(k: u64, n: u64) -> f64 {
    const STEP: i32 = 900;
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    let mut exponent = -(n as f64);
    for i in 1..=k {
        term = term * (n - i + 1) as f64 / i as f64;
        sum += term;
        if sum > 1e250 {
            let down = 0.5f64.powi(STEP);
            term *= down;
            sum *= down;
            exponent += f64::from(STEP);
        }
    }
    while exponent < -f64::from(STEP) {
        sum *= 0.5f64.powi(STEP);
        exponent += f64::from(STEP);
    }
    sum * 2f64.powi(exponent as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_discordant_pairs_gives_one() {
        assert_eq!(
            mcnemar_exact(0, 0),
            McNemar {
                p_value: 1.0,
                discordant: 0
            }
        );
    }

    #[test]
    fn hand_computed_values() {
        // 1 vs 0: 2 * P[X <= 0], X ~ Bin(1, 1/2) = 2 * 0.5 = 1.
        assert_eq!(mcnemar_exact(1, 0).p_value, 1.0);
        // 4 vs 1: 2 * (1 + 5) / 32 = 0.375.
        assert_eq!(mcnemar_exact(4, 1).p_value, 0.375);
        // 10 vs 2: 2 * (1 + 12 + 66) / 4096.
        assert_eq!(mcnemar_exact(2, 10).p_value, 158.0 / 4096.0);
        // Equal or adjacent counts are capped at 1.
        assert_eq!(mcnemar_exact(7, 7).p_value, 1.0);
        assert_eq!(mcnemar_exact(116, 115).p_value, 1.0);
        // 6 vs 0: 2 / 64.
        assert_eq!(mcnemar_exact(6, 0).p_value, 2.0 / 64.0);
    }

    #[test]
    fn lower_tail_small_cases_are_exact() {
        assert_eq!(lower_tail_half(0, 1), 0.5);
        assert_eq!(lower_tail_half(2, 12), 79.0 / 4096.0);
        assert_eq!(lower_tail_half(0, 1074), f64::from_bits(1));
        assert_eq!(lower_tail_half(0, 1100), 0.0);
    }

    #[test]
    fn extreme_tails_stay_finite() {
        let p = mcnemar_exact(0, 200).p_value;
        assert!((p - 2.0 * 0.5f64.powi(200)).abs() <= 1e-12 * p);
        assert!(mcnemar_exact(0, 5000).p_value >= 0.0);
    }

    #[test]
    fn symmetric_in_its_arguments() {
        assert_eq!(mcnemar_exact(30, 12), mcnemar_exact(12, 30));
    }
}
