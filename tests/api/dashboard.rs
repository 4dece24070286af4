//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by puppeteer-core
//! from tests/ui): every page against a server holding a finished evaluation of the shipped
//! model update, its compatibility counterpart, a running evaluation fed by a worker on
//! "another host" (this test, through the store), and a training. tests/ui/check.mjs checks
//! what the pages show against the API's own numbers and fails on any console error or any
//! request leaving the server's origin.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use muscle::http::HttpOptions;
use muscle::store::{InstanceFilter, PageRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::fake_endpoint::{Act, FakeServer};
use super::helpers::*;

const TOKEN: &str = "dashboard-test-token";
/// The first test items of the shipped update, as tests/api/model_update_example.rs uses.
const ITEMS: usize = 240;
/// The first entities of the shipped update's categories task, drawn 10 times each.
const SAMPLED_ITEMS: usize = 80;

fn chromium() -> Option<PathBuf> {
    let named = std::env::var_os("MUSCLE_CHROMIUM").map(PathBuf::from);
    named
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.exists())
}

/// tests/ui/node_modules, installed from the lock file when missing.
fn node_modules() -> Result<(), String> {
    let ui = repo().join("tests/ui");
    if ui.join("node_modules/puppeteer-core").exists() {
        return Ok(());
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&ui)
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("npm ci in tests/ui failed: {status}"))
}

fn options(workers: usize, models: &Path, served: &FakeServer) -> Options {
    Options {
        workers,
        model_dir: models.to_path_buf(),
        endpoints: served.endpoints(),
        http: HttpOptions {
            api_token: Some(TOKEN.into()),
            max_body_bytes: 1 << 20,
            ..Default::default()
        },
        ..Options::default()
    }
}

/// Sends `request` with the token; its JSON body, after checking the status is a success.
async fn ok_json(request: reqwest::RequestBuilder, what: &str) -> Value {
    let response = request.bearer_auth(TOKEN).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{what}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    ok_json(app.client.get(app.url(path)), &format!("GET {path}")).await
}

async fn post_json(app: &TestApp, path: &str, body: &Value) -> Value {
    ok_json(
        app.client.post(app.url(path)).json(body),
        &format!("POST {path}"),
    )
    .await
}

