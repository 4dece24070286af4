//! The queue: claims under leases, heartbeats, and completion writes fenced on the attempt.
//!
//! Every transaction here starts with a write, so SQLite takes its write lock first instead of
//! failing a read-to-write upgrade under contention.

use sqlx::any::Any;
use sqlx::{Row, Transaction};

use super::*;

/// Takes the oldest runnable shard: queued, or running under an expired lease, with attempts
/// left, of a job still queued or running. A job's finalize shard waits for all its work shards.
pub(super) fn claim_sql(now_ms: &str, skip_locked: &str) -> String {
    format!(
        "UPDATE shards SET status = 'running', attempt = attempt + 1, worker_id = $1, \
         lease_until = {now_ms} + $2, updated_at = $3 \
         WHERE (job_id, idx) = (SELECT s.job_id, s.idx FROM shards s \
           WHERE (s.status = 'queued' OR (s.status = 'running' AND s.lease_until < {now_ms})) \
             AND s.attempt - s.released < s.max_attempts \
             AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = s.job_id \
                         AND j.status IN ('queued', 'running')) \
             AND (s.kind = 'work' OR NOT EXISTS (SELECT 1 FROM shards w \
                  WHERE w.job_id = s.job_id AND w.kind = 'work' AND w.status <> 'succeeded')) \
           ORDER BY s.job_id, s.idx LIMIT 1{skip_locked}) \
         RETURNING job_id, idx, kind, range_start, range_end, attempt, done, checkpoint"
    )
}

/// Fails shards whose lease expired with no attempts left.
pub(super) fn sweep_sql(now_ms: &str) -> String {
    format!(
        "UPDATE shards SET status = 'failed', lease_until = NULL, worker_id = NULL, \
         updated_at = $1, error = 'its worker stopped renewing the lease on each of ' \
           || CAST(attempt - released AS TEXT) || ' attempts' \
         WHERE status = 'running' AND lease_until < {now_ms} \
           AND attempt - released >= max_attempts \
         RETURNING job_id, idx, error"
    )
}

/// Touches a claimed shard if the claim still holds: optionally extends the lease ($1 ms),
/// records progress ($2) and a checkpoint ($3).
pub(super) fn fence_sql(now_ms: &str) -> String {
    format!(
        "UPDATE shards SET lease_until = COALESCE({now_ms} + $1, lease_until), \
         done = COALESCE($2, done), checkpoint = COALESCE($3, checkpoint), updated_at = $4 \
         WHERE job_id = $5 AND idx = $6 AND attempt = $7 AND status = 'running'"
    )
}

pub(super) struct Touch {
    pub lease_ms: Option<i64>,
    pub done: Option<i64>,
    pub checkpoint: Option<String>,
}

impl Store {
    /// Runs the fence update inside `tx`; false when the claim no longer holds.
    pub(super) async fn touch(
        &self,
        tx: &mut Transaction<'static, Any>,
        fence: &Fence,
        touch: Touch,
    ) -> StoreResult<bool> {
        let affected = sqlx::query_with(
            sqlx::AssertSqlSafe(self.dialect.fence.clone()),
            sqlx::any::AnyArguments::default(),
        )
        .bind(touch.lease_ms)
        .bind(touch.done)
        .bind(touch.checkpoint)
        .bind(now_ms())
        .bind(fence.job_id.clone())
        .bind(fence.shard)
        .bind(fence.attempt)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(affected == 1)
    }

