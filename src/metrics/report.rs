//! The evaluation report: every metric over the whole dataset, its slices and the gate.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bootstrap::paired_bootstrap_delta;
use super::counts::{Counts, Tally, effective_score};
use super::gate::{GateCheck, GateResult, evaluate_gate};
use super::generative::Generative;
use super::intervals::{Intervals, wilson};
use super::mcnemar::{McNemar, mcnemar_exact};
use super::noise::{NoiseFloor, NoiseFloorInput, noise_floor};
use super::outcome::{InstanceOutcome, TaskKind};
use super::power::Power;
use super::rates::{Metrics, mean};
use super::sampled::ReliableChange;
use super::sampled_report::{SampledReport, SamplingSettings, compute_sampled};
use super::slices::{Slice, SliceSet, compute_slices};

/// How to compute a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ReportOptions {
    /// Resamples for the paired bootstrap of `delta_accuracy` (0: no interval).
    pub bootstrap_resamples: usize,
    /// Seed of the bootstrap's ChaCha8 generator.
    pub seed: u64,
    /// Slices with fewer instances are flagged `small`.
    pub min_slice_size: u64,
    /// Most slices listed: beyond it the worst by nfr and the largest are kept.
    pub max_slices: usize,
    /// Self-flips of the old model run twice; gives `noise_floor`.
    pub noise_floor: Option<NoiseFloorInput>,
    /// The instances are those done so far, not the whole dataset.
    pub partial: bool,
    /// Checks evaluated into `gate`.
    pub gate: Vec<GateCheck>,
    /// How the instances' sampled outputs were drawn; gives `sampled`.
    pub sampling: Option<SamplingSettings>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            bootstrap_resamples: 1000,
            seed: 0,
            min_slice_size: 30,
            max_slices: DEFAULT_MAX_SLICES,
            noise_floor: None,
            partial: false,
            gate: Vec::new(),
            sampling: None,
        }
    }
}

/// Slices a report lists unless its options say otherwise.
pub const DEFAULT_MAX_SLICES: usize = 200;

/// One model's headline number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SideAccuracy {
    /// Accuracy for multiple choice; mean score for generation. Null when n is 0.
    pub accuracy: Option<f64>,
}

/// The `report` object of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    pub n: u64,
    pub partial: bool,
    pub old: SideAccuracy,
    pub new: SideAccuracy,
    pub counts: Counts,
    pub metrics: Metrics,
    pub intervals: Intervals,
    pub mcnemar: McNemar,
    /// Null unless a noise-floor run was given.
    pub noise_floor: Option<NoiseFloor>,
    pub generative: Generative,
    /// At most the evaluation's `max_slices`, worst nfr first.
    pub slices: Vec<Slice>,
    /// Slices computed but not listed (beyond `max_slices`).
    #[serde(default)]
    pub slices_omitted: u64,
    pub gate: GateResult,
    /// The smallest negative flip rate this evaluation would find at 80% power (reports stored
    /// before it existed read as null).
    #[serde(default)]
    pub power: Power,
    pub warnings: Vec<String>,
    /// With `task.sampling`: expected flip rates over users and per-instance reliable changes;
    /// null otherwise.
    #[serde(default)]
    pub sampled: Option<SampledReport>,
    /// Where each side's numbers came from (the final report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<super::Provenance>,
}

/// Computes the report of `instances` (pooled counts, never averages of batch ratios).
pub fn compute_report(
    kind: TaskKind,
    instances: &[InstanceOutcome],
    options: &ReportOptions,
) -> Report {
    compute_report_with_changes(kind, instances, options).0
}

