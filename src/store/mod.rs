//! The job store: datasets, jobs, their shards (the queue) and per-instance results.
//!
//! One [`Store`] trait; [`SqlStore`] implements it on SQLite and on Postgres, each backend with
//! its own migrations folder.

mod connect;
mod sql;
mod types;

use async_trait::async_trait;

pub use connect::{Backend, connect, redact};
pub use sql::SqlStore;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the Idempotency-Key was already used with a different request body")]
    IdempotencyMismatch,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored document is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
    /// A training still queued or running (the one named, when it was found) writes `output`.
    #[error("{}", output_taken(output, job_id.as_deref()))]
    OutputTaken {
        output: String,
        job_id: Option<String>,
    },
}

fn output_taken(output: &str, job_id: Option<&str>) -> String {
    match job_id {
        Some(id) => format!("training {id} (queued or running) writes {output:?} already"),
        None => format!("a training still queued or running writes {output:?} already"),
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// A small write: the database answers and takes writes (a full disk fails it).
    async fn ping(&self) -> StoreResult<()>;

    /// Stores a dataset and its rows in one transaction, taking the rows as they come.
    async fn insert_dataset(
        &self,
        dataset: &NewDataset,
        rows: &mut (dyn Iterator<Item = DatasetRow> + Send),
    ) -> StoreResult<Dataset>;
    async fn get_dataset(&self, id: &str) -> StoreResult<Option<Dataset>>;
    /// Datasets uploaded under `name`, newest first, at most `limit`.
    async fn datasets_named(&self, name: &str, limit: i64) -> StoreResult<Vec<Dataset>>;
    async fn list_datasets(&self, page: PageRequest) -> StoreResult<Page<Dataset>>;
    /// Rows `start..end` of a dataset in order.
    async fn dataset_rows(&self, id: &str, start: i64, end: i64) -> StoreResult<Vec<DatasetRow>>;
    /// The rows of a dataset at these positions (those that exist), in order.
    async fn dataset_rows_at(&self, id: &str, indices: &[i64]) -> StoreResult<Vec<DatasetRow>>;

    async fn insert_predictions(
        &self,
        predictions: &NewPredictions,
        rows: &[PredictionRow],
    ) -> StoreResult<Predictions>;
    async fn get_predictions(&self, id: &str) -> StoreResult<Option<Predictions>>;
    /// Recorded runs uploaded under `name`, newest first, at most `limit`.
    async fn predictions_named(&self, name: &str, limit: i64) -> StoreResult<Vec<Predictions>>;
    async fn list_predictions(&self, page: PageRequest) -> StoreResult<Page<Predictions>>;
    /// Every stored line of a recorded run under `filter`, in file order.
    async fn prediction_rows(&self, id: &str, filter: &str) -> StoreResult<Vec<PredictionRow>>;
    /// The lines of a recorded run under `filter` for these doc_ids (those that exist).
    async fn prediction_rows_for(
        &self,
        id: &str,
        filter: &str,
        doc_ids: &[String],
    ) -> StoreResult<Vec<PredictionRow>>;

    /// Inserts a job with its shards, or returns the job already stored under the same
    /// idempotency key (`created` is false then).
    async fn create_job(&self, job: NewJob) -> StoreResult<Created<Job>>;
    async fn get_job(&self, kind: JobKind, id: &str) -> StoreResult<Option<Job>>;
    /// Jobs newest first; each without its report (`summary` says its headline).
    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Page<Job>>;
    /// Cancels a queued or running job; a finished one is a [`StoreError::Conflict`].
    async fn cancel_job(&self, kind: JobKind, id: &str) -> StoreResult<Job>;
    /// Stores the report of a cancelled or failed job, once (false when it already has one or
    /// is not such a job).
    async fn store_final_report(
        &self,
        id: &str,
        report: &serde_json::Value,
        summary: &serde_json::Value,
    ) -> StoreResult<bool>;

    /// Claims one runnable shard under a lease, or returns None when the queue is empty.
    /// Expired leases are reclaimed here; shards out of attempts fail their job.
    async fn claim(
        &self,
        worker_id: &str,
        lease: std::time::Duration,
    ) -> StoreResult<Option<Claim>>;
    /// Extends the lease and records progress (instances done within the shard).
    async fn heartbeat(
        &self,
        fence: &Fence,
        done: i64,
        lease: std::time::Duration,
    ) -> StoreResult<LeaseState>;
    /// Stores per-instance rows and progress, fenced on the claim: a stale attempt writes nothing.
    async fn write_instances(
        &self,
        fence: &Fence,
        rows: &[InstanceRecord],
        done: i64,
    ) -> StoreResult<LeaseState>;
    /// Stores an opaque checkpoint that a later attempt of the same shard resumes from.
    async fn save_checkpoint(
        &self,
        fence: &Fence,
        checkpoint: &serde_json::Value,
    ) -> StoreResult<LeaseState>;
    /// Marks the shard done; the final shard also finishes the job with its report or result.
    async fn complete_shard(
        &self,
        fence: &Fence,
        completion: &Completion,
    ) -> StoreResult<LeaseState>;
    /// Records a failure: the shard is queued again while attempts remain and `retry` is set,
    /// otherwise it fails and so does its job.
    async fn fail_shard(&self, fence: &Fence, error: &str, retry: bool) -> StoreResult<LeaseState>;
    /// Gives the shard back to the queue without counting the attempt (graceful shutdown).
    async fn release_shard(&self, fence: &Fence) -> StoreResult<LeaseState>;

    async fn list_instances(
        &self,
        job_id: &str,
        filter: &InstanceFilter,
    ) -> StoreResult<Page<InstanceRecord>>;
    /// Dataset indices in `start..end` whose instance rows are already stored (a reclaimed shard
    /// skips them).
    async fn instance_indices(&self, job_id: &str, start: i64, end: i64) -> StoreResult<Vec<i64>>;
    async fn queue_stats(&self) -> StoreResult<QueueStats>;

    /// Callbacks of finished jobs whose next attempt is due at `now` (ms), at most `limit`.
    async fn due_callbacks(&self, now: i64, limit: i64) -> StoreResult<Vec<DueCallback>>;
    /// Takes the next attempt of a callback (seen with `attempts` made) for one sender, holding
    /// it until `hold_until`; false when another sender took it first.
    async fn claim_callback(
        &self,
        job_id: &str,
        attempts: i64,
        hold_until: i64,
    ) -> StoreResult<bool>;
    async fn record_callback(&self, job_id: &str, attempt: &CallbackAttempt) -> StoreResult<()>;
}

/// What a reference by id or name found: the one thing, nothing, or several of that name.
pub enum Lookup<T> {
    Found(T),
    Missing,
    /// Several carry the name; the count found (at most 10).
    Ambiguous(usize),
}

/// What an evaluation's or training's `dataset` names: an uploaded dataset's id, or the name it
/// was uploaded under when exactly one dataset has that name.
pub type DatasetLookup = Lookup<Dataset>;

impl<T> Lookup<T> {
    /// By id first, else by a name exactly one carries.
    fn pick(by_id: Option<T>, mut named: Vec<T>) -> Self {
        match (by_id, named.len()) {
            (Some(found), _) => Self::Found(found),
            (None, 0) => Self::Missing,
            (None, 1) => Self::Found(named.remove(0)),
            (None, n) => Self::Ambiguous(n),
        }
    }

    /// Why a reference to a `noun` ("dataset", "recorded run") found no single one.
    pub fn problem_with(&self, noun: &str, reference: &str) -> Option<String> {
        match self {
            Self::Found(_) => None,
            Self::Missing => Some(format!("no {noun} with id or name {reference:?}")),
            Self::Ambiguous(n) => Some(format!(
                "{n} {noun}s are named {reference:?}; name one by its id"
            )),
        }
    }
}

impl DatasetLookup {
    /// Why a reference found no single dataset, for the field's error.
    pub fn problem(&self, reference: &str) -> Option<String> {
        self.problem_with("dataset", reference)
    }
}

pub async fn lookup_dataset(store: &dyn Store, id_or_name: &str) -> StoreResult<DatasetLookup> {
    let by_id = store.get_dataset(id_or_name).await?;
    let named = match by_id {
        Some(_) => Vec::new(),
        None => store.datasets_named(id_or_name, 10).await?,
    };
    Ok(Lookup::pick(by_id, named))
}

/// A recorded run by its id, or by the name exactly one was uploaded under.
pub async fn lookup_predictions(
    store: &dyn Store,
    id_or_name: &str,
) -> StoreResult<Lookup<Predictions>> {
    let by_id = store.get_predictions(id_or_name).await?;
    let named = match by_id {
        Some(_) => Vec::new(),
        None => store.predictions_named(id_or_name, 10).await?,
    };
    Ok(Lookup::pick(by_id, named))
}
