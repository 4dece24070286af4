//! [`Store`] on SQLite and Postgres through sqlx's `Any` driver: the SQL is shared, and the few
//! places where the dialects differ (the clock, row locks) come from [`Dialect`].

mod builder;
mod callbacks;
mod datasets;
mod instances;
mod jobs;
mod predictions;
mod queue;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::AnyPool;

use super::*;
use builder::Sql;

pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    dialect: Dialect,
}

/// SQL fragments that differ between the backends.
/// Leases are judged by the database clock, not by each worker host's; on Postgres concurrent
/// claimers skip rows another one has locked.
struct Dialect {
    claim: Arc<str>,
    sweep: Arc<str>,
    fence: Arc<str>,
}

impl Dialect {
    fn new(backend: Backend) -> Self {
        let (now_ms, skip_locked) = match backend {
            Backend::Postgres => (
                "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
                " FOR UPDATE SKIP LOCKED",
            ),
            Backend::Sqlite => (
                "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
                "",
            ),
        };
        Self {
            claim: queue::claim_sql(now_ms, skip_locked).into(),
            sweep: queue::sweep_sql(now_ms).into(),
            fence: queue::fence_sql(now_ms).into(),
        }
    }
}

impl SqlStore {
    pub fn new(pool: AnyPool, backend: Backend) -> Self {
        Self {
            pool,
            backend,
            dialect: Dialect::new(backend),
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

pub(crate) use crate::time::now_ms;

/// Bytes the readiness probe writes: a database with less room left is not ready.
const PROBE_PAD_BYTES: usize = 256 * 1024;

fn to_json_text(value: &Value) -> String {
    value.to_string()
}

fn parse_json(column: &str, text: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn ping(&self) -> StoreResult<()> {
        // The pad changes on every probe, so the write cannot be skipped as a no-op.
        let at = now_ms();
        let pad = format!("{at:020}").repeat(PROBE_PAD_BYTES / 20);
        sqlx::query(
            "INSERT INTO probe (id, at, pad) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET at = $1, pad = $2",
        )
        .bind(at)
        .bind(pad)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_dataset(
        &self,
        dataset: &NewDataset,
        rows: &mut (dyn Iterator<Item = DatasetRow> + Send),
    ) -> StoreResult<Dataset> {
        self.insert_dataset_impl(dataset, rows).await
    }

    async fn get_dataset(&self, id: &str) -> StoreResult<Option<Dataset>> {
        self.get_dataset_impl(id).await
    }

    async fn datasets_named(&self, name: &str, limit: i64) -> StoreResult<Vec<Dataset>> {
        self.datasets_named_impl(name, limit).await
    }

    async fn list_datasets(&self, page: PageRequest) -> StoreResult<Page<Dataset>> {
        self.list_datasets_impl(page).await
    }

    async fn dataset_rows(&self, id: &str, start: i64, end: i64) -> StoreResult<Vec<DatasetRow>> {
        self.dataset_rows_impl(id, start, end).await
    }

    async fn dataset_rows_at(&self, id: &str, indices: &[i64]) -> StoreResult<Vec<DatasetRow>> {
        self.dataset_rows_at_impl(id, indices).await
    }

    async fn insert_predictions(
        &self,
        predictions: &NewPredictions,
        rows: &[PredictionRow],
    ) -> StoreResult<Predictions> {
        self.insert_predictions_impl(predictions, rows).await
    }

    async fn get_predictions(&self, id: &str) -> StoreResult<Option<Predictions>> {
        self.get_predictions_impl(id).await
    }

    async fn predictions_named(&self, name: &str, limit: i64) -> StoreResult<Vec<Predictions>> {
        self.predictions_named_impl(name, limit).await
    }

    async fn list_predictions(&self, page: PageRequest) -> StoreResult<Page<Predictions>> {
        self.list_predictions_impl(page).await
    }

    async fn prediction_rows(&self, id: &str, filter: &str) -> StoreResult<Vec<PredictionRow>> {
        self.prediction_rows_impl(id, filter).await
    }

    async fn prediction_rows_for(
        &self,
        id: &str,
        filter: &str,
        doc_ids: &[String],
    ) -> StoreResult<Vec<PredictionRow>> {
        self.prediction_rows_for_impl(id, filter, doc_ids).await
    }

    async fn create_job(&self, job: NewJob) -> StoreResult<Created<Job>> {
        self.create_job_impl(job).await
    }

    async fn get_job(&self, kind: JobKind, id: &str) -> StoreResult<Option<Job>> {
        self.get_job_impl(kind, id).await
    }

    async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Page<Job>> {
        self.list_jobs_impl(filter).await
    }

    async fn cancel_job(&self, kind: JobKind, id: &str) -> StoreResult<Job> {
        self.cancel_job_impl(kind, id).await
    }

    async fn store_final_report(
        &self,
        id: &str,
        report: &Value,
        summary: &Value,
    ) -> StoreResult<bool> {
        self.store_final_report_impl(id, report, summary).await
    }

    async fn claim(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Claim>> {
        self.claim_impl(worker_id, lease).await
    }

    async fn heartbeat(
        &self,
        fence: &Fence,
        done: i64,
        lease: Duration,
    ) -> StoreResult<LeaseState> {
        self.heartbeat_impl(fence, done, lease).await
    }

    async fn write_instances(
        &self,
        fence: &Fence,
        rows: &[InstanceRecord],
        done: i64,
    ) -> StoreResult<LeaseState> {
        self.write_instances_impl(fence, rows, done).await
    }

    async fn save_checkpoint(&self, fence: &Fence, checkpoint: &Value) -> StoreResult<LeaseState> {
        self.save_checkpoint_impl(fence, checkpoint).await
    }

    async fn complete_shard(
        &self,
        fence: &Fence,
        completion: &Completion,
    ) -> StoreResult<LeaseState> {
        self.complete_shard_impl(fence, completion).await
    }

    async fn fail_shard(&self, fence: &Fence, error: &str, retry: bool) -> StoreResult<LeaseState> {
        self.fail_shard_impl(fence, error, retry).await
    }

    async fn release_shard(&self, fence: &Fence) -> StoreResult<LeaseState> {
        self.release_shard_impl(fence).await
    }

    async fn list_instances(
        &self,
        job_id: &str,
        filter: &InstanceFilter,
    ) -> StoreResult<Page<InstanceRecord>> {
        self.list_instances_impl(job_id, filter).await
    }

    async fn instance_indices(&self, job_id: &str, start: i64, end: i64) -> StoreResult<Vec<i64>> {
        self.instance_indices_impl(job_id, start, end).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.queue_stats_impl().await
    }

    async fn due_callbacks(&self, now: i64, limit: i64) -> StoreResult<Vec<DueCallback>> {
        self.due_callbacks_impl(now, limit).await
    }

    async fn claim_callback(
        &self,
        job_id: &str,
        attempts: i64,
        hold_until: i64,
    ) -> StoreResult<bool> {
        self.claim_callback_impl(job_id, attempts, hold_until).await
    }

    async fn record_callback(&self, job_id: &str, attempt: &CallbackAttempt) -> StoreResult<()> {
        self.record_callback_impl(job_id, attempt).await
    }
}
