//! Recorded runs: one model's per-sample results from lm-evaluation-harness, stored to be
//! compared with another run or with a model, without running the recorded model again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::datasets::{JSONL_TYPES, PageParams, optional_text};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiQuery, Body, require_media_type};
use super::jobs::page_request;
use crate::evaluation::{LISTING_METRIC, parse_listing};
use crate::lmeval::{parse_samples, recorded_rows, rows_of};
use crate::store::{NewPredictions, Predictions};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_predictions, list_predictions))
        .routes(routes!(get_predictions))
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
pub enum PredictionsFormat {
    /// An lm-evaluation-harness `samples_<task>_<date>.jsonl` (`--log_samples`).
    #[default]
    #[serde(rename = "lm-eval")]
    LmEval,
    /// muscle's own instance listing (GET .../instances as JSON lines, or
    /// `muscle eval --instances`): the `side` of that evaluation becomes the recorded run.
    #[serde(rename = "muscle")]
    Muscle,
}

impl PredictionsFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::LmEval => "lm-eval",
            Self::Muscle => "muscle",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListingSide {
    Old,
    #[default]
    New,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// A name for the run (default: the start of its SHA-256).
    pub name: Option<String>,
    /// `lm-eval` (the default) or `muscle`.
    #[param(inline)]
    pub format: Option<PredictionsFormat>,
    /// `muscle` format: which side of the listed evaluation is the run (default `new`).
    #[param(inline)]
    pub side: Option<ListingSide>,
    /// The harness task the file is of (its file name says: samples_<task>_<date>.jsonl).
    pub task: Option<String>,
    /// The model that was run, as you want it shown.
    pub model: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PredictionsPage {
    pub items: Vec<Predictions>,
    pub next_cursor: Option<String>,
}

/// Upload one model's recorded run; every line is validated before anything is stored.
#[utoipa::path(
    post,
    path = "/predictions",
    tag = "predictions",
    params(UploadParams),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "The lines of an lm-evaluation-harness samples file, or (format=muscle) of a muscle instance listing"),
    responses(
        (status = 201, description = "Stored", body = Predictions),
        (status = 200, description = "The same content was already stored under this name: that run", body = Predictions),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON lines", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad lines, each with its line number and field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn upload_predictions(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<UploadParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Predictions>)> {
    require_media_type(&headers, JSONL_TYPES)?;
    let format = params.format.unwrap_or_default();
    let task = optional_text(params.task, "task")?;
    let model = optional_text(params.model, "model")?;
    let invalid = |errors: Vec<crate::validation::FieldError>| {
        let detail = format!(
            "the file has {} bad line(s); nothing was stored",
            errors.len()
        );
        ApiError::invalid(detail, errors)
    };
    let (kind, filters, metrics, rows) = match format {
        PredictionsFormat::LmEval => {
            let file = parse_samples(&body).map_err(invalid)?;
            let kind = file.kind.dataset_kind();
            let rows = recorded_rows(&file);
            (kind, file.filters, file.metrics, rows)
        }
        PredictionsFormat::Muscle => {
            let side = match params.side.unwrap_or_default() {
                ListingSide::Old => "old",
                ListingSide::New => "new",
            };
            let (kind, instances) = parse_listing(&body, side).map_err(invalid)?;
            (
                kind,
                vec!["none".to_string()],
                vec![LISTING_METRIC.to_string()],
                rows_of(&instances),
            )
        }
    };
    let sha256 = hex::encode(Sha256::digest(&body));
    let name = match optional_text(params.name, "name")? {
        Some(name) => name,
        None => sha256[..12].to_string(),
    };
    if let Some(existing) = state
        .store
        .predictions_named(&name, 10)
        .await?
        .into_iter()
        .find(|p| p.sha256 == sha256)
    {
        return Ok((StatusCode::OK, Json(existing)));
    }
    let stored = state
        .store
        .insert_predictions(
            &NewPredictions {
                name,
                format: format.as_str().into(),
                task,
                kind,
                filters,
                metrics,
                model,
                sha256,
            },
            &rows,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// List recorded runs, newest first.
#[utoipa::path(
    get,
    path = "/predictions",
    tag = "predictions",
    params(PageParams),
    responses(
        (status = 200, body = PredictionsPage),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_predictions(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<PredictionsPage>> {
    let page = state
        .store
        .list_predictions(page_request(params.limit, params.cursor)?)
        .await?;
    Ok(Json(PredictionsPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// One recorded run.
#[utoipa::path(
    get,
    path = "/predictions/{id}",
    tag = "predictions",
    params(("id" = String, Path, description = "Recorded run id")),
    responses(
        (status = 200, body = Predictions),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_predictions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Predictions>> {
    state
        .store
        .get_predictions(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no recorded run with id {id:?}")))
}
