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

use sqlx::AnyPool;

use super::*;
use crate::domain::{DatasetKind, InstanceRecord, JobKind, JobStatus, ShardKind};
use crate::metrics::Flip;
use builder::Sql;

pub struct Store {
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

impl Store {
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

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A small write: the database answers and takes writes (a full disk fails it).
    pub async fn ping(&self) -> StoreResult<()> {
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
}

pub(crate) use crate::time::now_ms;

/// Bytes the readiness probe writes: a database with less room left is not ready.
const PROBE_PAD_BYTES: usize = 256 * 1024;

fn to_json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("stored documents have only string keys")
}

fn parse_document(column: &str, text: String) -> StoreResult<Document> {
    Document::stored(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}
