//! The HTTP API: one file per resource, routes registered through utoipa-axum so the OpenAPI
//! document cannot miss one.

mod auth;
mod callbacks;
mod cors;
pub use cors::CorsOrigins;
mod datasets;
mod docs;
pub mod error;
mod evaluations;
mod extract;
mod health;
mod jobs;
mod limit;
mod models;
mod openapi;
mod predictions;
mod reports;
mod serve;
pub use serve::{ConnectionLimits, serve};
mod trainings;
mod ui;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use axum::Router;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::callback::CallbackPolicy;
use crate::domain::JobPlanning;
use crate::endpoint::Endpoints;
use crate::evaluation::PartialReports;
use crate::kinds::Readers;
use crate::kinds::submit::{Callbacks, Submitter};
use crate::models::Resolver;
use crate::stats::{RouteLabels, Stats};
use crate::store::Store;

pub use auth::check_token;
pub use openapi::openapi_json;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub resolver: Resolver,
    pub stats: Arc<Stats>,
    /// How the jobs the API creates are split and retried.
    pub planning: JobPlanning,
    /// Worker loops configured, and how many are running now (for /readyz).
    pub workers_configured: usize,
    pub workers_running: Arc<AtomicUsize>,
    pub reports: Arc<PartialReports>,
    /// /readyz's database write probe, shared by its callers.
    pub readiness: Arc<health::WriteProbe>,
    pub callbacks: CallbackPolicy,
    pub endpoints: Arc<Endpoints>,
}

impl AppState {
    /// What a submission through the API is checked and planned with.
    pub fn submitter(&self) -> Submitter<'_> {
        Submitter {
            store: &self.store,
            resolver: &self.resolver,
            planning: self.planning,
            callbacks: Callbacks::Allowed(&self.callbacks),
            endpoints: &self.endpoints,
            device: None,
        }
    }

    /// What the kinds' documents are read with.
    pub fn readers(&self) -> Readers {
        Readers {
            store: self.store.clone(),
            reports: self.reports.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub api_token: Option<String>,
    /// MUSCLE_CORS_ORIGINS, checked at start.
    pub cors_origins: CorsOrigins,
    pub max_body_bytes: usize,
    /// Where job-end callbacks may go, and their signing secrets.
    pub callbacks: CallbackPolicy,
    /// Requests handled at once (others wait up to 2 s, then get 503 with Retry-After).
    pub max_concurrent_requests: usize,
    /// Uploads (datasets, recorded runs) read at once; others wait up to 5 s, then 503.
    pub max_concurrent_uploads: usize,
    /// A request still running after this long is stopped with 503 (its body read apart).
    pub request_timeout: Duration,
    /// Seconds any request body may take before its rate counts (408 when too slow).
    pub body_grace: Duration,
    /// Average bytes per second a request body must keep after `body_grace`.
    pub body_min_bytes_per_second: u64,
    /// Header deadline and connection bound of the listener.
    pub connections: ConnectionLimits,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            api_token: None,
            cors_origins: CorsOrigins::None,
            max_body_bytes: 64 << 20,
            callbacks: CallbackPolicy::default(),
            max_concurrent_requests: 256,
            max_concurrent_uploads: 4,
            request_timeout: Duration::from_secs(120),
            body_grace: Duration::from_secs(10),
            body_min_bytes_per_second: 64 * 1024,
            connections: ConnectionLimits::default(),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The documented routes, before state and layers.
pub fn api_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(datasets::router())
        .merge(predictions::router())
        .merge(evaluations::router())
        .merge(trainings::router())
        .merge(models::router());
    OpenApiRouter::with_openapi(openapi::base())
        .nest("/v1", v1)
        .merge(health::router())
}

/// The whole application: routes, docs, authentication, CORS, limits, tracing.
pub fn app(state: AppState, options: &HttpOptions) -> Router {
    let (router, spec) = api_router().split_for_parts();
    let mut spec = openapi::finish(spec);
    let token = options.api_token.clone().filter(|t| !t.is_empty());
    // /openapi.json describes this server as configured.
    if token.is_none() {
        openapi::without_auth(&mut spec);
    }
    let router = router
        .merge(docs::router(spec))
        .merge(ui::router())
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .with_state(state.clone())
        .layer(middleware::from_fn_with_state(
            limit::Limits::new(
                options.max_concurrent_requests,
                options.max_concurrent_uploads,
                options.request_timeout,
                limit::BodyPace {
                    max_bytes: options.max_body_bytes,
                    grace: options.body_grace,
                    min_bytes_per_second: options.body_min_bytes_per_second,
                },
            ),
            limit::limit,
        ))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(middleware::from_fn(refuse_nul_in_uri))
        .layer(middleware::from_fn_with_state(state.stats.clone(), record))
        .layer(middleware::from_fn_with_state(token, auth::require_token))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::internal(
                "a handler panicked",
            ))
        }))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("unmatched");
                let id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %request.method(), route, request_id = id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    match options.cors_origins.layer() {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// A NUL character (`%00`) in a path segment or a query parameter is a 422 naming where: no
/// database stores it in text, so it must not reach one.
async fn refuse_nul_in_uri(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let has_nul = |s: &str| s.to_ascii_lowercase().contains("%00");
    let field = if has_nul(uri.path()) {
        Some("(path)".to_string())
    } else {
        uri.query().filter(|q| has_nul(q)).map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, v)| k.contains('\0') || v.contains('\0'))
                .map(|(k, _)| k.replace('\0', "\\u0000"))
                .unwrap_or_else(|| "(query)".into())
        })
    };
    match field {
        Some(field) => axum::response::IntoResponse::into_response(error::ApiError::invalid_field(
            &field,
            crate::validation::NUL_MESSAGE,
        )),
        None => next.run(request).await,
    }
}

/// Counts requests and their latency by route template.
async fn record(
    axum::extract::State(stats): axum::extract::State<Arc<Stats>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Label values come from a fixed set: a client sending made-up methods adds no series.
    let method = match *request.method() {
        Method::GET
        | Method::POST
        | Method::HEAD
        | Method::OPTIONS
        | Method::PUT
        | Method::DELETE
        | Method::PATCH => request.method().to_string(),
        _ => "other".to_string(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let labels = RouteLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    stats.http_requests.get_or_create(&labels).inc();
    stats
        .http_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