/// The report, and with sampling each instance's reliable change (in the order of
/// `instances`; empty without sampling).
pub fn compute_report_with_changes(
    kind: TaskKind,
    instances: &[InstanceOutcome],
    options: &ReportOptions,
) -> (Report, Vec<Option<ReliableChange>>) {
    let (sampled, changes) = match options.sampling {
        Some(settings) => {
            let (section, changes) = compute_sampled(
                kind,
                instances,
                settings,
                options.bootstrap_resamples,
                options.seed,
            );
            (Some(section), changes)
        }
        None => (None, Vec::new()),
    };
    let tally = Tally::from_instances(kind, instances);
    let intervals = compute_intervals(kind, &tally, instances, options);
    let mut warnings = score_warnings(kind, &tally);
    let noise_floor = options.noise_floor.and_then(|input| {
        noise_floor(input, intervals.nfr)
            .map_err(|warning| warnings.push(warning))
            .ok()
    });
    let SliceSet {
        slices,
        omitted: slices_omitted,
        too_many_values,
    } = compute_slices(kind, instances, options.min_slice_size, options.max_slices);
    for (key, values) in too_many_values {
        warnings.push(format!(
            "{key} has {values} distinct values, more than max_slices ({}): it looks unique \
             per instance rather than a category; slice by a coarser field",
            options.max_slices
        ));
    }
    if slices_omitted > 0 {
        warnings.push(format!(
            "{} of {} slices listed (the worst by nfr and the largest); {slices_omitted} omitted",
            slices.len(),
            slices.len() as u64 + slices_omitted
        ));
    }
    let small = slices.iter().filter(|s| s.small).count();
    if small > 0 {
        warnings.push(format!(
            "{small} of {} slices have fewer than {} instances (flagged small)",
            slices.len(),
            options.min_slice_size
        ));
    }
    let mut report = Report {
        n: tally.n,
        partial: options.partial,
        old: SideAccuracy {
            accuracy: mean(tally.sum_old, tally.n),
        },
        new: SideAccuracy {
            accuracy: mean(tally.sum_new, tally.n),
        },
        counts: tally.counts,
        metrics: Metrics::from_tally(&tally),
        intervals,
        mcnemar: mcnemar_exact(tally.counts.negative_flips, tally.counts.positive_flips),
        noise_floor,
        generative: Generative::compute(kind, &tally, instances),
        slices,
        slices_omitted,
        gate: GateResult::default(),
        power: Power::of(tally.n, tally.counts.positive_flips),
        warnings,
        sampled,
        provenance: None,
    };
    report.gate = evaluate_gate(&report, &options.gate);
    let underpowered = underpowered_gates(&report);
    report.warnings.extend(underpowered);
    (report, changes)
}

/// "too small to detect" for each passing gate on nfr whose bound is below what the
/// evaluation could find at 80% power: passing it says little.
fn underpowered_gates(report: &Report) -> Vec<String> {
    let detectable = report.power.nfr_detectable;
    report
        .gate
        .checks
        .iter()
        .filter(|check| {
            check.passed && (check.metric == "nfr" || check.metric == "intervals.nfr.upper")
        })
        .filter_map(|check| {
            let bound = check.max?;
            let what = match detectable {
                Some(x) if x <= bound => return None,
                Some(x) => format!("the smallest it finds at 80% power is {x:.4}"),
                None => "no negative flip rate is found at 80% power".to_owned(),
            };
            Some(format!(
                "too small to detect an nfr of {bound}: the gate {} <= {bound} passed, but with \
                 {} instances and the observed positive flip rate {what} (McNemar's test, \
                 alpha 0.05)",
                check.metric, report.n
            ))
        })
        .collect()
}

fn compute_intervals(
    kind: TaskKind,
    tally: &Tally,
    instances: &[InstanceOutcome],
    options: &ReportOptions,
) -> Intervals {
    let n = tally.n;
    let c = &tally.counts;
    let (nf, pf, bc, bw) = (
        c.negative_flips,
        c.positive_flips,
        c.both_correct,
        c.both_wrong,
    );
    let binary = tally.is_binary();
    let classical = |k: u64, d: u64| if binary { wilson(k, d) } else { None };
    let diffs: Vec<f64> = instances
        .iter()
        .map(|i| effective_score(kind, i.new.score) - effective_score(kind, i.old.score))
        .collect();
    Intervals {
        nfr: wilson(nf, n),
        pfr: wilson(pf, n),
        nfi: classical(nf, nf + bw),
        pfi: classical(pf, bc + pf),
        btc: classical(bc, bc + nf),
        bec: classical(bw, nf + bw),
        nfr_mc: classical(tally.new_wrong_differs, n),
        agreement: wilson(tally.same_answer, n),
        acc_old: classical(bc + nf, n),
        acc_new: classical(bc + pf, n),
        delta_accuracy: paired_bootstrap_delta(&diffs, options.bootstrap_resamples, options.seed),
    }
}

fn score_warnings(kind: TaskKind, tally: &Tally) -> Vec<String> {
    let mut warnings = Vec::new();
    if tally.n == 0 {
        warnings.push("no instances: every rate is null".to_owned());
    }
    if tally.non_finite > 0 {
        warnings.push(format!(
            "{} instances have a NaN or infinite score: accuracies and delta_accuracy are null",
            tally.non_finite
        ));
    }
    match kind {
        TaskKind::MultipleChoice if tally.irregular > 0 => warnings.push(format!(
            "{} instances have a multiple-choice score other than 0 or 1; scores >= 0.5 count as correct",
            tally.irregular
        )),
        TaskKind::Generation { tolerance } => {
            if tally.irregular > 0 {
                warnings.push(format!("{} instances have a score outside [0, 1]", tally.irregular));
            }
            if !(tolerance.is_finite() && tolerance >= 0.0) {
                warnings.push(format!("tolerance {tolerance} should be a finite number >= 0"));
            }
            if tally.n > 0 && !tally.is_binary() {
                warnings.push(
                    "scores are continuous (not all 0 or 1, or ties within tolerance): nfi, pfi, btc, bec, nfr_rel and nfr_mc are null"
                        .to_owned(),
                );
            }
        }
        TaskKind::MultipleChoice => {}
    }
    warnings
}
