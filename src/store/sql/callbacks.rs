//! Callbacks of finished jobs: due, claimed for one attempt, and recorded.

use sqlx::Row;

use super::*;

impl Store {
    /// Callbacks of finished jobs whose next attempt is due at `now` (ms), at most `limit`.
    pub async fn due_callbacks(&self, now: i64, limit: i64) -> StoreResult<Vec<DueCallback>> {
        let rows = sqlx::query(
            "SELECT c.job_id, j.kind, c.url, c.secret_env, c.attempts FROM callbacks c \
             JOIN jobs j ON j.id = c.job_id \
             WHERE c.state = 'pending' AND c.next_at <= $1 \
               AND j.status IN ('succeeded', 'failed', 'cancelled') \
             ORDER BY c.next_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                Ok(DueCallback {
                    job_id: row.try_get("job_id")?,
                    kind: kind
                        .parse::<JobKind>()
                        .ok()
                        .ok_or_else(|| StoreError::Corrupt(format!("job kind {kind:?}")))?,
                    url: row.try_get("url")?,
                    secret_env: row.try_get("secret_env")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Takes the next attempt of a callback (seen with `attempts` made) for one sender, holding
    /// it until `hold_until`; false when another sender took it first.
    pub async fn claim_callback(
        &self,
        job_id: &str,
        attempts: i64,
        hold_until: i64,
    ) -> StoreResult<bool> {
        let claimed = sqlx::query(
            "UPDATE callbacks SET attempts = attempts + 1, next_at = $1 \
             WHERE job_id = $2 AND attempts = $3 AND state = 'pending'",
        )
        .bind(hold_until)
        .bind(job_id.to_string())
        .bind(attempts)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    pub async fn record_callback(
        &self,
        job_id: &str,
        attempt: &CallbackAttempt,
    ) -> StoreResult<()> {
        let query = match attempt {
            CallbackAttempt::Delivered { status } => sqlx::query(
                "UPDATE callbacks SET state = 'delivered', last_status = $1, last_error = NULL, \
                 delivered_at = $2 WHERE job_id = $3",
            )
            .bind(i64::from(*status))
            .bind(now_ms()),
            CallbackAttempt::Retry { error, next_at } => {
                sqlx::query("UPDATE callbacks SET last_error = $1, next_at = $2 WHERE job_id = $3")
                    .bind(error.clone())
                    .bind(*next_at)
            }
            CallbackAttempt::GaveUp { error } => sqlx::query(
                "UPDATE callbacks SET state = 'failed', last_error = $1 WHERE job_id = $2",
            )
            .bind(error.clone()),
        };
        query.bind(job_id.to_string()).execute(&self.pool).await?;
        Ok(())
    }
}
