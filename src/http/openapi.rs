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

/// Answers every route may give that its own annotation does not repeat: 401 where a token is
/// required, 422 for a bad page request, 503 with Retry-After when the server is busy.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    super::error::PROBLEM_JSON,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        add_links(openapi);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let v1 = path.starts_with("/v1/");
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                let pages = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| {
                        matches!(p, utoipa::openapi::RefOr::T(p) if p.name == "limit" || p.name == "wait")
                    });
                if v1 {
                    responses.entry("401".into()).or_insert_with(|| {
                        problem(
                            "A token is required (MUSCLE_API_TOKEN is set) and this one is not it",
                        )
                        .into()
                    });
                    responses.entry("503".into()).or_insert_with(|| {
                        problem("Busy or the database is unreachable; Retry-After says when to try again").into()
                    });
                }
                if pages {
                    responses
                        .entry("422".into())
                        .or_insert_with(|| problem("A query parameter out of range").into());
                }
            }
        }
    }
}

/// The document once every route is in: the responses all routes share added.
pub(super) fn finish(mut spec: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    CommonResponses.modify(&mut spec);
    spec
}

/// The document of a server without a token: no operation requires the bearer token or answers
/// 401 (the scheme stays described). The committed document is the one with a token.
pub(super) fn without_auth(spec: &mut utoipa::openapi::OpenApi) {
    spec.security = None;
    for item in spec.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = None;
            operation.responses.responses.remove("401");
        }
    }
}

/// (create path, its success status, [(link name, operationId of the reader)]).
type CreateLinks = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Links from what a POST creates to the operations that read it, for clients and for stateful
/// testing (schemathesis follows them from create to get).
fn add_links(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    let links: [CreateLinks; 4] = [
        (
            "/v1/evaluations",
            "202",
            &[
                ("GetEvaluation", "get_evaluation"),
                ("ListInstances", "list_instances"),
                ("ReportMarkdown", "report_markdown"),
                ("InstancesCsv", "instances_csv"),
                ("CancelEvaluation", "cancel_evaluation"),
            ],
        ),
        (
            "/v1/trainings",
            "202",
            &[
                ("GetTraining", "get_training"),
                ("CancelTraining", "cancel_training"),
            ],
        ),
        ("/v1/datasets", "201", &[("GetDataset", "get_dataset")]),
        (
            "/v1/predictions",
            "201",
            &[("GetPredictions", "get_predictions")],
        ),
    ];
    let known: std::collections::HashSet<String> = openapi
        .paths
        .paths
        .values()
        .flat_map(|item| [&item.get, &item.post])
        .flatten()
        .filter_map(|op| op.operation_id.clone())
        .collect();
    for (path, status, targets) in links {
        let Some(post) = openapi
            .paths
            .paths
            .get_mut(path)
            .and_then(|i| i.post.as_mut())
        else {
            continue;
        };
        let Some(RefOr::T(response)) = post.responses.responses.get_mut(status) else {
            continue;
        };
        for (name, operation) in targets {
            if known.contains(*operation) {
                response.links.insert(
                    name.to_string(),
                    RefOr::T(
                        LinkBuilder::new()
                            .operation_id(*operation)
                            .parameter("id", "$response.body#/id")
                            .build(),
                    ),
                );
            }
        }
    }
}

pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document of every route, as committed in openapi/openapi.json.
pub fn openapi_json() -> String {
    let (_, spec) = super::api_router().split_for_parts();
    let spec = finish(spec);
    let mut text = spec.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}
