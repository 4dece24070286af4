//! Trainings through the HTTP API and the queue with the real engine on the fixture model:
//! a run to success (adapter folder, result, evaluations), cancel mid-run, and a run resumed
//! from its epoch checkpoint after its worker went away.

use std::time::Duration;

use muscle::app::{App, Settings};
use muscle::config::QueueArgs;
use muscle::engine::DeviceSpec;
use muscle::http::HttpOptions;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::helpers::*;

/// A model root of its own (outputs are written into it) and a data dir for checkpoints.
struct Dirs {
    models: tempfile::TempDir,
    data: tempfile::TempDir,
}

fn dirs() -> Dirs {
    let models = own_model_root();
    Dirs {
        models,
        data: tempfile::tempdir().unwrap(),
    }
}

struct Running {
    base: String,
    client: Client,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(db: &TestDb, dirs: &Dirs) -> Self {
        let settings = Settings {
            database_url: db.url.clone(),
            model_dir: dirs.models.path().to_path_buf(),
            trained_dir: None,
            data_dir: dirs.data.path().to_path_buf(),
            device: DeviceSpec::Cpu,
            model_cache_bytes: 1 << 30,
            allow_model_paths: false,
            queue: QueueArgs {
                lease_seconds: 30,
                max_attempts: std::num::NonZeroU32::new(3).unwrap(),
                poll_ms: 20,
                shard_size: std::num::NonZeroU32::new(500).unwrap(),
            },
            workers: 1,
            bind: Some("127.0.0.1:0".parse().unwrap()),
            http: HttpOptions {
                max_body_bytes: 1 << 20,
                ..Default::default()
            },
            endpoints: Default::default(),
        };
        let app = App::build(settings).await.expect("app builds");
        let base = format!("http://{}", app.address().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let server = {
            let stop = stop.clone();
            tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }))
        };
        Self {
            base,
            client: Client::new(),
            stop,
            server,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.server.await.unwrap().unwrap();
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn upload(&self, jsonl: String) -> String {
        let response = self
            .client
            .post(format!("{}/v1/datasets?name=train", self.base))
            .header("content-type", "application/x-ndjson")
            .body(jsonl)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    async fn wait_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..6000 {
            let body = self.get(path).await;
            if done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{path} never got there");
    }

    async fn wait_finished(&self, path: &str) -> Value {
        self.wait_until(path, |b| {
            matches!(
                b["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await
    }
}

fn rows(n: usize) -> String {
    let colours = ["red", "blue", "green"];
    (0..n)
        .map(|i| {
            json!({"id": format!("r{i}"), "prompt": format!("item {} is", i % 7),
                   "choices": colours, "answer": (i % 7) % 3})
            .to_string()
                + "\n"
        })
        .collect()
}

fn compat(dataset: &str, output: &str, hyper: Value) -> Value {
    json!({
        "name": "compat",
        "objective": "compatibility",
        "old": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-list"},
        "new": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-all"},
        "dataset": dataset,
        "output": output,
        "hyperparameters": hyper,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compatibility_training_runs_through_the_queue_and_evaluates() {
    let db = sqlite_db().await;
    let dirs = dirs();
    let app = Running::start(&db, &dirs).await;
    let dataset = app.upload(rows(10)).await;
    let mut spec = compat(
        &dataset,
        "adapters/compat",
        json!({"rank": 8, "alpha": 16, "epochs": 2, "batch_size": 2, "grad_accum": 2,
               "warmup_steps": 1, "learning_rate": 0.001}),
    );
    spec["evaluate"] = json!({"dataset": dataset, "task": {"type": "multiple_choice"},
                              "gate": [{"metric": "nfr", "max": 1.0}]});
    let (status, created) = app.post("/v1/trainings", Some(&spec)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let path = format!("/v1/trainings/{}", created["id"].as_str().unwrap());
    let done = app.wait_finished(&path).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // 10 rows: 2 held out, 8 to train, 2 steps of 2x2 per epoch, 2 epochs.
    assert_eq!(
        done["progress"],
        json!({"step": 4, "total_steps": 4, "epoch": 2})
    );
    let history = done["history"].as_array().unwrap();
    let validations: Vec<&Value> = history
        .iter()
        .filter(|h| h["kind"] == "validation")
        .collect();
    assert_eq!(validations.len(), 2, "{history:?}");
    assert!(
        validations
            .iter()
            .all(|v| v["validation_ce"].as_f64().unwrap().is_finite())
    );
    assert!(
        history
            .iter()
            .any(|h| h["kind"] == "train" && h["old_share"].is_number())
    );
    let best = done["best_epoch"].as_i64().unwrap();
    assert!((1..=2).contains(&best));
    assert_eq!(done["adapter"], "adapters/compat");
    let job = muscle::store::Store::get_job(
        db.store().await.as_ref(),
        muscle::domain::JobKind::Training,
        created["id"].as_str().unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    let result: serde_json::Value = job.result.unwrap().read().unwrap();
    let init = result["init"].as_str().unwrap().to_string();
    assert!(init.contains("started from"), "{init}");
    let folder = dirs.models.path().join("adapters/compat");
    assert!(folder.join("adapter_config.json").is_file());
    assert!(folder.join("adapter_model.safetensors").is_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |file: &str| {
            std::fs::metadata(folder.join(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            mode("adapter_model.safetensors"),
            mode("adapter_config.json"),
            "the weights are written like the config"
        );
    }
    assert!(
        !dirs
            .data
            .path()
            .join("checkpoints")
            .join(created["id"].as_str().unwrap())
            .exists(),
        "checkpoints are removed once the adapter is written"
    );

    // Two evaluations were queued; the view reads their numbers when they are done.
    let evaluations = &done["evaluations"];
    for key in ["old_vs_new", "old_vs_compat"] {
        let id = evaluations[key]["id"].as_str().unwrap();
        let finished = app.wait_finished(&format!("/v1/evaluations/{id}")).await;
        assert_eq!(finished["status"], "succeeded", "{finished}");
    }
    let view = app.get(&path).await;
    for key in ["old_vs_new", "old_vs_compat"] {
        let entry = &view["evaluations"][key];
        assert_eq!(entry["status"], "succeeded", "{view}");
        assert_eq!(entry["headline"]["n"], 10);
        assert!(entry["headline"]["accuracy_new"].is_number());
        assert!(entry["headline"]["mcnemar_p"].is_number());
    }
    assert!(view["evaluations"]["accuracy_change"].is_number(), "{view}");
    // The evaluation of old vs new + compat uses the written adapter.
    let compat_eval = app
        .get(&format!(
            "/v1/evaluations/{}",
            view["evaluations"]["old_vs_compat"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        compat_eval["spec"]["new"]["adapter"], "adapters/compat",
        "{compat_eval}"
    );

    // The output exists now: the same spec is refused.
    let (status, _) = app.post("/v1/trainings", Some(&spec)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_is_cancelled_between_steps() {
    let db = sqlite_db().await;
    let dirs = dirs();
    let app = Running::start(&db, &dirs).await;
    let dataset = app.upload(rows(40)).await;
    let spec = compat(
        &dataset,
        "adapters/cancelled",
        json!({"rank": 8, "epochs": 200, "batch_size": 1}),
    );
    let (_, created) = app.post("/v1/trainings", Some(&spec)).await;
    let path = format!("/v1/trainings/{}", created["id"].as_str().unwrap());
    let running = app
        .wait_until(&path, |b| b["progress"]["step"].as_i64().unwrap_or(0) >= 2)
        .await;
    assert_eq!(running["status"], "running");
    // A second training writing the same adapter is refused now, not after it has trained.
    let (status, refused) = app.post("/v1/trainings", Some(&spec)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "output", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(created["id"].as_str().unwrap()),
        "{refused}"
    );
    let (status, cancelled) = app.post(&format!("{path}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    // The worker notices at its next heartbeat, stops between steps and takes the next job.
    let other = app.upload(rows(4)).await;
    let spec = json!({"objective": "task", "new": {"model": "models/llama-gqa"},
                      "dataset": other, "output": "adapters/after-cancel",
                      "hyperparameters": {"rank": 2, "epochs": 1, "batch_size": 4}});
    let (_, next) = app.post("/v1/trainings", Some(&spec)).await;
    let next = app
        .wait_finished(&format!("/v1/trainings/{}", next["id"].as_str().unwrap()))
        .await;
    assert_eq!(next["status"], "succeeded", "{next}");
    let after = app.get(&path).await;
    assert_eq!(after["status"], "cancelled");
    assert!(
        after["progress"]["step"].as_i64().unwrap()
            < after["progress"]["total_steps"].as_i64().unwrap()
    );
    assert!(!dirs.models.path().join("adapters/cancelled").exists());
    assert!(
        !dirs
            .data
            .path()
            .join("checkpoints")
            .join(created["id"].as_str().unwrap())
            .exists(),
        "a cancelled run leaves no checkpoints"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_training_resumes_from_its_last_epoch_checkpoint() {
    let db = sqlite_db().await;
    let dirs = dirs();
    let app = Running::start(&db, &dirs).await;
    let dataset = app.upload(rows(40)).await;
    let spec = json!({"objective": "task", "new": {"model": "models/llama-gqa"},
                      "dataset": dataset, "output": "adapters/resumed",
                      "hyperparameters": {"rank": 4, "epochs": 8, "batch_size": 1,
                                          "warmup_steps": 0, "learning_rate": 0.001}});
    let (_, created) = app.post("/v1/trainings", Some(&spec)).await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/v1/trainings/{id}");
    let first_epoch = dirs
        .data
        .path()
        .join("checkpoints")
        .join(&id)
        .join("epoch-1");
    for _ in 0..3000 {
        if first_epoch.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(first_epoch.exists(), "no epoch checkpoint");
    // The worker goes away mid-run: its shard goes back to the queue with the checkpoint.
    app.stop().await;
    let app = Running::start(&db, &dirs).await;
    let done = app.wait_finished(&path).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let resumed = app.get(&path).await;
    let history = resumed["history"].as_array().unwrap();
    let epochs: Vec<i64> = history
        .iter()
        .filter(|h| h["kind"] == "validation")
        .map(|h| h["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=8).collect::<Vec<_>>(), "each epoch once");
    let job = muscle::store::Store::get_job(
        db.store().await.as_ref(),
        muscle::domain::JobKind::Training,
        &id,
    )
    .await
    .unwrap()
    .unwrap();
    let result: serde_json::Value = job.result.unwrap().read().unwrap();
    let from = result["resumed_from_epochs"].clone();
    let from: Vec<u32> = serde_json::from_value(from).unwrap();
    assert_eq!(from.len(), 1, "resumed once");
    assert!(
        from[0] >= 1 && from[0] < 8,
        "resumed from epoch {from:?}, not from zero"
    );
    assert!(
        dirs.models
            .path()
            .join("adapters/resumed/adapter_model.safetensors")
            .is_file()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_that_fails_at_the_end_leaves_no_partial_folder_nor_checkpoints() {
    let db = sqlite_db().await;
    let dirs = dirs();
    // Left by a run that can no longer resume (its job is gone): removed when a training starts.
    let stale = dirs.data.path().join("checkpoints/0190-gone/epoch-1");
    std::fs::create_dir_all(&stale).unwrap();
    let app = Running::start(&db, &dirs).await;
    let dataset = app.upload(rows(10)).await;
    let spec = json!({"objective": "task", "new": {"model": "models/llama-gqa"},
                      "dataset": dataset, "output": "adapters/late/compat",
                      "hyperparameters": {"rank": 2, "epochs": 2, "batch_size": 2}});
    let (status, created) = app.post("/v1/trainings", Some(&spec)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    // While it trains, a file takes the place of a folder on the output's way.
    std::fs::write(dirs.models.path().join("adapters/late"), "a file").unwrap();
    let id = created["id"].as_str().unwrap();
    let done = app.wait_finished(&format!("/v1/trainings/{id}")).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("is a file"),
        "{done}"
    );
    let checkpoints = dirs.data.path().join("checkpoints");
    assert!(
        !checkpoints.join(id).exists(),
        "a failed run keeps its checkpoints"
    );
    assert!(
        !stale.exists(),
        "checkpoints of a job that is gone were kept"
    );
    let hidden: Vec<_> = std::fs::read_dir(dirs.models.path().join("adapters"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    let models = app.get("/v1/models").await;
    assert_eq!(models["adapters"].as_array().unwrap().len(), 2, "{models}");
    app.stop().await;
}
