//! What the API tests share: the app on port 0 against a fresh database, requests and problem
//! answers, fixture rows and specs; fresh databases (tests/support/db.rs, shared with the store
//! tests) and the fixture paths (tests/support/files.rs, shared with the engine tests).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use muscle::app::{App, Settings};
use muscle::config::QueueArgs;
use muscle::endpoint::Endpoints;
use muscle::engine::DeviceSpec;
use muscle::http::HttpOptions;
use muscle::store::Store;
use muscle::worker::Executor;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

#[path = "../support/db.rs"]
mod db;
#[path = "../support/files.rs"]
mod files;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/skip.rs"]
mod skip;
pub use db::*;
pub use files::*;
pub use ports::*;
pub use skip::*;

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub store: Arc<Store>,
    pub db: Option<TestDb>,
    stop: tokio_util::sync::CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The committed fixture folder: models under `models/`, adapters under `adapters/`.
pub fn model_dir() -> PathBuf {
    fixtures().join("engine")
}

/// A model root of its own (tests write into it): the fixture Llama and its two adapters.
pub fn own_model_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    copy_dir(
        &model_dir().join("models/llama-gqa"),
        &root.path().join("models/llama-gqa"),
    );
    for adapter in ["llama-gqa-lora-list", "llama-gqa-lora-all"] {
        copy_dir(
            &model_dir().join("adapters").join(adapter),
            &root.path().join("adapters").join(adapter),
        );
    }
    root
}

pub struct Options {
    pub workers: usize,
    pub http: HttpOptions,
    pub executor: Option<Arc<dyn Executor>>,
    pub lease_seconds: u64,
    pub shard_size: u32,
    /// MUSCLE_MODEL_DIR of the app.
    pub model_dir: PathBuf,
    /// MUSCLE_ENDPOINT_HOSTS and the MUSCLE_ENDPOINT_KEY* variables of the app.
    pub endpoints: Arc<Endpoints>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 1,
            http: HttpOptions {
                max_body_bytes: 1 << 20,
                ..Default::default()
            },
            executor: None,
            lease_seconds: 30,
            shard_size: 500,
            model_dir: model_dir(),
            endpoints: Arc::default(),
        }
    }
}

impl Options {
    /// The API alone: jobs stay queued.
    pub fn api_only() -> Self {
        Self {
            workers: 0,
            ..Self::default()
        }
    }
}

impl TestApp {
    pub async fn spawn(db: TestDb, options: Options) -> Self {
        let settings = Settings {
            database_url: db.url.clone(),
            model_dir: options.model_dir,
            trained_dir: None,
            data_dir: std::env::temp_dir().join("muscle-api-tests"),
            device: DeviceSpec::Cpu,
            model_cache_bytes: 1 << 30,
            allow_model_paths: false,
            queue: QueueArgs {
                lease_seconds: options.lease_seconds,
                max_attempts: std::num::NonZeroU32::new(3).unwrap(),
                poll_ms: 20,
                shard_size: std::num::NonZeroU32::new(options.shard_size).unwrap(),
            },
            workers: options.workers,
            bind: Some("127.0.0.1:0".parse().unwrap()),
            http: options.http,
            endpoints: options.endpoints,
        };
        let app = App::build_with(settings, options.executor)
            .await
            .expect("app builds");
        let address = app.address().unwrap();
        let store = app.store();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = {
            let stop = stop.clone();
            tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }))
        };
        Self {
            base: format!("http://{address}"),
            client: Client::new(),
            store,
            db: Some(db),
            stop,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs an evaluation that must be queued (202); its Location.
    pub async fn submit_evaluation(&self, spec: &Value) -> String {
        let response = self.post_json("/v1/evaluations", spec).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.headers()["location"].to_str().unwrap().to_string()
    }

    /// POSTs a JSON body that must be refused with 422; the problem document.
    pub async fn refused(&self, path: &str, body: &Value) -> Value {
        problem(
            self.post_json(path, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await
    }

    pub async fn upload(&self, jsonl: &str) -> Response {
        self.client
            .post(self.url("/v1/datasets?name=test"))
            .header("content-type", "application/x-ndjson")
            .body(jsonl.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn upload_ok(&self, jsonl: &str) -> String {
        let response = self.upload(jsonl).await;
        // 200: the same content was uploaded under this name before (that dataset).
        assert!(
            matches!(response.status(), StatusCode::CREATED | StatusCode::OK),
            "{}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// Polls until the job reaches a final status.
    pub async fn wait_finished(&self, path: &str) -> Value {
        for _ in 0..1500 {
            let body: Value = self.get(path).await.json().await.unwrap();
            if matches!(
                body["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{path} did not finish");
    }

    /// Stops the server and workers gracefully, keeping the database.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    /// Stops the server and workers gracefully and drops the database.
    pub async fn stop(mut self) {
        self.shutdown().await;
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

/// Runs `muscle COMMAND` with `env` (no DATABASE_URL, its data in a folder of its own, port 0)
/// and returns its output once it exits, which must be within 30 s: what a setting that stops
/// the start gives.
pub async fn muscle_exits(command: &str, env: &[(&str, &str)]) -> std::process::Output {
    let data = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_muscle"))
        .arg(command)
        .envs(env.iter().copied())
        .env("MUSCLE_DATA_DIR", data.path())
        .env("MUSCLE_BIND", "127.0.0.1:0")
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("muscle {command} started despite {env:?}"))
        .unwrap()
}

/// Runs `scenario` against a fresh app on every backend.
pub async fn on_every_backend<F, Fut>(options: impl Fn() -> Options, scenario: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    for db in test_databases().await {
        eprintln!("-- on {}", db.backend);
        let app = TestApp::spawn(db, options()).await;
        let app = scenario(app).await;
        app.stop().await;
    }
}

/// Asserts an RFC 9457 problem answer and returns its body.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], json!(status.as_u16()));
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The `field` of every listed error.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub const MC_ROWS: &str = concat!(
    r#"{"id": "q1", "prompt": "The cat sat on the", "choices": ["mat", "moon", "dog"], "answer": 0, "tags": {"topic": "animals"}}"#,
    "\n",
    r#"{"id": "q2", "prompt": "One plus one is", "choices": ["two", "three"], "answer": 0, "tags": {"topic": "math"}}"#,
    "\n",
    r#"{"id": "q3", "prompt": "The sky is", "choices": ["blue", "green", "loud"], "answer": 0, "tags": {"topic": "nature"}}"#,
    "\n",
    r#"{"id": "q4", "prompt": "Water is", "choices": ["dry", "wet"], "answer": 1, "tags": {"topic": "nature"}}"#,
    "\n",
    r#"{"id": "q5", "prompt": "A dog says", "choices": ["woof", "meow"], "answer": 0, "tags": {"topic": "animals"}}"#,
    "\n",
    r#"{"id": "q6", "prompt": "Two and two make", "choices": ["five", "four", "six"], "answer": 1, "tags": {"topic": "math"}}"#,
    "\n",
);

/// An evaluation of the fixture Llama against itself with a LoRA adapter.
pub fn evaluation_spec(dataset: &str) -> Value {
    json!({
        "name": "llama-gqa to llama-gqa+lora",
        "old": {"model": "models/llama-gqa"},
        "new": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-list"},
        "dataset": dataset,
        "task": {"type": "multiple_choice"},
        "options": {"batch_size": 4, "shard_size": 4},
        "gate": [{"metric": "nfr", "max": 1.0}],
    })
}
