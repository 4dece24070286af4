//! Back-pressure: at most so many requests are handled at once and each within a deadline;
//! the rest are told to come back (503 with Retry-After) instead of piling up until the
//! database pool times out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::ApiError;

/// How long a request waits for a free slot before it is turned away.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// How long an upload waits for one of the upload slots.
const UPLOAD_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Limits {
    slots: Arc<Semaphore>,
    /// Uploads hold their whole body and its parse: few at once bound the memory they take.
    uploads: Arc<Semaphore>,
    timeout: Duration,
}

impl Limits {
    pub fn new(max_concurrent: usize, max_uploads: usize, timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            uploads: Arc::new(Semaphore::new(max_uploads.max(1))),
            timeout,
        }
    }
}

fn is_upload(request: &Request) -> bool {
    request.method() == axum::http::Method::POST
        && matches!(request.uri().path(), "/v1/datasets" | "/v1/predictions")
}

/// Health, readiness and metrics stay answerable under any load.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

pub async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let permit = match tokio::time::timeout(QUEUE_WAIT, limits.slots.clone().acquire_owned()).await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            return ApiError::busy(
                "the server is handling as many requests as it takes at once; try again",
                1,
            )
            .into_response();
        }
    };
    let upload = if is_upload(&request) {
        match tokio::time::timeout(UPLOAD_WAIT, limits.uploads.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                return ApiError::busy(
                    "as many uploads as the server takes at once are being read; try again",
                    5,
                )
                .into_response();
            }
        }
    } else {
        None
    };
    let response = match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::busy(
            format!(
                "the request took longer than {} s and was stopped; nothing is half-written \
                 (writes are transactions); try again",
                limits.timeout.as_secs()
            ),
            5,
        )
        .into_response(),
    };
    drop((permit, upload));
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app(limits: Limits) -> axum::Router {
        axum::Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "done"
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/v1/datasets",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "stored"
                })
                .get(|| async { "listed" }),
            )
            .layer(axum::middleware::from_fn_with_state(limits, limit))
    }

    fn get_request(path: &str) -> Request {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_server_answers_503_with_retry_after_and_health_still_answers() {
        let limits = Limits::new(1, 1, Duration::from_secs(60));
        let first = tokio::spawn(app(limits.clone()).oneshot(get_request("/slow")));
        tokio::task::yield_now().await;
        let second = app(limits.clone())
            .oneshot(get_request("/slow"))
            .await
            .unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()[header::RETRY_AFTER], "1");
        let health = app(limits.clone())
            .oneshot(get_request("/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_is_stopped_with_503() {
        let response = app(Limits::new(4, 1, Duration::from_secs(1)))
            .oneshot(get_request("/slow"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[tokio::test(start_paused = true)]
    async fn uploads_beyond_their_slots_are_told_to_retry_while_other_requests_pass() {
        let limits = Limits::new(8, 1, Duration::from_secs(60));
        let upload = || {
            Request::builder()
                .method("POST")
                .uri("/v1/datasets")
                .body(Body::empty())
                .unwrap()
        };
        let first = tokio::spawn(app(limits.clone()).oneshot(upload()));
        tokio::task::yield_now().await;
        let second = app(limits.clone()).oneshot(upload()).await.unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()[header::RETRY_AFTER], "5");
        let listing = app(limits.clone())
            .oneshot(get_request("/v1/datasets"))
            .await
            .unwrap();
        assert_eq!(listing.status(), StatusCode::OK);
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}
