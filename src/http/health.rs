use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use crate::stats::Stats;
use crate::store::Store;

/// The longest /readyz waits for the database: a probe gets its answer within 2 s.
const READY_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long one write probe's answer stands.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The database write probe of /readyz (a 256 KiB row), run at most once a second: callers
/// during a probe wait for its answer, and callers within the second after it get the same
/// answer, so a flood of /readyz writes nothing more (it wrote 256 KiB per call).
#[derive(Default)]
pub struct WriteProbe {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl WriteProbe {
    /// The database took a write within the last second; or why not.
    async fn check(&self, store: &Store, stats: &Stats) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < PROBE_EVERY
        {
            return result.clone();
        }
        stats.readiness_probes.inc();
        // Within 2 s, whatever the pool's own acquire timeout: a probe must not hang.
        let result = match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
            Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(())) => Ok(()),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    pub workers_configured: usize,
    pub workers_running: usize,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database takes a write (probed at most once a second, the answer shared) and the
/// configured workers are running.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = Readiness),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Readiness>> {
    let database = state.store.backend().as_str().to_string();
    let probe = state
        .readiness
        .check(state.store.as_ref(), &state.stats)
        .await;
    if let Err(error) = probe {
        tracing::warn!(%error, "readiness: database unreachable");
        return Err(ApiError::unavailable(format!(
            "the {database} database does not answer"
        )));
    }
    let running = state.workers_running.load(Ordering::SeqCst);
    if running < state.workers_configured {
        return Err(ApiError::unavailable(format!(
            "{running} of {} workers are running",
            state.workers_configured
        )));
    }
    Ok(Json(Readiness {
        status: "ready".into(),
        database,
        workers_configured: state.workers_configured,
        workers_running: running,
    }))
}

/// Prometheus text: jobs by status, queue depth, HTTP traffic, instances and tokens scored,
/// batch sizes.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let queue = state.store.queue_stats().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.stats.render(&queue),
    )
        .into_response())
}