/// Uploads JSON lines as dataset `name`; its id.
async fn upload(app: &TestApp, name: &str, rows: String) -> String {
    let request = app
        .client
        .post(app.url(&format!("/v1/datasets?name={name}")))
        .header("content-type", "application/x-ndjson")
        .body(rows);
    ok_json(request, &format!("upload {name}")).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn finished(app: &TestApp, path: &str) -> Value {
    for _ in 0..3000 {
        let body = get_json(app, path).await;
        match body["status"].as_str() {
            Some("succeeded") => return body,
            Some("failed" | "cancelled") => panic!("{path} ended {}", body),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{path} did not finish");
}

fn update_spec(dataset: &str, name: &str, new_adapter: &str) -> Value {
    json!({
        "name": name,
        "old": {"model": "model-update/old-base", "adapter": "model-update/old-task"},
        "new": {"model": "model-update/new-base", "adapter": new_adapter},
        "dataset": dataset,
        "task": {"type": "multiple_choice"},
        "options": {"batch_size": 32},
        "gate": [{"metric": "nfr", "max": 0.05}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_page_shows_what_the_api_says_in_a_real_chromium() {
    let Some(chromium) = chromium() else {
        skip_required(
            "the browser test",
            "no chromium installed (apt-get install chromium, or set MUSCLE_CHROMIUM); .ci/run \
             installs it",
        );
        return;
    };
    node_modules().expect("the browser driver installs");
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("muscle.db");
    // The shipped examples, copied: the training writes its adapter into the model root.
    let models = dir.path().join("models");
    for example in ["model-update", "tiny"] {
        copy_dir(
            &repo().join("examples").join(example),
            &models.join(example),
        );
    }

    // The generation evaluation's new side is served (its provenance is shown).
    let served = FakeServer::start(Vec::new(), Act::Answer(Duration::ZERO)).await;
    // A server with a worker: the finished evaluations and the training.
    let app = TestApp::spawn(sqlite_at(&db_path), options(1, &models, &served)).await;
    let rows: String = std::fs::read_to_string(repo().join("examples/model-update/test.jsonl"))
        .unwrap()
        .lines()
        .take(ITEMS)
        .map(|l| format!("{l}\n"))
        .collect();
    let dataset = upload(&app, "model-update", rows).await;
    let update = post_json(
        &app,
        "/v1/evaluations",
        &update_spec(&dataset, "old task -> new task", "model-update/new-task"),
    )
    .await;
    let compat = post_json(
        &app,
        "/v1/evaluations",
        &update_spec(
            &dataset,
            "old task -> new compat",
            "model-update/new-compat",
        ),
    )
    .await;
    let tiny = upload(
        &app,
        "tiny",
        std::fs::read_to_string(repo().join("examples/tiny/questions.jsonl")).unwrap(),
    )
    .await;
    let generation_rows = [
        "The cat sat on the",
        "Once upon a time",
        "The answer is",
        "In the morning we",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| json!({"id": format!("g{i}"), "prompt": p, "target": " mat"}).to_string() + "\n")
    .collect::<String>();
    let generation_data = upload(&app, "generation", generation_rows).await;
    let generation = post_json(
        &app,
        "/v1/evaluations",
        &json!({
            "name": "tiny generation",
            "old": {"model": "tiny/llama"},
            "new": served.side(json!({"tokenizer": "tiny/llama"})),
            "dataset": generation_data,
            "task": {"type": "generation", "max_new_tokens": 8, "metric": "rougeL"},
        }),
    )
    .await;
    // A sampled generation evaluation: the shipped update's bases, 10 draws per instance.
    let categories: String =
        std::fs::read_to_string(repo().join("examples/model-update/categories.jsonl"))
            .unwrap()
            .lines()
            .take(SAMPLED_ITEMS)
            .map(|l| format!("{l}\n"))
            .collect();
    let categories = upload(&app, "categories", categories).await;
    let mut sampled_spec: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/model-update/eval-sampled.json")).unwrap(),
    )
    .unwrap();
    sampled_spec["dataset"] = json!(categories);
    let sampled = post_json(&app, "/v1/evaluations", &sampled_spec).await;
    let output = "trained/tiny-compat";
    let training = post_json(
        &app,
        "/v1/trainings",
        &json!({
            "name": "tiny compatibility adapter",
            "objective": "compatibility",
            "old": {"model": "tiny/llama"},
            "new": {"model": "tiny/llama", "adapter": "tiny/llama-lora"},
            "dataset": tiny,
            "output": output,
            "hyperparameters": {"rank": 8, "alpha": 16, "learning_rate": 0.0005, "epochs": 2,
                                "batch_size": 8, "warmup_steps": 0, "seed": 0},
            "evaluate": {"dataset": tiny, "task": {"type": "multiple_choice"},
                         "gate": [{"metric": "nfr", "max": 0.2}]}
        }),
    )
    .await;
    let update = finished(
        &app,
        &format!("/v1/evaluations/{}", update["id"].as_str().unwrap()),
    )
    .await;
    let compat = finished(
        &app,
        &format!("/v1/evaluations/{}", compat["id"].as_str().unwrap()),
    )
    .await;
    let training = finished(
        &app,
        &format!("/v1/trainings/{}", training["id"].as_str().unwrap()),
    )
    .await;
    let generation_id = generation["id"].as_str().unwrap().to_string();
    let generation = finished(&app, &format!("/v1/evaluations/{generation_id}")).await;
    let generation_instances =
        get_json(&app, &format!("/v1/evaluations/{generation_id}/instances")).await;
    let sampled_id = sampled["id"].as_str().unwrap().to_string();
    let sampled = finished(&app, &format!("/v1/evaluations/{sampled_id}")).await;
    let sampled_first = get_json(
        &app,
        &format!("/v1/evaluations/{sampled_id}/instances?limit=50"),
    )
    .await;
    // Every instance of each verdict: the filtered listings add up to the report's counts.
    let with_verdict = |verdict: &'static str| {
        let (app, id) = (&app, &sampled_id);
        async move {
            let page = get_json(
                app,
                &format!("/v1/evaluations/{id}/instances?verdict={verdict}&limit=500"),
            )
            .await;
            let items = page["items"].as_array().unwrap().clone();
            assert!(
                items.iter().all(|i| i["sampled"]["verdict"] == verdict),
                "?verdict={verdict} lists only its verdict"
            );
            items
        }
    };
    let sampled_better = with_verdict("better").await;
    let report = &sampled["report"]["sampled"];
    for (verdict, count) in [("worse", "reliably_worse"), ("none", "no_reliable_change")] {
        assert_eq!(
            with_verdict(verdict).await.len() as u64,
            report[count].as_u64().unwrap(),
            "{verdict}"
        );
    }
    assert_eq!(
        sampled_better.len() as u64,
        report["reliably_better"].as_u64().unwrap()
    );
    assert!(
        sampled_better.len() > 50,
        "some instances of the shipped update get reliably better, more than a page of them"
    );
    for pair in ["old_vs_new", "old_vs_compat"] {
        let id = training["evaluations"][pair]["id"].as_str().unwrap();
        finished(&app, &format!("/v1/evaluations/{id}")).await;
    }
    let mut app = app;
    app.shutdown().await;

    // The same database behind a server without workers: the running evaluation's only worker
    // is this test, on "another host", writing real instance rows through the store.
    let app = TestApp::spawn(sqlite_at(&db_path), options(0, &models, &served)).await;
    let running = post_json(
        &app,
        "/v1/evaluations",
        &update_spec(
            &dataset,
            "old task -> new task (rerun)",
            "model-update/new-task",
        ),
    )
    .await;
    let running_id = running["id"].as_str().unwrap().to_string();
    let claim = app
        .store
        .claim("another-host", Duration::from_secs(600))
        .await
        .unwrap()
        .expect("the new evaluation's shard");
    assert_eq!(claim.fence.job_id, running_id);
    let records = app
        .store
        .list_instances(
            update["id"].as_str().unwrap(),
            &InstanceFilter {
                page: PageRequest {
                    limit: ITEMS as i64,
                    cursor: None,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
    assert_eq!(records.len(), ITEMS);
    let half = ITEMS / 2;
    app.store
        .write_instances(&claim.fence, &records[..half], half as i64)
        .await
        .unwrap();

    let update_id = update["id"].as_str().unwrap();
    let compat_id = compat["id"].as_str().unwrap();
    let negative = |id: &str| {
        let app = &app;
        let id = id.to_string();
        async move {
            let page = get_json(
                app,
                &format!("/v1/evaluations/{id}/instances?flip=negative&limit=500"),
            )
            .await;
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect::<std::collections::HashSet<_>>()
        }
    };
    let (before, after) = (negative(update_id).await, negative(compat_id).await);
    let listed = get_json(&app, "/v1/evaluations?limit=100").await;
    let trainings = get_json(&app, "/v1/trainings").await;
    let config = json!({
        "base": app.base,
        "chromium": chromium,
        "token": TOKEN,
        "screenshots": std::env::var("MUSCLE_UI_SCREENSHOTS").ok(),
        "evaluations": listed["items"],
        "trainings": trainings["items"],
        "finished": update,
        "compat": compat,
        "running": get_json(&app, &format!("/v1/evaluations/{running_id}")).await,
        "training": training,
        "generation": generation,
        "generation_instances": generation_instances["items"],
        "training_before": get_json(&app, &format!("/v1/evaluations/{}", training["evaluations"]["old_vs_new"]["id"].as_str().unwrap())).await,
        "training_after": get_json(&app, &format!("/v1/evaluations/{}", training["evaluations"]["old_vs_compat"]["id"].as_str().unwrap())).await,
        "fixed": before.difference(&after).count(),
        "introduced": after.difference(&before).count(),
        "items": ITEMS,
        "sampled": sampled,
        "sampled_first": sampled_first["items"],
        "sampled_better": sampled_better,
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let mut node = tokio::process::Command::new("node")
        .arg(repo().join("tests/ui/check.mjs"))
        .arg(&config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut transcript = Vec::new();
    let ran = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("check.mjs: {line}");
            if line == "WAITING FOR PROGRESS" {
                // The rest of the shard's rows, as its worker would write them; the open page
                // must show them without a reload.
                app.store
                    .write_instances(&claim.fence, &records[half..], ITEMS as i64)
                    .await
                    .unwrap();
                stdin.write_all(b"written\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            transcript.push(line);
        }
        node.wait().await.unwrap()
    })
    .await
    .expect("the browser checks finish within 4 minutes");
    assert!(
        ran.success(),
        "the browser checks failed ({ran}):\n{}",
        transcript.join("\n")
    );
    assert!(
        transcript.iter().any(|l| l == "ALL CHECKS PASSED"),
        "check.mjs ended without its last check"
    );
    let mut app = app;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_files_are_served_with_their_type_policy_and_a_validator() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(
        sqlite_at(&dir.path().join("muscle.db")),
        Options::api_only(),
    )
    .await;
    let css = app.get("/ui/style.css").await;
    assert_eq!(css.status(), reqwest::StatusCode::OK);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        css.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let etag = css.headers()["etag"].clone();
    let again = app
        .client
        .get(app.url("/ui/style.css"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag);
    let other = app.get("/ui/js/app.js").await;
    assert_ne!(other.headers()["etag"], etag, "each file has its own");
    assert_eq!(
        app.get("/ui/nope.js").await.status(),
        reqwest::StatusCode::NOT_FOUND
    );
    let mut app = app;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_works_under_its_content_security_policy_in_a_real_chromium() {
    let Some(chromium) = chromium() else {
        skip_required(
            "the browser test",
            "no chromium installed (apt-get install chromium, or set MUSCLE_CHROMIUM)",
        );
        return;
    };
    node_modules().expect("the browser driver installs");
    let app = TestApp::spawn(sqlite_db().await, Options::api_only()).await;
    let run = tokio::process::Command::new("node")
        .arg(repo().join("tests/ui/docs.mjs"))
        .arg(&chromium)
        .arg(&app.base)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser checks finish within 2 minutes")
        .expect("node runs");
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && transcript.contains("ALL CHECKS PASSED"),
        "the /docs browser checks failed:\n{transcript}"
    );
    app.stop().await;
}
