use sqlx::any::{Any, AnyRow};
use sqlx::{Row, Transaction};

use super::datasets::paginate;
use super::queue::Touch;
use super::*;
use crate::domain::InstanceSampled;
use crate::metrics::Verdict;

const ROWS_PER_INSERT: usize = 200;

fn instance_from_row(job_id: &str, row: &AnyRow) -> StoreResult<InstanceRecord> {
    let id: String = row.try_get("instance_id")?;
    let corrupt = |column: &str, error: String| {
        StoreError::Corrupt(format!(
            "instance {id:?} of job {job_id}: {column}: {error}"
        ))
    };
    let flip: String = row.try_get("flip")?;
    let flip = flip
        .parse::<Flip>()
        .map_err(|_| corrupt("flip", format!("{flip:?} is not a flip")))?;
    let tags = json_column(row, "tags").map_err(|e| corrupt("tags", e))?;
    let old = json_column(row, "old_side").map_err(|e| corrupt("old_side", e))?;
    let new = json_column(row, "new_side").map_err(|e| corrupt("new_side", e))?;
    let verdict: Option<String> = row.try_get("verdict")?;
    let q_value: Option<f64> = row.try_get("q_value")?;
    let sampled = match (verdict, q_value) {
        (Some(verdict), Some(q_value)) => Some(InstanceSampled {
            verdict: verdict
                .parse::<Verdict>()
                .map_err(|_| corrupt("verdict", format!("{verdict:?} is not a verdict")))?,
            q_value,
        }),
        _ => None,
    };
    Ok(InstanceRecord {
        idx: row.try_get("idx")?,
        id,
        flip,
        gold: row.try_get("gold")?,
        tags,
        old,
        new,
        slices: Vec::new(),
        sampled,
    })
}

fn json_column<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T, String> {
    let text: String = row.try_get(column).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

impl Store {
    /// Stores per-instance rows and progress, fenced on the claim: a stale attempt writes nothing.
    pub async fn write_instances(
        &self,
        fence: &Fence,
        rows: &[InstanceRecord],
        done: i64,
    ) -> StoreResult<LeaseState> {
        let touch = Touch {
            lease_ms: None,
            done: Some(done),
            checkpoint: None,
        };
        let mut tx = self.pool.begin().await?;
        if !self.touch(&mut tx, fence, touch).await? {
            tx.rollback().await?;
            return self.miss_state(fence).await;
        }
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = Sql::new(
                "INSERT INTO instances (job_id, idx, instance_id, flip, gold, tags, old_side, new_side, \
                 shard_idx, attempt) VALUES ",
            );
            for (i, row) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" })
                    .bind(fence.job_id.clone())
                    .push(", ")
                    .bind(row.idx)
                    .push(", ")
                    .bind(row.id.clone())
                    .push(", ")
                    .bind(row.flip.as_str())
                    .push(", ")
                    .bind(row.gold)
                    .push(", ")
                    .bind(to_json_text(&row.tags))
                    .push(", ")
                    .bind(to_json_text(&row.old))
                    .push(", ")
                    .bind(to_json_text(&row.new))
                    .push(", ")
                    .bind(fence.shard)
                    .push(", ")
                    .bind(fence.attempt)
                    .push(")");
            }
            // A reclaimed shard rewrites the rows an earlier attempt stored: one row per instance.
            sql.push(
                " ON CONFLICT (job_id, idx) DO UPDATE SET instance_id = excluded.instance_id, \
                 flip = excluded.flip, gold = excluded.gold, tags = excluded.tags, old_side = excluded.old_side, \
                 new_side = excluded.new_side, shard_idx = excluded.shard_idx, \
                 attempt = excluded.attempt",
            );
            sql.query().execute(&mut *tx).await?;
        }
        let slices: Vec<(i64, &String)> = rows
            .iter()
            .flat_map(|row| row.slices.iter().map(move |slice| (row.idx, slice)))
            .collect();
        for chunk in slices.chunks(ROWS_PER_INSERT * 2) {
            let mut sql = Sql::new("INSERT INTO instance_slices (job_id, idx, slice) VALUES ");
            for (i, (idx, slice)) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" })
                    .bind(fence.job_id.clone())
                    .push(", ")
                    .bind(*idx)
                    .push(", ")
                    .bind((*slice).clone())
                    .push(")");
            }
            sql.push(" ON CONFLICT DO NOTHING");
            sql.query().execute(&mut *tx).await?;
        }
        Self::refresh_progress(&mut tx, &fence.job_id).await?;
        tx.commit().await?;
        Ok(LeaseState::Held)
    }

    pub async fn list_instances(
        &self,
        job_id: &str,
        filter: &InstanceFilter,
    ) -> StoreResult<Page<InstanceRecord>> {
        let mut sql = Sql::new(
            "SELECT i.idx, i.instance_id, i.flip, i.gold, i.tags, i.old_side, i.new_side, \
             i.verdict, i.q_value FROM instances i WHERE i.job_id = ",
        );
        sql.bind(job_id.to_string());
        if let Some(flip) = &filter.flip {
            sql.push(" AND i.flip = ").bind(flip.as_str());
        }
        if let Some(verdict) = filter.verdict {
            sql.push(" AND i.verdict = ").bind(verdict.as_str());
        }
        if let Some(slice) = &filter.slice {
            sql.push(
                " AND EXISTS (SELECT 1 FROM instance_slices s \
                 WHERE s.job_id = i.job_id AND s.idx = i.idx AND s.slice = ",
            )
            .bind(slice.clone())
            .push(")");
        }
        if let Some(cursor) = &filter.page.cursor {
            let after: i64 = cursor
                .parse()
                .map_err(|_| StoreError::Config(format!("invalid cursor {cursor:?}")))?;
            sql.push(" AND i.idx > ").bind(after);
        }
        sql.push(" ORDER BY i.idx LIMIT ")
            .bind(filter.page.limit + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|row| instance_from_row(job_id, row))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, filter.page.limit, |r| r.idx.to_string()))
    }

    /// Stores each instance's reliable change (in the finalize shard's transaction).
    pub(super) async fn write_verdicts(
        tx: &mut Transaction<'static, Any>,
        job_id: &str,
        verdicts: &[InstanceVerdict],
    ) -> StoreResult<()> {
        for chunk in verdicts.chunks(ROWS_PER_INSERT) {
            let mut sql = Sql::new("WITH v (idx, verdict, q_value) AS (VALUES ");
            for (i, v) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" })
                    .bind(v.idx)
                    .push(", ")
                    .bind(v.verdict.as_str())
                    .push(", ")
                    .bind(v.q_value)
                    .push(")");
            }
            sql.push(
                ") UPDATE instances SET verdict = v.verdict, q_value = v.q_value FROM v \
                 WHERE instances.job_id = ",
            )
            .bind(job_id.to_string())
            .push(" AND instances.idx = v.idx");
            sql.query().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Dataset indices in `start..end` whose instance rows are already stored (a reclaimed shard
    /// skips them).
    pub async fn instance_indices(
        &self,
        job_id: &str,
        start: i64,
        end: i64,
    ) -> StoreResult<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT idx FROM instances WHERE job_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
        )
        .bind(job_id.to_string())
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| row.try_get::<i64, _>("idx").map_err(StoreError::from))
            .collect()
    }
}
