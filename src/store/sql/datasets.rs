use sqlx::Row;
use sqlx::any::AnyRow;

use super::*;
use crate::time::rfc3339;

const ROWS_PER_INSERT: usize = 500;

fn dataset_from_row(row: &AnyRow) -> StoreResult<Dataset> {
    let kind: String = row.try_get("kind")?;
    Ok(Dataset {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        rows: row.try_get("row_count")?,
        kind: kind
            .parse::<DatasetKind>()
            .ok()
            .ok_or_else(|| StoreError::Corrupt(format!("dataset kind {kind:?}")))?,
        sha256: row.try_get("sha256")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

impl Store {
    /// Stores a dataset and its rows in one transaction, taking the rows as they come.
    pub async fn insert_dataset(
        &self,
        dataset: &NewDataset,
        rows: &mut (dyn Iterator<Item = DatasetRow> + Send),
    ) -> StoreResult<Dataset> {
        let id = uuid::Uuid::now_v7().to_string();
        let created_at = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO datasets (id, name, kind, row_count, sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&dataset.name)
        .bind(dataset.kind.as_str())
        .bind(0_i64)
        .bind(&dataset.sha256)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        let mut count = 0_i64;
        loop {
            let chunk: Vec<DatasetRow> = (&mut *rows).take(ROWS_PER_INSERT).collect();
            if chunk.is_empty() {
                break;
            }
            count += chunk.len() as i64;
            let mut sql =
                Sql::new("INSERT INTO dataset_rows (dataset_id, idx, row_id, body) VALUES ");
            for (i, row) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" })
                    .bind(id.clone())
                    .push(", ")
                    .bind(row.idx)
                    .push(", ")
                    .bind(row.id.clone())
                    .push(", ")
                    .bind(row.json().to_string())
                    .push(")");
            }
            sql.query().execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE datasets SET row_count = $1 WHERE id = $2")
            .bind(count)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Dataset {
            id,
            name: dataset.name.clone(),
            rows: count,
            kind: dataset.kind,
            sha256: dataset.sha256.clone(),
            created_at: rfc3339(created_at),
        })
    }

    pub async fn get_dataset(&self, id: &str) -> StoreResult<Option<Dataset>> {
        let row = sqlx::query(
            "SELECT id, name, kind, row_count, sha256, created_at FROM datasets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(dataset_from_row).transpose()
    }

    /// Datasets uploaded under `name`, newest first, at most `limit`.
    pub async fn datasets_named(&self, name: &str, limit: i64) -> StoreResult<Vec<Dataset>> {
        let rows = sqlx::query(
            "SELECT id, name, kind, row_count, sha256, created_at FROM datasets \
             WHERE name = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dataset_from_row).collect()
    }

    pub async fn list_datasets(&self, page: PageRequest) -> StoreResult<Page<Dataset>> {
        let mut sql =
            Sql::new("SELECT id, name, kind, row_count, sha256, created_at FROM datasets");
        if let Some(cursor) = &page.cursor {
            sql.push(" WHERE id < ").bind(cursor.clone());
        }
        sql.push(" ORDER BY id DESC LIMIT ").bind(page.limit + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(dataset_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |d| d.id.clone()))
    }

    /// Rows `start..end` of a dataset in order.
    pub async fn dataset_rows(
        &self,
        id: &str,
        start: i64,
        end: i64,
    ) -> StoreResult<Vec<DatasetRow>> {
        let rows = sqlx::query(
            "SELECT idx, row_id, body FROM dataset_rows \
             WHERE dataset_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
        )
        .bind(id)
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dataset_row).collect()
    }

    /// The rows of a dataset at these positions (those that exist), in order.
    pub async fn dataset_rows_at(&self, id: &str, indices: &[i64]) -> StoreResult<Vec<DatasetRow>> {
        let mut out = Vec::with_capacity(indices.len());
        // A bounded number of placeholders per statement, whatever the page size.
        for chunk in indices.chunks(500) {
            let mut sql =
                Sql::new("SELECT idx, row_id, body FROM dataset_rows WHERE dataset_id = ");
            sql.bind(id.to_string())
                .push(" AND idx IN (")
                .bind_list(chunk.iter().copied())
                .push(") ORDER BY idx");
            for row in sql.query().fetch_all(&self.pool).await? {
                out.push(dataset_row(&row)?);
            }
        }
        out.sort_by_key(|r| r.idx);
        Ok(out)
    }
}

fn dataset_row(row: &sqlx::any::AnyRow) -> StoreResult<DatasetRow> {
    DatasetRow::stored(
        row.try_get("idx")?,
        row.try_get("row_id")?,
        row.try_get("body")?,
    )
    .map_err(|e| StoreError::Corrupt(format!("dataset_rows.body: {e}")))
}

/// Cuts a page fetched with `limit + 1` rows: the extra row only says that more exist.
pub(super) fn paginate<T>(
    mut items: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}
