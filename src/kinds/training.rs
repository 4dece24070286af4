//! Trainings: a task or compatibility adapter trained on a dataset, written where PEFT loads
//! it, and with `evaluate` the evaluations that judge it.

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;

use super::{JobTimes, Kind, Readers, Workers};
use crate::domain::{JobPlanning, JobStatus};
use crate::spec::TrainingSpec;
use crate::store::{Job, NewJob, StoreResult};
use crate::train::job::{StoredTraining, training_job};
use crate::train::result::TrainingResult;
use crate::train::view::EvaluationsView;
use crate::train::{self, HistoryEntry};
use crate::worker::{ShardContext, ShardError, ShardResult};

pub struct Trainings;

#[async_trait]
impl Kind for Trainings {
    type Spec = StoredTraining;
    type Document = Training;

    fn plan(spec: &StoredTraining, _rows: i64, planning: JobPlanning) -> NewJob {
        training_job(spec, planning)
    }

    async fn work(
        workers: &Workers,
        ctx: &ShardContext,
        spec: &StoredTraining,
    ) -> Result<(), ShardError> {
        train::run_work(&workers.training, ctx, spec).await
    }

    async fn finalize(workers: &Workers, ctx: &ShardContext, spec: &StoredTraining) -> ShardResult {
        train::finalize(&workers.training, ctx, spec).await
    }

    async fn document(readers: &Readers, job: &Job) -> StoreResult<Training> {
        let mut training = Training::of(job)?;
        if let Some(queued) = training.evaluations.take() {
            training.evaluations = Some(queued.read(&readers.store).await?);
        }
        Ok(training)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrainingProgress {
    pub step: i64,
    pub total_steps: i64,
    /// 1-based epoch the current step belongs to.
    pub epoch: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Training {
    pub id: String,
    pub name: Option<String>,
    pub status: JobStatus,
    pub progress: TrainingProgress,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// Train loss per logging step and validation cross-entropy per epoch.
    pub history: Vec<HistoryEntry>,
    pub best_epoch: Option<u32>,
    /// Name of the written adapter under MUSCLE_MODEL_DIR.
    pub adapter: Option<String>,
    /// With `evaluate`: the two evaluations (old vs new, old vs new+compatibility), their
    /// headline numbers and the change in nfr.
    pub evaluations: Option<EvaluationsView>,
    pub spec: TrainingSpec,
}

impl Training {
    /// The job as stored, its evaluations by id alone.
    pub fn of(job: &Job) -> StoreResult<Self> {
        let times = JobTimes::of(job);
        let stored: StoredTraining = job.read_spec()?;
        let result: Option<TrainingResult> = job.read_result()?;
        let steps_per_epoch = stored.steps_per_epoch.max(1);
        let (history, best_epoch, adapter, evaluations) = match result {
            Some(r) => (
                r.history,
                r.best_epoch,
                Some(r.adapter),
                r.evaluations.as_ref().map(EvaluationsView::queued),
            ),
            None => (Vec::new(), None, None, None),
        };
        Ok(Self {
            id: job.id.clone(),
            name: job.name.clone(),
            status: job.status,
            progress: TrainingProgress {
                step: job.progress_done,
                total_steps: job.progress_total,
                epoch: (job.progress_done.max(1) - 1) / steps_per_epoch + 1,
            },
            created_at: times.created_at,
            started_at: times.started_at,
            finished_at: times.finished_at,
            error: job.error.clone(),
            history,
            best_epoch,
            adapter,
            evaluations,
            spec: stored.spec,
        })
    }
}
