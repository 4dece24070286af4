//! Compatibility metrics of a model update (muscle.md section 2), computed from per-instance
//! outcomes of the old and the new model. Pure: no I/O.
//!
//! Entry points: [`classify`] labels one instance, [`compute_report`] builds the report,
//! [`validate_gate`] / [`evaluate_gate`] handle release gates, and [`rouge1_f`], [`rouge_l_f`],
//! [`exact_match`] score generated text.

mod bootstrap;
mod counts;
mod exact_match;
mod fdr;
mod fisher;
mod gate;
mod generative;
mod harness;
mod intervals;
mod mcnemar;
mod noise;
mod outcome;
mod power;
mod provenance;
mod rates;
mod report;
mod rouge;
mod sampled;
mod sampled_report;
mod slices;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod report_tests;

pub use bootstrap::paired_bootstrap_delta;
pub use counts::Counts;
pub use exact_match::{ExactMatchOptions, exact_match};
pub use fdr::benjamini_hochberg;
pub use fisher::fisher_exact;
pub use gate::{
    GateCheck, GateCheckResult, GateError, GateResult, evaluate_gate, gate_value,
    is_known_gate_metric, known_gate_metrics, validate_gate,
};
pub use generative::Generative;
pub use harness::{AnswerFilter, HarnessExactMatch};
pub use intervals::{Interval, Intervals, wilson, wilson_z, z_95};
pub use mcnemar::{McNemar, mcnemar_exact};
pub use noise::{NoiseFloor, NoiseFloorInput};
pub use outcome::{Answer, Flip, InstanceOutcome, SideOutcome, TaskKind, classify};
pub use power::{POWER_ALPHA, POWER_TARGET, Power, detectable_nfr, mcnemar_power};
pub use provenance::{EndpointProvenance, ListedModel, Provenance, SideProvenance};
pub use rates::Metrics;
pub use report::{
    DEFAULT_MAX_SLICES, Report, ReportOptions, SideAccuracy, compute_report,
    compute_report_with_changes,
};
pub use rouge::{rouge_l_f, rouge1_f};
pub use sampled::{
    INSTANCE_FDR, ReliableChange, Verdict, flip_shares, reliable_changes, welch_t_test,
};
pub use sampled_report::{SampledIntervals, SampledReport, SamplingSettings, compute_sampled};
pub use slices::{Slice, SliceSet, compute_slices, slice_names};
