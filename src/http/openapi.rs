use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "muscle",
        description = "Tells an ML team whether a model update is safe for its users: negative \
            flips, congruence metrics with confidence, a release gate, and MUSCLE compatibility \
            adapters. Errors are application/problem+json (RFC 9457).",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "datasets", description = "JSON-lines datasets, validated whole"),
        (name = "predictions", description = "Recorded runs (lm-evaluation-harness samples files) to compare without re-running"),
        (name = "evaluations", description = "Old vs new model: flips, report, gate"),
        (name = "trainings", description = "Task and compatibility LoRA adapters"),
        (name = "models", description = "Model and adapter folders"),
        (name = "operations", description = "Health, readiness, Prometheus metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document of every route, as committed in openapi/openapi.json.
pub fn openapi_json() -> String {
    let (_, spec) = super::api_router().split_for_parts();
    let mut text = spec.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}
