//! The statistics of sampled outputs (muscle.md section 8): per instance, K scored draws of each
//! model; the flip rates users meet in expectation when each gets one draw of each model, and
//! which instances changed beyond chance (Fisher's exact test on k of K correct for 0/1 scores,
//! Welch's t on the scores otherwise; Benjamini-Hochberg across instances).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use utoipa::ToSchema;

use super::fdr::benjamini_hochberg;
use super::fisher::fisher_exact;

/// Below this q-value an instance changed reliably.
pub const INSTANCE_FDR: f64 = 0.05;

/// Whether an instance's sampled scores changed beyond chance, and which way.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Verdict {
    Worse,
    Better,
    None,
}

impl Verdict {
    /// The snake_case name used in JSON, query strings and the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One instance's test: its p-value, q-value across the instances, and verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReliableChange {
    pub p_value: f64,
    pub q_value: f64,
    pub verdict: Verdict,
}

/// Welch's two-sided t-test of equal means (scipy.stats.ttest_ind(equal_var=False)). Where both
/// samples are constant the means are equal (p = 1) or differ without doubt (p = 0).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> f64 {
    let (mean_a, var_a) = mean_and_variance(a);
    let (mean_b, var_b) = mean_and_variance(b);
    let (se_a, se_b) = (var_a / a.len() as f64, var_b / b.len() as f64);
    let se = se_a + se_b;
    if se == 0.0 || !se.is_finite() {
        return if mean_a == mean_b { 1.0 } else { 0.0 };
    }
    let t = (mean_a - mean_b) / se.sqrt();
    let dof =
        se * se / (se_a * se_a / (a.len() as f64 - 1.0) + se_b * se_b / (b.len() as f64 - 1.0));
    let student = StudentsT::new(0.0, 1.0, dof).expect("degrees of freedom are positive");
    (2.0 * student.cdf(-t.abs())).min(1.0)
}

/// Mean and sample variance (n - 1 in the denominator; 0 for one value).
fn mean_and_variance(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let variance = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance)
}

/// The shares of (old draw, new draw) pairs that are a negative flip (new - old < -tolerance)
/// and a positive one (> tolerance): a user's chance of meeting each on this instance. With 0/1
/// scores, p(old) (1 - p(new)) and (1 - p(old)) p(new).
pub fn flip_shares(old: &[f64], new: &[f64], tolerance: f64) -> (f64, f64) {
    let pairs = (old.len() * new.len()) as f64;
    let (mut negative, mut positive) = (0usize, 0usize);
    for o in old {
        for n in new {
            let d = n - o;
            if d < -tolerance {
                negative += 1;
            } else if d > tolerance {
                positive += 1;
            }
        }
    }
    (negative as f64 / pairs, positive as f64 / pairs)
}

/// Each instance's reliable change: `(old scores, new scores)` of its draws.
pub fn reliable_changes(instances: &[(Vec<f64>, Vec<f64>)]) -> Vec<ReliableChange> {
    let p_values: Vec<f64> = instances
        .iter()
        .map(|(old, new)| instance_p_value(old, new))
        .collect();
    let q_values = benjamini_hochberg(&p_values);
    instances
        .iter()
        .zip(p_values.iter().zip(q_values))
        .map(|((old, new), (&p_value, q_value))| {
            let change = mean(new) - mean(old);
            let verdict = if q_value >= INSTANCE_FDR || change == 0.0 {
                Verdict::None
            } else if change < 0.0 {
                Verdict::Worse
            } else {
                Verdict::Better
            };
            ReliableChange {
                p_value,
                q_value,
                verdict,
            }
        })
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Fisher's exact test on k of K correct where every score is 0 or 1, Welch's t otherwise.
fn instance_p_value(old: &[f64], new: &[f64]) -> f64 {
    let binary = old.iter().chain(new).all(|&s| s == 0.0 || s == 1.0);
    if !binary {
        return welch_t_test(old, new);
    }
    let correct = |xs: &[f64]| xs.iter().filter(|&&s| s == 1.0).count() as u64;
    let (k_old, k_new) = (correct(old), correct(new));
    fisher_exact(
        k_old,
        old.len() as u64 - k_old,
        k_new,
        new.len() as u64 - k_new,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_flip_shares_are_the_products_of_the_rates() {
        let old = [1.0, 1.0, 1.0, 0.0];
        let new = [1.0, 0.0, 0.0, 0.0, 0.0];
        let (negative, positive) = flip_shares(&old, &new, 0.0);
        assert!((negative - 0.75 * 0.8).abs() < 1e-12);
        assert!((positive - 0.25 * 0.2).abs() < 1e-12);
    }

    #[test]
    fn only_a_change_beyond_chance_gets_a_verdict() {
        let ten = |k: usize| -> Vec<f64> { (0..10).map(|i| f64::from(u8::from(i < k))).collect() };
        let changes = reliable_changes(&[
            (ten(10), ten(0)),
            (ten(0), ten(10)),
            (ten(6), ten(4)),
            (ten(5), ten(5)),
        ]);
        let verdicts: Vec<Verdict> = changes.iter().map(|c| c.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Worse,
                Verdict::Better,
                Verdict::None,
                Verdict::None
            ]
        );
        assert!(changes[0].q_value < 1e-3 && changes[2].q_value > 0.05);
    }

    #[test]
    fn constant_scores_are_equal_or_plainly_different() {
        assert_eq!(welch_t_test(&[0.5, 0.5], &[0.5, 0.5]), 1.0);
        assert_eq!(welch_t_test(&[0.5, 0.5], &[0.2, 0.2]), 0.0);
    }
}
