//! The report's `sampled` section: what users meet when each gets one draw of each model
//! (expected flip rates), which instances changed beyond chance, and how the greedy comparison
//! of the same job fares against those verdicts (muscle.md section 8).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bootstrap::paired_bootstrap_delta;
use super::intervals::Interval;
use super::outcome::{Flip, InstanceOutcome, TaskKind, classify};
use super::sampled::{ReliableChange, Verdict, flip_shares, reliable_changes};

/// How the outputs were drawn (the task's `sampling`, less its seed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SamplingSettings {
    pub samples: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<u32>,
}

/// Bootstrap 95% intervals of the expected flip rates, over instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SampledIntervals {
    pub expected_nfr: Option<Interval>,
    pub expected_pfr: Option<Interval>,
}

/// The report's `sampled` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SampledReport {
    /// K, draws per instance and side.
    pub samples: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<u32>,
    /// Instances with draws on both sides.
    pub n: u64,
    /// Mean over instances of the share of (old draw, new draw) pairs that are a negative flip:
    /// with 0/1 scores, mean of p(old) (1 - p(new)). Null when n is 0.
    pub expected_nfr: Option<f64>,
    /// The same for positive flips.
    pub expected_pfr: Option<f64>,
    pub intervals: SampledIntervals,
    /// Instances whose draws got reliably worse (q < 0.05, Benjamini-Hochberg across instances).
    pub reliably_worse: u64,
    pub reliably_better: u64,
    pub no_reliable_change: u64,
    /// Greedy flips (negative or positive) among these instances.
    pub greedy_flips: u64,
    /// Greedy flips whose instance changed reliably in the same direction.
    pub greedy_flips_reliable: u64,
    /// Reliable changes the greedy comparison did not flag as a flip in their direction.
    pub reliable_missed_by_greedy: u64,
}

impl SampledReport {
    /// Names a gate may use as `sampled.NAME`.
    pub const NAMES: &'static [&'static str] = &[
        "expected_nfr",
        "expected_pfr",
        "reliably_worse",
        "reliably_better",
        "no_reliable_change",
        "greedy_flips_reliable",
        "reliable_missed_by_greedy",
    ];

    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "expected_nfr" => self.expected_nfr,
            "expected_pfr" => self.expected_pfr,
            "reliably_worse" => Some(self.reliably_worse as f64),
            "reliably_better" => Some(self.reliably_better as f64),
            "no_reliable_change" => Some(self.no_reliable_change as f64),
            "greedy_flips_reliable" => Some(self.greedy_flips_reliable as f64),
            "reliable_missed_by_greedy" => Some(self.reliable_missed_by_greedy as f64),
            _ => None,
        }
    }
}

