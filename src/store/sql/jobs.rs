use sqlx::Row;
use sqlx::any::AnyRow;

use super::datasets::paginate;
use super::*;

pub(super) const JOB_COLUMNS: &str = "id, kind, name, status, spec, progress_done, progress_total, \
     error, report, summary, result, created_at, started_at, finished_at";
/// As [`JOB_COLUMNS`] without the report: a listing shows each job's summary alone.
const LISTED_JOB_COLUMNS: &str = "id, kind, name, status, spec, progress_done, progress_total, \
     error, NULL AS report, summary, result, created_at, started_at, finished_at";

fn optional_document(row: &AnyRow, column: &str) -> StoreResult<Option<Document>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| parse_document(column, t)).transpose()
}

pub(super) fn job_from_row(row: &AnyRow) -> StoreResult<Job> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let spec: String = row.try_get("spec")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: kind
            .parse::<JobKind>()
            .ok()
            .ok_or_else(|| StoreError::Corrupt(format!("job kind {kind:?}")))?,
        name: row.try_get("name")?,
        status: status
            .parse::<JobStatus>()
            .ok()
            .ok_or_else(|| StoreError::Corrupt(format!("job status {status:?}")))?,
        spec: parse_document("spec", spec)?,
        progress_done: row.try_get("progress_done")?,
        progress_total: row.try_get("progress_total")?,
        error: row.try_get("error")?,
        report: optional_document(row, "report")?,
        summary: optional_document(row, "summary")?,
        result: optional_document(row, "result")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Store {
    async fn job_by_key(&self, kind: JobKind, key: &Idempotency) -> StoreResult<Option<Job>> {
        let mut sql = Sql::new("SELECT ");
        sql.push(JOB_COLUMNS)
            .push(", request_hash FROM jobs WHERE kind = ")
            .bind(kind.as_str())
            .push(" AND idempotency_key = ")
            .bind(key.key.clone());
        let Some(row) = sql.query().fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let hash: Option<String> = row.try_get("request_hash")?;
        if hash.as_deref() != Some(key.request_hash.as_str()) {
            return Err(StoreError::IdempotencyMismatch);
        }
        job_from_row(&row).map(Some)
    }

    /// Inserts a job with its shards, or returns the job already stored under the same
    /// idempotency key (`created` is false then).
    pub async fn create_job(&self, job: NewJob) -> StoreResult<Created<Job>> {
        if let Some(key) = &job.idempotency
            && let Some(existing) = self.job_by_key(job.kind, key).await?
        {
            return Ok(Created {
                value: existing,
                created: false,
            });
        }
        match self.insert_job(&job).await {
            Ok(value) => Ok(Created {
                value,
                created: true,
            }),
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                // Another request with the same key won the race: answer with its job.
                if let Some(key) = &job.idempotency
                    && let Some(value) = self.job_by_key(job.kind, key).await?
                {
                    return Ok(Created {
                        value,
                        created: false,
                    });
                }
                // Else the one other unique index: a training queued or running writes there.
                match &job.output {
                    Some(output) => Err(StoreError::OutputTaken {
                        output: output.clone(),
                        job_id: self.training_writing(output).await?,
                    }),
                    None => Err(StoreError::Database(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The queued or running training that writes `output` (by the jobs_training_output index).
    async fn training_writing(&self, output: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT id FROM jobs WHERE output = $1 AND kind = 'training' \
             AND status IN ('queued', 'running')",
        )
        .bind(output.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.try_get("id")).transpose()?)
    }

    /// Inserts the job and its shards; the job as created, read inside the same transaction (a
    /// worker may claim it the moment it commits, and the answer must still say "queued").
    async fn insert_job(&self, job: &NewJob) -> StoreResult<Job> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, name, status, spec, idempotency_key, request_hash, \
             progress_done, progress_total, created_at, updated_at, output) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, 0, $7, $8, $8, $9)",
        )
        .bind(&id)
        .bind(job.kind.as_str())
        .bind(job.name.clone())
        .bind(job.spec.text().to_string())
        .bind(job.idempotency.as_ref().map(|k| k.key.clone()))
        .bind(job.idempotency.as_ref().map(|k| k.request_hash.clone()))
        .bind(job.total)
        .bind(now)
        .bind(job.output.clone())
        .execute(&mut *tx)
        .await?;
        if let Some(callback) = &job.callback {
            sqlx::query("INSERT INTO callbacks (job_id, url, secret_env) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(callback.url.clone())
                .bind(callback.secret_env.clone())
                .execute(&mut *tx)
                .await?;
        }
        for (chunk_no, chunk) in job.shards.chunks(200).enumerate() {
            let mut sql = Sql::new(
                "INSERT INTO shards (job_id, idx, kind, range_start, range_end, status, \
                 max_attempts, updated_at) VALUES ",
            );
            for (i, shard) in chunk.iter().enumerate() {
                let idx = (chunk_no * 200 + i) as i64;
                sql.push(if i == 0 { "(" } else { ", (" })
                    .bind(id.clone())
                    .push(", ")
                    .bind(idx)
                    .push(", ")
                    .bind(shard.kind.as_str())
                    .push(", ")
                    .bind(shard.start)
                    .push(", ")
                    .bind(shard.end)
                    .push(", 'queued', ")
                    .bind(i64::from(job.max_attempts.get()))
                    .push(", ")
                    .bind(now)
                    .push(")");
            }
            sql.query().execute(&mut *tx).await?;
        }
        let mut read = Sql::new("SELECT ");
        read.push(JOB_COLUMNS)
            .push(" FROM jobs WHERE id = ")
            .bind(id.clone());
        let row = read.query().fetch_one(&mut *tx).await?;
        let created = job_from_row(&row)?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn get_job(&self, kind: JobKind, id: &str) -> StoreResult<Option<Job>> {
        let mut sql = Sql::new("SELECT ");
        sql.push(JOB_COLUMNS)
            .push(" FROM jobs WHERE id = ")
            .bind(id.to_string())
            .push(" AND kind = ")
            .bind(kind.as_str());
        let row = sql.query().fetch_optional(&self.pool).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Jobs newest first; each without its report (`summary` says its headline).
    pub async fn list_jobs(&self, filter: JobFilter) -> StoreResult<Page<Job>> {
        let mut sql = Sql::new("SELECT ");
        sql.push(LISTED_JOB_COLUMNS)
            .push(" FROM jobs WHERE kind = ")
            .bind(filter.kind.as_str());
        if let Some(status) = filter.status {
            sql.push(" AND status = ").bind(status.as_str());
        }
        if let Some(name) = filter.name {
            sql.push(" AND name = ").bind(name);
        }
        if let Some(cursor) = filter.page.cursor {
            sql.push(" AND id < ").bind(cursor);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .bind(filter.page.limit + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(job_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, filter.page.limit, |j| j.id.clone()))
    }

    /// Cancels a queued or running job; a finished one is a [`StoreError::Conflict`].
    pub async fn cancel_job(&self, kind: JobKind, id: &str) -> StoreResult<Job> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // The shard rows first, then the job's: the order every worker's write takes them in.
        // The other order deadlocked on Postgres against a worker storing instances (shard
        // row, then the job's progress), which aborted the cancel.
        sqlx::query(
            "UPDATE shards SET status = 'cancelled', lease_until = NULL, updated_at = $1 \
             WHERE job_id = $2 AND status IN ('queued', 'running') AND EXISTS (SELECT 1 FROM \
             jobs WHERE id = $2 AND kind = $3 AND status IN ('queued', 'running'))",
        )
        .bind(now)
        .bind(id)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
        let updated = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND kind = $3 AND status IN ('queued', 'running')",
        )
        .bind(now)
        .bind(id)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 1 {
            tx.commit().await?;
        } else {
            // Finished meanwhile: nothing of it changes.
            tx.rollback().await?;
        }
        let job = self
            .get_job(kind, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{} {id}", kind.as_str())))?;
        if updated == 0 {
            return Err(StoreError::Conflict(format!(
                "{} {id} has finished ({}) and cannot be cancelled",
                kind.as_str(),
                job.status.as_str()
            )));
        }
        Ok(job)
    }

    /// Stores the report of a cancelled or failed job, once (false when it already has one or
    /// is not such a job).
    pub async fn store_final_report(
        &self,
        id: &str,
        report: &Document,
        summary: &Document,
    ) -> StoreResult<bool> {
        let stored = sqlx::query(
            "UPDATE jobs SET report = $1, summary = $2 \
             WHERE id = $3 AND status IN ('cancelled', 'failed') AND report IS NULL",
        )
        .bind(report.text().to_string())
        .bind(summary.text().to_string())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(stored == 1)
    }

    pub async fn queue_stats(&self) -> StoreResult<QueueStats> {
        let rows =
            sqlx::query("SELECT kind, status, COUNT(*) AS n FROM jobs GROUP BY kind, status")
                .fetch_all(&self.pool)
                .await?;
        let mut stats = QueueStats::default();
        for row in &rows {
            let kind: String = row.try_get("kind")?;
            let status: String = row.try_get("status")?;
            if let (Some(kind), Some(status)) = (
                kind.parse::<JobKind>().ok(),
                status.parse::<JobStatus>().ok(),
            ) {
                stats.jobs.push((kind, status, row.try_get("n")?));
            }
        }
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM shards \
             WHERE status IN ('queued', 'running') GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            match status.as_str() {
                "queued" => stats.queued_shards = n,
                _ => stats.running_shards = n,
            }
        }
        Ok(stats)
    }
}
