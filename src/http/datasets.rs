use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiQuery, Body, require_media_type};
use super::jobs::page_request;
use crate::dataset::{DatasetFormat, parse_dataset};
use crate::store::{Dataset, NewDataset};

pub const JSONL_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/jsonl",
    "application/json-lines",
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_dataset, list_datasets))
        .routes(routes!(get_dataset))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// A name for the dataset (default: the start of its SHA-256).
    pub name: Option<String>,
    /// `muscle` (default) or `lm-eval`: a samples file written by lm-evaluation-harness with
    /// `--log_samples`, whose rendered requests become the prompts.
    #[param(inline)]
    pub format: Option<DatasetFormat>,
    /// lm-eval only: comma-separated `doc` fields whose values tag the rows (slices).
    pub slice_by: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetPage {
    pub items: Vec<Dataset>,
    pub next_cursor: Option<String>,
}

/// An optional query text (an upload's name, task, model): 1 to 200 characters when given.
pub(super) fn optional_text(value: Option<String>, field: &str) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > 200 => Err(ApiError::invalid_field(
            field,
            "must be 1 to 200 characters",
        )),
        other => Ok(other),
    }
}

/// Upload a dataset as JSON lines; every line is validated before anything is stored.
#[utoipa::path(
    post,
    path = "/datasets",
    tag = "datasets",
    params(UploadParams),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One JSON object per line: multiple choice `{id, prompt, choices, answer, tags}` or generation `{id, prompt, target | targets, tags}`; with `format=lm-eval`, the lines of an lm-evaluation-harness samples file"),
    responses(
        (status = 201, description = "Stored", body = Dataset),
        (status = 200, description = "The same content was already stored under this name: that dataset", body = Dataset),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON lines", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad lines, each with its line number and field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn upload_dataset(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<UploadParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Dataset>)> {
    require_media_type(&headers, JSONL_TYPES)?;
    let slice_by: Vec<String> = params
        .slice_by
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let format = params.format.unwrap_or_default();
    let parsed = parse_dataset(&body, format, &slice_by).map_err(|errors| {
        let detail = format!(
            "the dataset has {} bad line(s); nothing was stored",
            errors.len()
        );
        ApiError::invalid(detail, errors)
    })?;
    let name = match optional_text(params.name, "name")? {
        Some(name) => name,
        None => parsed.sha256[..12].to_string(),
    };
    // The same content under the same name is the dataset already stored: a pipeline that
    // uploads on every run gets one dataset, not one per run.
    if let Some(existing) = state
        .store
        .datasets_named(&name, 10)
        .await?
        .into_iter()
        .find(|d| d.sha256 == parsed.sha256)
    {
        return Ok((StatusCode::OK, Json(existing)));
    }
    let dataset = state
        .store
        .insert_dataset(
            &NewDataset {
                name,
                kind: parsed.kind,
                sha256: parsed.sha256,
            },
            &mut parsed.rows.iter(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(dataset)))
}

/// List datasets, newest first.
#[utoipa::path(
    get,
    path = "/datasets",
    tag = "datasets",
    params(PageParams),
    responses((status = 200, body = DatasetPage)),
    security(("bearer" = []))
)]
async fn list_datasets(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<DatasetPage>> {
    let page = state
        .store
        .list_datasets(page_request(params.limit, params.cursor)?)
        .await?;
    Ok(Json(DatasetPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// One dataset.
#[utoipa::path(
    get,
    path = "/datasets/{id}",
    tag = "datasets",
    params(("id" = String, Path, description = "Dataset id")),
    responses(
        (status = 200, body = Dataset),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_dataset(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Dataset>> {
    state
        .store
        .get_dataset(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no dataset with id {id:?}")))
}
