//! Recorded runs (lm-eval samples files): stored whole in one transaction, read by filter.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::datasets::paginate;
use super::*;
use crate::time::rfc3339;

const ROWS_PER_INSERT: usize = 500;
const COLUMNS: &str =
    "id, name, format, task, kind, row_count, filters, metrics, model, sha256, created_at";

fn names(row: &AnyRow, column: &str) -> StoreResult<Vec<String>> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn predictions_from_row(row: &AnyRow) -> StoreResult<Predictions> {
    let kind: String = row.try_get("kind")?;
    Ok(Predictions {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        format: row.try_get("format")?,
        task: row.try_get("task")?,
        kind: kind
            .parse::<DatasetKind>()
            .ok()
            .ok_or_else(|| StoreError::Corrupt(format!("predictions kind {kind:?}")))?,
        rows: row.try_get("row_count")?,
        filters: names(row, "filters")?,
        metrics: names(row, "metrics")?,
        model: row.try_get("model")?,
        sha256: row.try_get("sha256")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

impl Store {
    pub async fn insert_predictions(
        &self,
        new: &NewPredictions,
        rows: &[PredictionRow],
    ) -> StoreResult<Predictions> {
        let id = uuid::Uuid::now_v7().to_string();
        let created_at = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO predictions (id, name, format, task, kind, row_count, filters, metrics, \
             model, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(&new.format)
        .bind(new.task.clone())
        .bind(new.kind.as_str())
        .bind(rows.len() as i64)
        .bind(serde_json::to_string(&new.filters).expect("strings serialise"))
        .bind(serde_json::to_string(&new.metrics).expect("strings serialise"))
        .bind(new.model.clone())
        .bind(&new.sha256)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = Sql::new(
                "INSERT INTO prediction_rows (prediction_id, idx, doc_id, filter, body) VALUES ",
            );
            for (i, row) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" })
                    .bind(id.clone())
                    .push(", ")
                    .bind(row.idx)
                    .push(", ")
                    .bind(row.doc_id.clone())
                    .push(", ")
                    .bind(row.filter.clone())
                    .push(", ")
                    .bind(row.json().to_string())
                    .push(")");
            }
            sql.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Predictions {
            id,
            name: new.name.clone(),
            format: new.format.clone(),
            task: new.task.clone(),
            kind: new.kind,
            rows: rows.len() as i64,
            filters: new.filters.clone(),
            metrics: new.metrics.clone(),
            model: new.model.clone(),
            sha256: new.sha256.clone(),
            created_at: rfc3339(created_at),
        })
    }

    pub async fn get_predictions(&self, id: &str) -> StoreResult<Option<Predictions>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM predictions WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(predictions_from_row).transpose()
    }

    /// Recorded runs uploaded under `name`, newest first, at most `limit`.
    pub async fn predictions_named(&self, name: &str, limit: i64) -> StoreResult<Vec<Predictions>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM predictions WHERE name = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(name.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(predictions_from_row).collect()
    }

    pub async fn list_predictions(&self, page: PageRequest) -> StoreResult<Page<Predictions>> {
        let mut sql = Sql::new("SELECT ");
        sql.push(COLUMNS).push(" FROM predictions");
        if let Some(cursor) = &page.cursor {
            sql.push(" WHERE id < ").bind(cursor.clone());
        }
        sql.push(" ORDER BY id DESC LIMIT ").bind(page.limit + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(predictions_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |p| p.id.clone()))
    }

    /// Every stored line of a recorded run under `filter`, in file order.
    pub async fn prediction_rows(&self, id: &str, filter: &str) -> StoreResult<Vec<PredictionRow>> {
        let rows = sqlx::query(
            "SELECT idx, doc_id, filter, body FROM prediction_rows \
             WHERE prediction_id = $1 AND filter = $2 ORDER BY idx",
        )
        .bind(id.to_string())
        .bind(filter.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(prediction_row).collect()
    }

    /// The lines of a recorded run under `filter` for these doc_ids (those that exist).
    pub async fn prediction_rows_for(
        &self,
        id: &str,
        filter: &str,
        doc_ids: &[String],
    ) -> StoreResult<Vec<PredictionRow>> {
        let mut out = Vec::with_capacity(doc_ids.len());
        for chunk in doc_ids.chunks(500) {
            let mut sql = Sql::new(
                "SELECT idx, doc_id, filter, body FROM prediction_rows WHERE prediction_id = ",
            );
            sql.bind(id.to_string())
                .push(" AND filter = ")
                .bind(filter.to_string())
                .push(" AND doc_id IN (")
                .bind_list(chunk.iter().cloned())
                .push(")");
            for row in sql.query().fetch_all(&self.pool).await? {
                out.push(prediction_row(&row)?);
            }
        }
        out.sort_by_key(|r| r.idx);
        Ok(out)
    }
}

fn prediction_row(row: &AnyRow) -> StoreResult<PredictionRow> {
    PredictionRow::stored(
        row.try_get("idx")?,
        row.try_get("doc_id")?,
        row.try_get("filter")?,
        row.try_get("body")?,
    )
    .map_err(|e| StoreError::Corrupt(format!("prediction_rows.body: {e}")))
}
