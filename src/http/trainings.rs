use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiQuery, Body, require_media_type};
use super::jobs::{ListParams, WaitParams, accepted, job_after_wait, job_filter, queue};
use crate::domain::JobKind;
use crate::kinds::{Kind, Training, Trainings, submit};
use crate::spec::{TrainingSpec, parse_body};
use crate::store::StoreResult;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_training, list_trainings))
        .routes(routes!(get_training))
        .routes(routes!(cancel_training))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrainingPage {
    pub items: Vec<Training>,
    pub next_cursor: Option<String>,
}

/// Queue a training run: a task adapter, or a compatibility adapter distilled from the old and
/// new task models.
#[utoipa::path(
    post,
    path = "/trainings",
    tag = "trainings",
    request_body = TrainingSpec,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "The same key (with the same body) returns the same job")),
    responses(
        (status = 202, description = "Queued; Location names the job", body = Training),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every field at fault", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_training(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    require_media_type(&headers, &["application/json"])?;
    let spec: TrainingSpec =
        parse_body(&body).map_err(|e| ApiError::invalid("the training spec is invalid", e))?;
    let job = submit::training(&state.submitter(), spec)
        .await
        .map_err(|e| ApiError::rejected("the training spec is invalid", e))?;
    let (job, created) = queue(&state, &headers, &body, job).await?;
    Ok(accepted(
        format!("/v1/trainings/{}", job.id),
        created,
        Training::of(&job)?,
    ))
}

/// List training runs, newest first.
#[utoipa::path(
    get,
    path = "/trainings",
    tag = "trainings",
    params(ListParams),
    responses(
        (status = 200, body = TrainingPage),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_trainings(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<TrainingPage>> {
    let page = state
        .store
        .list_jobs(job_filter(JobKind::Training, params)?)
        .await?;
    Ok(Json(TrainingPage {
        items: page
            .items
            .iter()
            .map(Training::of)
            .collect::<StoreResult<_>>()?,
        next_cursor: page.next_cursor,
    }))
}

/// One training run: progress, loss history, best epoch, written adapter.
#[utoipa::path(
    get,
    path = "/trainings/{id}",
    tag = "trainings",
    params(("id" = String, Path, description = "Training id"), WaitParams),
    responses(
        (status = 200, body = Training),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "wait out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_training(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
) -> ApiResult<Json<Training>> {
    let job = job_after_wait(&state, JobKind::Training, &id, params.wait).await?;
    Ok(Json(Trainings::document(&state.readers(), &job).await?))
}

/// Cancel a queued or running training; the worker stops at the next step.
#[utoipa::path(
    post,
    path = "/trainings/{id}/cancel",
    tag = "trainings",
    params(("id" = String, Path, description = "Training id")),
    responses(
        (status = 200, description = "Cancelled", body = Training),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn cancel_training(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Training>> {
    let job = state.store.cancel_job(JobKind::Training, &id).await?;
    Ok(Json(Training::of(&job)?))
}
