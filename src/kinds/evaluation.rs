//! Evaluations: the old and new model over a dataset, scored per instance, and the report.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;

use super::{JobProgress, JobTimes, Kind, Readers, Workers};
use crate::domain::{JobPlanning, JobStatus};
use crate::evaluation::{self, EvaluationSummary, evaluation_job};
use crate::metrics::Report;
use crate::spec::EvaluationSpec;
use crate::store::{Job, NewJob, StoreResult};
use crate::worker::{ShardContext, ShardError, ShardResult};

pub struct Evaluations;

#[async_trait]
impl Kind for Evaluations {
    type Spec = EvaluationSpec;
    type Document = Evaluation;

    fn plan(spec: &EvaluationSpec, rows: i64, planning: JobPlanning) -> NewJob {
        evaluation_job(spec, rows, planning)
    }

    async fn work(
        workers: &Workers,
        ctx: &ShardContext,
        spec: &EvaluationSpec,
    ) -> Result<(), ShardError> {
        evaluation::run_shard(&workers.evaluation, ctx, spec).await
    }

    async fn finalize(workers: &Workers, ctx: &ShardContext, spec: &EvaluationSpec) -> ShardResult {
        evaluation::finalize(&workers.evaluation, ctx, spec).await
    }

    async fn document(readers: &Readers, job: &Job) -> StoreResult<Evaluation> {
        let report = readers.reports.report(&readers.store, job).await?;
        Evaluation::of(job, report)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Evaluation {
    pub id: String,
    pub name: Option<String>,
    pub status: JobStatus,
    pub progress: JobProgress,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// Partial (`partial: true`) while the job runs, final once it succeeded; null before the
    /// first instance is stored and in listings.
    #[schema(value_type = Option<Report>)]
    pub report: Option<Arc<Report>>,
    /// The stored report's headline (listings too): null until the evaluation succeeded, or
    /// until a cancelled or failed one's report was first read.
    pub summary: Option<EvaluationSummary>,
    /// The submitted spec with defaults filled in.
    pub spec: EvaluationSpec,
}

impl Evaluation {
    /// The job with `report` (none in listings and in the answer to a submission).
    pub fn of(job: &Job, report: Option<Arc<Report>>) -> StoreResult<Self> {
        let times = JobTimes::of(job);
        Ok(Self {
            id: job.id.clone(),
            name: job.name.clone(),
            status: job.status,
            progress: JobProgress {
                done: job.progress_done,
                total: job.progress_total,
            },
            created_at: times.created_at,
            started_at: times.started_at,
            finished_at: times.finished_at,
            error: job.error.clone(),
            report,
            summary: job.read_summary()?,
            spec: job.read_spec()?,
        })
    }
}
