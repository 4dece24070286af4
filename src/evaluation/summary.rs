//! The headline of an evaluation's report, stored beside it so that listings read it alone.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::metrics::{Interval, Report};

/// What a release list shows of a finished evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationSummary {
    pub n: u64,
    /// `pass` or `fail` by the gate; `none` when the spec has no gate.
    pub verdict: Verdict,
    pub nfr: Option<f64>,
    /// Wilson 95% (bootstrap for graded generation scores), as in the report.
    pub nfr_interval: Option<Interval>,
    pub accuracy_old: Option<f64>,
    pub accuracy_new: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    None,
}

impl EvaluationSummary {
    pub fn of(report: &Report) -> Self {
        Self {
            n: report.n,
            verdict: match (report.gate.checks.is_empty(), report.gate.passed) {
                (true, _) => Verdict::None,
                (false, true) => Verdict::Pass,
                (false, false) => Verdict::Fail,
            },
            nfr: report.metrics.nfr,
            nfr_interval: report.intervals.nfr,
            accuracy_old: report.old.accuracy,
            accuracy_new: report.new.accuracy,
        }
    }
}
