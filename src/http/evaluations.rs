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
use super::jobs::{ListParams, WaitParams, accepted, job_after_wait, job_filter, not_found, queue};
use crate::domain::JobKind;
use crate::kinds::{Evaluation, Evaluations, Kind, submit};
use crate::spec::{EvaluationSpec, parse_body};
use crate::store::{Job, StoreResult};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_evaluation, list_evaluations))
        .routes(routes!(get_evaluation))
        .routes(routes!(cancel_evaluation))
        .merge(super::reports::router())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationPage {
    pub items: Vec<Evaluation>,
    pub next_cursor: Option<String>,
}

/// Queue an evaluation of an old and a new model on one dataset.
#[utoipa::path(
    post,
    path = "/evaluations",
    tag = "evaluations",
    request_body = EvaluationSpec,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "The same key (with the same body) returns the same job")),
    responses(
        (status = 202, description = "Queued; Location names the job", body = Evaluation),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every field at fault", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_evaluation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    require_media_type(&headers, &["application/json"])?;
    let spec: EvaluationSpec =
        parse_body(&body).map_err(|e| ApiError::invalid("the evaluation spec is invalid", e))?;
    let job = submit::evaluation(&state.submitter(), spec)
        .await
        .map_err(|e| ApiError::rejected("the evaluation spec is invalid", e))?;
    let (job, created) = queue(&state, &headers, &body, job).await?;
    Ok(accepted(
        format!("/v1/evaluations/{}", job.id),
        created,
        Evaluation::of(&job, None)?,
    ))
}

/// List evaluations, newest first.
#[utoipa::path(
    get,
    path = "/evaluations",
    tag = "evaluations",
    params(ListParams),
    responses(
        (status = 200, body = EvaluationPage),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_evaluations(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<EvaluationPage>> {
    let page = state
        .store
        .list_jobs(job_filter(JobKind::Evaluation, params)?)
        .await?;
    Ok(Json(EvaluationPage {
        items: page
            .items
            .iter()
            .map(|j| Evaluation::of(j, None))
            .collect::<StoreResult<_>>()?,
        next_cursor: page.next_cursor,
    }))
}

pub(super) async fn load(state: &AppState, id: &str) -> ApiResult<Job> {
    state
        .store
        .get_job(JobKind::Evaluation, id)
        .await?
        .ok_or_else(|| not_found(JobKind::Evaluation, id))
}

/// One evaluation with its report (partial while it runs).
#[utoipa::path(
    get,
    path = "/evaluations/{id}",
    tag = "evaluations",
    params(("id" = String, Path, description = "Evaluation id"), WaitParams),
    responses(
        (status = 200, body = Evaluation),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "wait out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_evaluation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
) -> ApiResult<Json<Evaluation>> {
    let job = job_after_wait(&state, JobKind::Evaluation, &id, params.wait).await?;
    Ok(Json(Evaluations::document(&state.readers(), &job).await?))
}

/// Cancel a queued or running evaluation; workers stop between batches.
#[utoipa::path(
    post,
    path = "/evaluations/{id}/cancel",
    tag = "evaluations",
    params(("id" = String, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "Cancelled", body = Evaluation),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn cancel_evaluation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Evaluation>> {
    let job = state.store.cancel_job(JobKind::Evaluation, &id).await?;
    Ok(Json(Evaluation::of(&job, None)?))
}