    /// Why a fenced write matched nothing: the job was cancelled, or another attempt owns the
    /// shard (or it expired and was failed).
    pub(super) async fn miss_state(&self, fence: &Fence) -> StoreResult<LeaseState> {
        let status: Option<String> = sqlx::query("SELECT status FROM jobs WHERE id = $1")
            .bind(fence.job_id.clone())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("status"))
            .transpose()?;
        Ok(match status.as_deref() {
            Some("cancelled") => LeaseState::Cancelled,
            _ => LeaseState::Lost,
        })
    }

    pub(super) async fn refresh_progress(
        tx: &mut Transaction<'static, Any>,
        job_id: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET progress_done = (SELECT CAST(COALESCE(SUM(done), 0) AS BIGINT) \
             FROM shards WHERE job_id = $1 AND kind = 'work'), updated_at = $2 WHERE id = $1",
        )
        .bind(job_id.to_string())
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn fail_job(
        tx: &mut Transaction<'static, Any>,
        job_id: &str,
        error: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2, updated_at = $2 \
             WHERE id = $3 AND status IN ('queued', 'running')",
        )
        .bind(error.to_string())
        .bind(now)
        .bind(job_id.to_string())
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE shards SET status = 'cancelled', lease_until = NULL, updated_at = $1 \
             WHERE job_id = $2 AND status IN ('queued', 'running')",
        )
        .bind(now)
        .bind(job_id.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Claims one runnable shard under a lease, or returns None when the queue is empty.
    /// Expired leases are reclaimed here; shards out of attempts fail their job.
    pub async fn claim(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Claim>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let exhausted = sqlx::query_with(
            sqlx::AssertSqlSafe(self.dialect.sweep.clone()),
            sqlx::any::AnyArguments::default(),
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for row in &exhausted {
            let job_id: String = row.try_get("job_id")?;
            let idx: i64 = row.try_get("idx")?;
            let error: String = row.try_get("error")?;
            tracing::warn!(job.id = %job_id, shard = idx, "{error}");
            Self::fail_job(&mut tx, &job_id, &format!("shard {idx} failed: {error}")).await?;
        }
        let claimed = sqlx::query_with(
            sqlx::AssertSqlSafe(self.dialect.claim.clone()),
            sqlx::any::AnyArguments::default(),
        )
        .bind(worker_id.to_string())
        .bind(lease_ms(lease))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = claimed else {
            tx.commit().await?;
            return Ok(None);
        };
        let job_id: String = row.try_get("job_id")?;
        sqlx::query(
            "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, $1), \
             updated_at = $1 WHERE id = $2 AND status = 'queued'",
        )
        .bind(now)
        .bind(job_id.clone())
        .execute(&mut *tx)
        .await?;
        let job = sqlx::query("SELECT kind, spec FROM jobs WHERE id = $1")
            .bind(job_id.clone())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;

        let job_kind: String = job.try_get("kind")?;
        let shard_kind: String = row.try_get("kind")?;
        let spec: String = job.try_get("spec")?;
        let checkpoint: Option<String> = row.try_get("checkpoint")?;
        Ok(Some(Claim {
            fence: Fence {
                job_id,
                shard: row.try_get("idx")?,
                attempt: row.try_get("attempt")?,
            },
            job_kind: job_kind
                .parse::<JobKind>()
                .ok()
                .ok_or_else(|| StoreError::Corrupt(format!("job kind {job_kind:?}")))?,
            shard_kind: shard_kind
                .parse::<ShardKind>()
                .ok()
                .ok_or_else(|| StoreError::Corrupt(format!("shard kind {shard_kind:?}")))?,
            start: row.try_get("range_start")?,
            end: row.try_get("range_end")?,
            done: row.try_get("done")?,
            checkpoint: checkpoint
                .map(|c| parse_document("checkpoint", c))
                .transpose()?,
            spec: parse_document("spec", spec)?,
        }))
    }

    /// Runs `touch` in a transaction with `then` after it when the claim holds.
    async fn fenced<F>(&self, fence: &Fence, touch: Touch, then: F) -> StoreResult<LeaseState>
    where
        F: for<'t> FnOnce(
                &'t mut Transaction<'static, Any>,
            ) -> futures::future::BoxFuture<'t, StoreResult<()>>
            + Send,
    {
        let mut tx = self.pool.begin().await?;
        if !self.touch(&mut tx, fence, touch).await? {
            tx.rollback().await?;
            return self.miss_state(fence).await;
        }
        then(&mut tx).await?;
        tx.commit().await?;
        Ok(LeaseState::Held)
    }

    /// Extends the lease and records progress (instances done within the shard).
    pub async fn heartbeat(
        &self,
        fence: &Fence,
        done: i64,
        lease: Duration,
    ) -> StoreResult<LeaseState> {
        let touch = Touch {
            lease_ms: Some(lease_ms(lease)),
            done: Some(done),
            checkpoint: None,
        };
        let job_id = fence.job_id.clone();
        self.fenced(fence, touch, move |tx| {
            Box::pin(async move { Self::refresh_progress(tx, &job_id).await })
        })
        .await
    }

    /// Stores an opaque checkpoint that a later attempt of the same shard resumes from.
    pub async fn save_checkpoint(
        &self,
        fence: &Fence,
        checkpoint: &Document,
    ) -> StoreResult<LeaseState> {
        let touch = Touch {
            lease_ms: None,
            done: None,
            checkpoint: Some(checkpoint.text().to_string()),
        };
        self.fenced(fence, touch, |_| Box::pin(async { Ok(()) }))
            .await
    }

    /// Marks the shard done; the final shard also finishes the job with its report or result.
    pub async fn complete_shard(
        &self,
        fence: &Fence,
        completion: &Completion,
    ) -> StoreResult<LeaseState> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let finished = sqlx::query(
            "UPDATE shards SET status = 'succeeded', lease_until = NULL, updated_at = $1 \
             WHERE job_id = $2 AND idx = $3 AND attempt = $4 AND status = 'running' \
             RETURNING kind",
        )
        .bind(now)
        .bind(fence.job_id.clone())
        .bind(fence.shard)
        .bind(fence.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = finished else {
            tx.rollback().await?;
            return self.miss_state(fence).await;
        };
        let kind: String = row.try_get("kind")?;
        if kind == ShardKind::Finalize.as_str() {
            Self::write_verdicts(&mut tx, &fence.job_id, &completion.verdicts).await?;
            sqlx::query(
                "UPDATE jobs SET status = 'succeeded', report = $1, result = $2, summary = $5, \
                 progress_done = progress_total, finished_at = $3, updated_at = $3 \
                 WHERE id = $4 AND status = 'running'",
            )
            .bind(completion.report.as_ref().map(|d| d.text().to_string()))
            .bind(completion.result.as_ref().map(|d| d.text().to_string()))
            .bind(now)
            .bind(fence.job_id.clone())
            .bind(completion.summary.as_ref().map(|d| d.text().to_string()))
            .execute(&mut *tx)
            .await?;
        } else {
            Self::refresh_progress(&mut tx, &fence.job_id).await?;
        }
        tx.commit().await?;
        if kind == ShardKind::Finalize.as_str() && self.backend == Backend::Postgres {
            // A job's rows arrive in bulk, long before autovacuum's next look: without fresh
            // statistics the planner picks seconds-long plans for the filtered listings.
            if let Err(error) = sqlx::query("ANALYZE instances, instance_slices")
                .execute(&self.pool)
                .await
            {
                tracing::warn!(%error, "ANALYZE after a finished job failed");
            }
        }
        Ok(LeaseState::Held)
    }

    /// Records a failure: the shard is queued again while attempts remain and `retry` is set,
    /// otherwise it fails and so does its job.
    pub async fn fail_shard(
        &self,
        fence: &Fence,
        error: &str,
        retry: bool,
    ) -> StoreResult<LeaseState> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE shards SET status = CASE WHEN $1 = 1 AND attempt - released < max_attempts \
               THEN 'queued' ELSE 'failed' END, \
             error = $2, lease_until = NULL, worker_id = NULL, updated_at = $3 \
             WHERE job_id = $4 AND idx = $5 AND attempt = $6 AND status = 'running' \
             RETURNING status",
        )
        .bind(i64::from(retry))
        .bind(error.to_string())
        .bind(now_ms())
        .bind(fence.job_id.clone())
        .bind(fence.shard)
        .bind(fence.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return self.miss_state(fence).await;
        };
        let status: String = row.try_get("status")?;
        if status == "failed" {
            let message = format!("shard {} failed: {error}", fence.shard);
            Self::fail_job(&mut tx, &fence.job_id, &message).await?;
        }
        tx.commit().await?;
        Ok(LeaseState::Held)
    }

    /// Gives the shard back to the queue without counting the attempt (graceful shutdown).
    pub async fn release_shard(&self, fence: &Fence) -> StoreResult<LeaseState> {
        let released = sqlx::query(
            "UPDATE shards SET status = 'queued', released = released + 1, lease_until = NULL, \
             worker_id = NULL, updated_at = $1 \
             WHERE job_id = $2 AND idx = $3 AND attempt = $4 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(fence.job_id.clone())
        .bind(fence.shard)
        .bind(fence.attempt)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if released == 1 {
            Ok(LeaseState::Held)
        } else {
            self.miss_state(fence).await
        }
    }
}
