use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muscle::domain::{JobKind, JobStatus};
use muscle::worker::{Executor, ShardContext, ShardResult};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_docs() {
    on_every_backend(Options::default, |app| async move {
        let health: Value = app.get("/healthz").await.json().await.unwrap();
        assert_eq!(health, json!({"status": "ok"}));
        let mut ready = Value::Null;
        for _ in 0..100 {
            let response = app.get("/readyz").await;
            if response.status() == StatusCode::OK {
                ready = response.json().await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ready["status"], "ready");
        assert_eq!(ready["workers_running"], 1);
        assert!(matches!(
            ready["database"].as_str(),
            Some("sqlite" | "postgres")
        ));

        app.upload_ok(MC_ROWS).await;
        // Made-up methods share one label value.
        for verb in ["FROB", "ZAP", "QUUX"] {
            let method = reqwest::Method::from_bytes(verb.as_bytes()).unwrap();
            app.client
                .request(method, app.url("/v1/datasets"))
                .send()
                .await
                .unwrap();
        }
        let metrics = app.get("/metrics").await;
        assert!(
            metrics.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains("muscle_queue_shards{status=\"queued\"} 0"),
            "{text}"
        );
        assert!(text.contains(
            "muscle_http_requests_total{method=\"POST\",route=\"/v1/datasets\",status=\"201\"} 1"
        ), "{text}");
        assert!(!text.contains("FROB") && !text.contains("QUUX"), "{text}");
        assert!(
            text.contains("muscle_http_requests_total{method=\"other\",route=\"/v1/datasets\",status=\"405\"} 3"),
            "{text}"
        );

        let docs = app.get("/docs/").await;
        assert_eq!(docs.status(), StatusCode::OK);
        assert!(
            docs.text()
                .await
                .unwrap()
                .to_lowercase()
                .contains("swagger")
        );
        let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
        assert!(spec["paths"]["/v1/evaluations/{id}/instances"]["get"].is_object());

        let missing = problem(app.get("/v2/nothing").await, StatusCode::NOT_FOUND).await;
        assert_eq!(missing["type"], "about:blank");
        let wrong_method = app
            .client
            .delete(app.url("/v1/evaluations"))
            .send()
            .await
            .unwrap();
        problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
        app
    })
    .await;
}

#[tokio::test]
async fn an_api_only_server_is_ready_with_its_database_alone() {
    let db = sqlite_db().await;
    let app = TestApp::spawn(db, Options::api_only()).await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["workers_configured"], 0);
    assert_eq!(ready["database"], "sqlite");
    app.stop().await;
}