/// The section and each instance's reliable change (None where an instance has no draws on a
/// side), in the order of `instances`.
pub fn compute_sampled(
    kind: TaskKind,
    instances: &[InstanceOutcome],
    settings: SamplingSettings,
    bootstrap_resamples: usize,
    seed: u64,
) -> (SampledReport, Vec<Option<ReliableChange>>) {
    let tolerance = match kind {
        TaskKind::Generation { tolerance } => tolerance,
        TaskKind::MultipleChoice => 0.0,
    };
    let has_draws = |i: &InstanceOutcome| !i.old.samples.is_empty() && !i.new.samples.is_empty();
    let drawn: Vec<&InstanceOutcome> = instances.iter().filter(|i| has_draws(i)).collect();
    let pairs: Vec<(Vec<f64>, Vec<f64>)> = drawn
        .iter()
        .map(|i| (i.old.samples.clone(), i.new.samples.clone()))
        .collect();
    let changes = reliable_changes(&pairs);
    let (negative, positive): (Vec<f64>, Vec<f64>) = pairs
        .iter()
        .map(|(old, new)| flip_shares(old, new, tolerance))
        .unzip();
    let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let mut report = SampledReport {
        samples: settings.samples,
        temperature: settings.temperature,
        top_p: settings.top_p,
        top_k: settings.top_k,
        n: drawn.len() as u64,
        expected_nfr: mean(&negative),
        expected_pfr: mean(&positive),
        intervals: SampledIntervals {
            expected_nfr: paired_bootstrap_delta(&negative, bootstrap_resamples, seed),
            expected_pfr: paired_bootstrap_delta(&positive, bootstrap_resamples, seed),
        },
        reliably_worse: 0,
        reliably_better: 0,
        no_reliable_change: 0,
        greedy_flips: 0,
        greedy_flips_reliable: 0,
        reliable_missed_by_greedy: 0,
    };
    for (instance, change) in drawn.iter().zip(&changes) {
        let greedy = classify(kind, instance.old.score, instance.new.score);
        let agrees = matches!(
            (greedy, change.verdict),
            (Flip::Negative, Verdict::Worse) | (Flip::Positive, Verdict::Better)
        );
        match change.verdict {
            Verdict::Worse => report.reliably_worse += 1,
            Verdict::Better => report.reliably_better += 1,
            Verdict::None => report.no_reliable_change += 1,
        }
        if matches!(greedy, Flip::Negative | Flip::Positive) {
            report.greedy_flips += 1;
            report.greedy_flips_reliable += u64::from(agrees);
        }
        if change.verdict != Verdict::None && !agrees {
            report.reliable_missed_by_greedy += 1;
        }
    }
    let mut changes = changes.into_iter();
    let aligned = instances
        .iter()
        .map(|i| has_draws(i).then(|| changes.next().expect("one change per drawn instance")))
        .collect();
    (report, aligned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Answer, SideOutcome};

    fn instance(old: (f64, &[f64]), new: (f64, &[f64])) -> InstanceOutcome {
        let side = |(score, samples): (f64, &[f64])| SideOutcome {
            score,
            answer: Answer::Text(String::new()),
            samples: samples.to_vec(),
        };
        InstanceOutcome {
            id: String::new(),
            gold: None,
            tags: Default::default(),
            old: side(old),
            new: side(new),
        }
    }

    const SETTINGS: SamplingSettings = SamplingSettings {
        samples: 10,
        temperature: 0.7,
        top_p: 0.95,
        top_k: None,
    };

    #[test]
    fn greedy_flips_are_held_against_the_verdicts() {
        let all = [1.0; 10];
        let none = [0.0; 10];
        let half = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let instances = vec![
            // Reliably worse, and greedy saw it.
            instance((1.0, &all), (0.0, &none)),
            // Reliably better, greedy saw nothing: missed.
            instance((0.0, &none), (0.0, &all)),
            // A greedy flip on an instance that did not reliably change.
            instance((1.0, &half), (0.0, &half)),
            // No draws: left out.
            instance((1.0, &[]), (0.0, &[])),
        ];
        let (report, changes) = compute_sampled(
            TaskKind::Generation { tolerance: 0.0 },
            &instances,
            SETTINGS,
            200,
            0,
        );
        assert_eq!(report.n, 3);
        assert_eq!(
            (
                report.reliably_worse,
                report.reliably_better,
                report.no_reliable_change
            ),
            (1, 1, 1)
        );
        assert_eq!(report.greedy_flips, 2);
        assert_eq!(report.greedy_flips_reliable, 1);
        assert_eq!(report.reliable_missed_by_greedy, 1);
        // E[nfr] = mean(1 * 1, 0 * 0, 0.5 * 0.5) = 1.25 / 3.
        assert!((report.expected_nfr.unwrap() - 1.25 / 3.0).abs() < 1e-12);
        assert!((report.expected_pfr.unwrap() - 1.25 / 3.0).abs() < 1e-12);
        let nfr = report.intervals.expected_nfr.unwrap();
        assert!(nfr.lower <= 1.25 / 3.0 && 1.25 / 3.0 <= nfr.upper);
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[0].unwrap().verdict, Verdict::Worse);
        assert!(changes[3].is_none());
        assert_eq!(report.get("reliably_worse"), Some(1.0));
    }
}
