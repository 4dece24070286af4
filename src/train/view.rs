//! The evaluations of a finished training as GET /v1/trainings/{id} shows them: each one's
//! status and headline numbers, read from the evaluation jobs at request time, and the change
//! in nfr and accuracy between them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::result::{EvaluationPair, QueuedEvaluations};
use crate::domain::{JobKind, JobStatus};
use crate::metrics::Report;
use crate::store::{Store, StoreResult};

/// The headline numbers of an evaluation's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Headline {
    pub n: u64,
    pub accuracy_old: Option<f64>,
    pub accuracy_new: Option<f64>,
    pub nfr: Option<f64>,
    pub negative_flips: u64,
    pub positive_flips: u64,
    pub mcnemar_p: f64,
    pub gate_passed: bool,
}

impl Headline {
    pub fn of(report: &Report) -> Self {
        Self {
            n: report.n,
            accuracy_old: report.old.accuracy,
            accuracy_new: report.new.accuracy,
            nfr: report.metrics.nfr,
            negative_flips: report.counts.negative_flips,
            positive_flips: report.counts.positive_flips,
            mcnemar_p: report.mcnemar.p_value,
            gate_passed: report.gate.passed,
        }
    }
}

/// Where an evaluation a training queued stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The evaluation job no longer exists.
    Missing,
}

impl From<JobStatus> for EvaluationStatus {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Failed => Self::Failed,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// One evaluation a training queued: its id, and when read with the training its status,
/// headline and error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationState {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EvaluationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<Headline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The change in nfr from `old_vs_new` to `old_vs_compat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NfrChange {
    pub absolute: f64,
    /// Null when the nfr without the adapter was 0.
    pub relative: Option<f64>,
}

/// The evaluations of a training by pair, and with both compatibility evaluations done the
/// change in nfr and in the new side's accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationsView {
    #[serde(flatten)]
    pub pairs: BTreeMap<EvaluationPair, EvaluationState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfr_change: Option<NfrChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_change: Option<f64>,
}

impl EvaluationsView {
    /// The ids alone, as the result stores them.
    pub fn queued(queued: &QueuedEvaluations) -> Self {
        let pairs = queued
            .iter()
            .map(|(pair, queued)| {
                let state = EvaluationState {
                    id: queued.id.clone(),
                    status: None,
                    headline: None,
                    error: None,
                };
                (*pair, state)
            })
            .collect();
        Self {
            pairs,
            nfr_change: None,
            accuracy_change: None,
        }
    }

    /// Each evaluation's status and headline read now.
    pub async fn read(mut self, store: &Store) -> StoreResult<Self> {
        for state in self.pairs.values_mut() {
            state.status = Some(EvaluationStatus::Missing);
            if let Some(job) = store.get_job(JobKind::Evaluation, &state.id).await? {
                state.status = Some(job.status.into());
                state.headline = job.read_report::<Report>()?.as_ref().map(Headline::of);
                state.error = job.error.clone();
            }
        }
        let headline = |pair| {
            self.pairs
                .get(&pair)
                .and_then(|state: &EvaluationState| state.headline.clone())
        };
        if let (Some(before), Some(after)) = (
            headline(EvaluationPair::OldVsNew),
            headline(EvaluationPair::OldVsCompat),
        ) {
            if let (Some(nb), Some(na)) = (before.nfr, after.nfr) {
                self.nfr_change = Some(NfrChange {
                    absolute: na - nb,
                    relative: (nb > 0.0).then(|| (na - nb) / nb),
                });
            }
            if let (Some(ab), Some(aa)) = (before.accuracy_new, after.accuracy_new) {
                self.accuracy_change = Some(aa - ab);
            }
        }
        Ok(self)
    }
}
