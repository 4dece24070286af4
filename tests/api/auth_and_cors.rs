use muscle::http::{CorsOrigins, HttpOptions};
use reqwest::StatusCode;

use super::helpers::*;

fn with_token() -> Options {
    Options {
        workers: 0,
        http: HttpOptions {
            api_token: Some("s3cret-token".into()),
            cors_origins: CorsOrigins::parse(&["https://dash.example.com".into()]).unwrap(),
            max_body_bytes: 1 << 20,
            ..Default::default()
        },
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_v1_route_but_not_operations() {
    on_every_backend(with_token, |app| async move {
        for path in [
            "/v1/datasets",
            "/v1/evaluations",
            "/v1/trainings",
            "/v1/models",
            "/v1/evaluations/x/instances",
        ] {
            let response = app.get(path).await;
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            problem(response, StatusCode::UNAUTHORIZED).await;
        }
        let wrong = app
            .client
            .get(app.url("/v1/datasets"))
            .bearer_auth("s3cret-tokeN")
            .send()
            .await
            .unwrap();
        problem(wrong, StatusCode::UNAUTHORIZED).await;
        let upload = app
            .client
            .post(app.url("/v1/datasets"))
            .header("content-type", "application/x-ndjson")
            .body(MC_ROWS)
            .send()
            .await
            .unwrap();
        problem(upload, StatusCode::UNAUTHORIZED).await;

        let right = app
            .client
            .get(app.url("/v1/datasets"))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::OK);
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
            assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
        }
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_api_is_open() {
    on_every_backend(Options::api_only, |app| async move {
        assert_eq!(app.get("/v1/datasets").await.status(), StatusCode::OK);
        let response = app
            .client
            .get(app.url("/v1/datasets"))
            .header("origin", "https://dash.example.com")
            .send()
            .await
            .unwrap();
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "no CORS unless origins are configured"
        );
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_may_call_from_a_browser() {
    on_every_backend(with_token, |app| async move {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/v1/evaluations"))
            .header("origin", "https://dash.example.com")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), StatusCode::OK);
        assert_eq!(
            preflight.headers()["access-control-allow-origin"],
            "https://dash.example.com"
        );
        let allowed = preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("authorization"));

        let other = app
            .client
            .get(app.url("/v1/datasets"))
            .header("origin", "https://evil.example.com")
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none());
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_lets_any_origin_call_from_a_browser() {
    let any_origin = || Options {
        http: HttpOptions {
            api_token: Some("s3cret-token".into()),
            cors_origins: CorsOrigins::parse(&["*".into()]).unwrap(),
            ..Default::default()
        },
        ..Options::api_only()
    };
    on_every_backend(any_origin, |app| async move {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/v1/evaluations"))
            .header("origin", "https://anything.example.org:8443")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), StatusCode::OK);
        let headers = preflight.headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        let allowed = headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("idempotency-key"),
            "{allowed}"
        );
        assert!(headers.get("access-control-allow-credentials").is_none());

        let call = app
            .client
            .get(app.url("/v1/datasets"))
            .header("origin", "http://localhost:5173")
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(call.status(), StatusCode::OK);
        assert_eq!(call.headers()["access-control-allow-origin"], "*");
        app
    })
    .await;
}

/// The committed document (the published contract, as served with a token), with what a
/// server without a token does not do taken out: no security requirement, no 401.
fn committed_without_auth() -> serde_json::Value {
    let mut spec: serde_json::Value = serde_json::from_str(&muscle::http::openapi_json()).unwrap();
    spec.as_object_mut().unwrap().remove("security");
    for item in spec["paths"].as_object_mut().unwrap().values_mut() {
        for operation in item.as_object_mut().unwrap().values_mut() {
            let operation = operation.as_object_mut().unwrap();
            operation.remove("security");
            operation["responses"]
                .as_object_mut()
                .unwrap()
                .remove("401");
        }
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_says_whether_a_token_is_required() {
    let committed: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/openapi.json"
    )))
    .unwrap();
    on_every_backend(with_token, |app| {
        let committed = committed.clone();
        async move {
            let served: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
            assert_eq!(served, committed, "with a token: the committed contract");
            let v1 = &served["paths"]["/v1/evaluations"]["post"];
            assert_eq!(v1["security"], serde_json::json!([{"bearer": []}]));
            assert!(v1["responses"]["401"].is_object());
            app
        }
    })
    .await;
    on_every_backend(Options::api_only, |app| async move {
        let served: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
        assert_eq!(served, committed_without_auth(), "without a token");
        let mut operations = 0;
        for item in served["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                assert!(operation.get("security").is_none(), "{operation}");
                assert!(operation["responses"].get("401").is_none(), "{operation}");
                operations += 1;
            }
        }
        assert!(operations > 20, "{operations}");
        assert!(served["components"]["securitySchemes"]["bearer"].is_object());
        app
    })
    .await;
}
