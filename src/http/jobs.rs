//! What evaluations and trainings share: creation through the queue with an Idempotency-Key,
//! listing with filters and cursors, cancel.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::domain::{JobKind, JobStatus};
use crate::store::{Idempotency, Job, JobFilter, NewJob, PageRequest};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs with exactly this name.
    pub name: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub cursor: Option<String>,
}

/// Longest `?wait=` a request may hold.
pub const MAX_WAIT_SECONDS: u64 = 60;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Hold the request up to this many seconds (at most 60) until the job leaves queued and
    /// running, then answer as usual: one request per wait instead of a polling loop.
    #[param(maximum = 60)]
    pub wait: Option<u64>,
}

/// The job `id`, after waiting up to `wait` seconds for it to finish. The store is asked again
/// every half second: a worker on any host may finish it.
pub async fn job_after_wait(
    state: &AppState,
    kind: JobKind,
    id: &str,
    wait: Option<u64>,
) -> ApiResult<Job> {
    let wait = wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::invalid_field(
            "wait",
            format!("must be from 0 to {MAX_WAIT_SECONDS} seconds"),
        ));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let job = state
            .store
            .get_job(kind, id)
            .await?
            .ok_or_else(|| not_found(kind, id))?;
        let now = tokio::time::Instant::now();
        if job.status.is_finished() || now >= deadline {
            return Ok(job);
        }
        let pause = std::time::Duration::from_millis(500).min(deadline - now);
        tokio::time::sleep(pause).await;
    }
}

/// Checks a page request; job and dataset cursors are ids.
pub fn page_request(limit: Option<i64>, cursor: Option<String>) -> ApiResult<PageRequest> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    // `?cursor=` (empty) is the first page.
    let cursor = cursor.filter(|c| !c.is_empty());
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    if let Some(cursor) = &cursor
        && uuid::Uuid::parse_str(cursor).is_err()
    {
        return Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor this API handed out",
        ));
    }
    Ok(PageRequest { limit, cursor })
}

pub fn job_filter(kind: JobKind, params: ListParams) -> ApiResult<JobFilter> {
    Ok(JobFilter {
        kind,
        status: params.status,
        name: params.name,
        page: page_request(params.limit, params.cursor)?,
    })
}

/// What an Idempotency-Key is bound to: the body's JSON with object keys sorted and no
/// insignificant whitespace, so the same document serialised another way is the same request.
fn request_hash(body: &[u8]) -> String {
    fn canonical(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    canonical(&map[key], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            let mut text = String::new();
            canonical(&value, &mut text);
            hex::encode(Sha256::digest(text.as_bytes()))
        }
        Err(_) => hex::encode(Sha256::digest(body)),
    }
}

/// Stores the job (or finds the one stored under the same Idempotency-Key).
pub async fn queue(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    mut job: NewJob,
) -> ApiResult<(Job, bool)> {
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(Idempotency {
                key: key.to_string(),
                request_hash: request_hash(body),
            })
        }
    };
    job.idempotency = idempotency;
    let created = state.store.create_job(job).await?;
    Ok((created.value, created.created))
}

/// 202 Accepted with the job's Location (also for an idempotent replay, which is marked).
pub fn accepted(location: String, created: bool, body: impl Serialize) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if !created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub fn not_found(kind: JobKind, id: &str) -> ApiError {
    ApiError::not_found(format!("no {} with id {id:?}", kind.as_str()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_document_serialised_another_way_hashes_the_same() {
        let a = super::request_hash(br#"{"b": [1, {"y": 2, "x": 1}], "a": "t"}"#);
        let b = super::request_hash(br#"{"a":"t","b":[1,{"x":1,"y":2}]}"#);
        let c = super::request_hash(br#"{"a":"t","b":[{"x":1,"y":2},1]}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
