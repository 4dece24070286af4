//! Back-pressure: at most so many requests are handled at once and each within a deadline;
//! the rest are told to come back (503 with Retry-After) instead of piling up until the
//! database pool times out.
//!
//! A request's body is read before it takes any slot, at a pace it must keep (a grace period,
//! then a minimum average rate, as Apache's mod_reqtimeout does) and within a budget of bytes
//! buffered across all requests: a client that trickles its body holds neither a request slot
//! nor an upload slot, only the bytes it has sent, and is cut off with 408.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::ApiError;

/// How long a request waits for a free slot before it is turned away.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// How long an upload waits for one of the upload slots.
const UPLOAD_WAIT: Duration = Duration::from_secs(5);

/// The pace a request body must keep.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// Largest body (413 beyond).
    pub max_bytes: usize,
    /// Time any body may take before its rate counts.
    pub grace: Duration,
    /// Average bytes per second a body must keep after the grace period.
    pub min_bytes_per_second: u64,
}

impl Default for BodyPace {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            grace: Duration::from_secs(10),
            min_bytes_per_second: 64 * 1024,
        }
    }
}

impl BodyPace {
    /// When a body that started at `start` and holds `received` bytes must have sent more.
    fn deadline(&self, start: Instant, received: usize) -> Instant {
        let earned = received as f64 / self.min_bytes_per_second.max(1) as f64;
        start + self.grace + Duration::from_secs_f64(earned.min(1e9))
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    slots: Arc<Semaphore>,
    /// Uploads hold their whole body and its parse: few at once bound the memory they take.
    uploads: Arc<Semaphore>,
    /// Bytes of bodies buffered at once, all requests together (one permit a byte).
    buffered: Arc<Semaphore>,
    timeout: Duration,
    pace: BodyPace,
}

impl Limits {
    pub fn new(
        max_concurrent: usize,
        max_uploads: usize,
        timeout: Duration,
        pace: BodyPace,
    ) -> Self {
        // Room for as many bodies of the largest size as uploads are parsed at once.
        let budget = pace
            .max_bytes
            .max(1)
            .saturating_mul(max_uploads.max(1))
            .min(Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            uploads: Arc::new(Semaphore::new(max_uploads.max(1))),
            buffered: Arc::new(Semaphore::new(budget)),
            timeout,
            pace,
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

/// The request with its body read whole, and the budget its bytes hold until the response.
async fn read_body(
    request: Request,
    limits: &Limits,
) -> Result<(Request, Option<OwnedSemaphorePermit>), Response> {
    if request.body().size_hint().exact() == Some(0) {
        return Ok((request, None));
    }
    let pace = limits.pace;
    let too_large = || {
        ApiError::payload_too_large(
            "the request body is larger than the server accepts (MUSCLE_MAX_BODY_BYTES)",
        )
        .into_response()
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > pace.max_bytes as u64) {
        drain(&mut stream).await;
        return Err(too_large());
    }
    let start = Instant::now();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let next = tokio::time::timeout_at(pace.deadline(start, received), stream.next());
        let chunk = match next.await {
            Err(_) => return Err(too_slow(received, start.elapsed(), &pace)),
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(ApiError::bad_request(format!(
                    "the request body could not be read: {error}"
                ))
                .into_response());
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if chunk.is_empty() {
            continue;
        }
        received += chunk.len();
        if received > pace.max_bytes {
            drop((chunks, held));
            drain(&mut stream).await;
            return Err(too_large());
        }
        let bytes = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let budget = limits.buffered.clone().acquire_many_owned(bytes);
        let permit = match tokio::time::timeout(QUEUE_WAIT, budget).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(ApiError::busy(
                    "the server holds as many request bodies as it buffers at once; try again",
                    5,
                )
                .into_response());
            }
        };
        match &mut held {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        chunks.push(chunk);
    }
    let whole = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    };
    Ok((Request::from_parts(parts, Body::from(whole)), held))
}

/// Bytes of an oversized body read and dropped before its 413 is sent, and the time they may
/// take: a client still sending the body then reads the answer instead of a connection reset
/// (a lingering close, as web servers do). Beyond either, the connection closes as it stands.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

async fn drain(stream: &mut axum::body::BodyDataStream) {
    let deadline = Instant::now() + DRAIN_TIME;
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => drained += chunk.len(),
            _ => break,
        }
    }
}

fn too_slow(received: usize, elapsed: Duration, pace: &BodyPace) -> Response {
    let mut response = ApiError::request_timeout(format!(
        "the request body arrived too slowly ({received} bytes in {:.0} s): after {} s a body \
         must average at least {} bytes per second (MUSCLE_BODY_MIN_BYTES_PER_SECOND)",
        elapsed.as_secs_f64(),
        pace.grace.as_secs(),
        pace.min_bytes_per_second
    ))
    .into_response();
    // The rest of the body is not read: the connection cannot carry another request.
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

pub async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let (request, buffered) = match read_body(request, &limits).await {
        Ok(read) => read,
        Err(response) => return response,
    };
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
    drop((permit, upload, buffered));
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
        let limits = Limits::new(1, 1, Duration::from_secs(60), BodyPace::default());
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
        let response = app(Limits::new(
            4,
            1,
            Duration::from_secs(1),
            BodyPace::default(),
        ))
        .oneshot(get_request("/slow"))
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[tokio::test(start_paused = true)]
    async fn uploads_beyond_their_slots_are_told_to_retry_while_other_requests_pass() {
        let limits = Limits::new(8, 1, Duration::from_secs(60), BodyPace::default());
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