/// `muscle_readiness_probes_total`, from /metrics.
async fn readiness_probes(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("muscle_readiness_probes_total "))
        .unwrap_or_else(|| panic!("no probe counter in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_readiness_checks_shares_one_database_write() {
    on_every_backend(Options::api_only, |app| async move {
        let before = readiness_probes(&app).await;
        let started = Instant::now();
        let answers = futures::future::join_all((0..64).map(|_| async {
            let response = app.get("/readyz").await;
            (response.status(), response.text().await.unwrap())
        }))
        .await;
        let elapsed = started.elapsed();
        for answer in &answers {
            assert_eq!(answer, &answers[0]);
        }
        assert_eq!(answers[0].0, StatusCode::OK, "{}", answers[0].1);
        // One write a second at most: one probe, two if the burst straddled a second.
        let probes = readiness_probes(&app).await - before;
        assert!(
            (1..=1 + elapsed.as_secs_f64().ceil() as u64).contains(&probes),
            "{probes} probes for 64 calls in {elapsed:?}"
        );
        // A second later the database is asked again, so a full disk is still noticed.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
        assert_eq!(readiness_probes(&app).await - before, probes + 1);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_are_served_with_the_dashboards_security_headers() {
    on_every_backend(Options::api_only, |app| async move {
        for path in [
            "/docs/",
            "/docs/swagger-initializer.js",
            "/openapi.json",
            "/ui/",
        ] {
            let response = app.get(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            let policy = headers["content-security-policy"].to_str().unwrap();
            for directive in [
                "default-src 'none'",
                "script-src 'self';",
                "connect-src 'self'",
                "frame-ancestors 'none'",
            ] {
                assert!(policy.contains(directive), "{path}: {policy}");
            }
            assert!(!policy.contains("unsafe-eval"), "{path}: {policy}");
            assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(headers["x-frame-options"], "DENY", "{path}");
            assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        }
        // Swagger UI asks no validator elsewhere for a badge.
        let script = app.get("/docs/swagger-initializer.js").await;
        assert!(
            script
                .text()
                .await
                .unwrap()
                .contains("\"validatorUrl\": \"none\"")
        );
        app
    })
    .await;
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let generated = muscle::http::openapi_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
    let spec: Value = serde_json::from_str(&generated).unwrap();
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    for route in [
        "/v1/datasets",
        "/v1/datasets/{id}",
        "/v1/evaluations",
        "/v1/evaluations/{id}",
        "/v1/evaluations/{id}/cancel",
        "/v1/evaluations/{id}/instances",
        "/v1/evaluations/{id}/report.md",
        "/v1/evaluations/{id}/instances.csv",
        "/v1/trainings",
        "/v1/trainings/{id}",
        "/v1/trainings/{id}/cancel",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.iter().any(|p| *p == route),
            "{route} is missing from the spec"
        );
    }
}

/// Works until asked to stop (a long shard).
struct Endless;

#[async_trait]
impl Executor for Endless {
    async fn run(&self, ctx: &ShardContext) -> ShardResult {
        ctx.stop.cancelled().await;
        Err(ctx.check().unwrap_err())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_running_work_back_to_the_queue() {
    for db in test_databases().await {
        let options = Options {
            executor: Some(Arc::new(Endless)),
            ..Options::default()
        };
        let mut app = TestApp::spawn(db, options).await;
        let dataset = app.upload_ok(MC_ROWS).await;
        let job: Value = app
            .post_json("/v1/evaluations", &evaluation_spec(&dataset))
            .await
            .json()
            .await
            .unwrap();
        let id = job["id"].as_str().unwrap().to_string();
        loop {
            let body: Value = app
                .get(&format!("/v1/evaluations/{id}"))
                .await
                .json()
                .await
                .unwrap();
            if body["status"] == "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let store = app.store.clone();
        app.shutdown().await;
        // The shard went back to the queue without using up an attempt: the next claim is
        // the same shard, and the job is still running.
        let claim = store
            .claim("next-host", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (claim.fence.job_id.as_str(), claim.fence.shard),
            (id.as_str(), 0)
        );
        let job = store
            .get_job(JobKind::Evaluation, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.status, JobStatus::Running);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_the_model_root() {
    let db = sqlite_db().await;
    let app = TestApp::spawn(db, Options::api_only()).await;
    let catalog: Value = app.get("/v1/models").await.json().await.unwrap();
    let models = catalog["models"].as_array().unwrap();
    let gqa = models
        .iter()
        .find(|m| m["name"] == "models/llama-gqa")
        .unwrap();
    assert_eq!(gqa["architecture"], "LlamaForCausalLM");
    assert_eq!(gqa["dtype"], "F32");
    assert_eq!(gqa["vocab_size"], 448);
    assert!(gqa["parameters"].as_u64().unwrap() > 100_000);
    let sharded = models
        .iter()
        .find(|m| m["name"] == "models/llama-sharded")
        .unwrap();
    assert!(
        sharded["parameters"].as_u64().unwrap() > 0,
        "shards are counted through the index"
    );
    let digests: std::collections::HashSet<&str> = models
        .iter()
        .map(|m| m["tokenizer_sha256"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 1, "the fixture models share one tokenizer");
    let adapters = catalog["adapters"].as_array().unwrap();
    let lora = adapters
        .iter()
        .find(|a| a["name"] == "adapters/llama-gqa-lora-list")
        .unwrap();
    assert_eq!(lora["r"], 4);
    assert_eq!(lora["lora_alpha"], 8.0);
    assert_eq!(lora["target_modules"], json!(["q_proj", "v_proj"]));
    app.stop().await;
}

/// The value of the first sample named exactly `name` in an OpenMetrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_evaluation_moves_the_engine_metrics() {
    on_every_backend(Options::default, |app| async move {
        let before = app.get("/metrics").await.text().await.unwrap();
        assert_eq!(sample(&before, "muscle_tokens_scored_total"), 0.0);
        assert_eq!(sample(&before, "muscle_batch_size_count"), 0.0);
        let dataset = app.upload_ok(MC_ROWS).await;
        let response = app
            .post_json("/v1/evaluations", &evaluation_spec(&dataset))
            .await;
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(app.wait_finished(&location).await["status"], "succeeded");
        let after = app.get("/metrics").await.text().await.unwrap();
        // 6 instances, both models.
        assert_eq!(sample(&after, "muscle_instances_scored_total"), 12.0);
        // Every choice's prompt and continuation: at least one token each, 16 choices, 2 models.
        assert!(
            sample(&after, "muscle_tokens_scored_total") >= 64.0,
            "{after}"
        );
        let batches = sample(&after, "muscle_batch_size_count");
        let rows = sample(&after, "muscle_batch_size_sum");
        assert!(
            batches >= 2.0 && rows >= 12.0,
            "{batches} batches, {rows} rows"
        );
        // batch_size 4 in the spec: no batch holds more.
        assert!(rows / batches <= 4.0, "{after}");
        app
    })
    .await;
}
