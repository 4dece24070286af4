//! Endpoint sides against a small HTTP server this test starts (fake_endpoint.rs), which
//! misbehaves as remote servers do: 429 with Retry-After, 500s, hanging requests. What is checked is the client's
//! manners: retries and backoff, timeouts, requests in flight, batching, cancellation, the key
//! sent and never shown, and the checks at submission. The numbers a real server gives are
//! checked in `endpoint_servers.rs`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_endpoint::*;
use crate::helpers::*;

const GEN_ROWS: &str = concat!(
    r#"{"id": "g1", "prompt": "2 + 2 =", "target": "4"}"#,
    "\n",
    r#"{"id": "g2", "prompt": "3 + 1 =", "target": "4"}"#,
    "\n",
    r#"{"id": "g3", "prompt": "5 - 1 =", "target": "4"}"#,
    "\n",
    r#"{"id": "g4", "prompt": "1 + 1 =", "target": "2"}"#,
    "\n",
);

fn generation_spec(dataset: &str, new: Value) -> Value {
    json!({
        "old": {"model": "models/llama-gqa"},
        "new": new,
        "dataset": dataset,
        "task": {"type": "generation", "max_new_tokens": 4, "stop": ["\n"]},
        "options": {"batch_size": 4},
    })
}

fn rows(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\": \"r{i}\", \"prompt\": \"{i} + 0 =\", \"target\": \"{i}\"}}\n"))
        .collect()
}

#[tokio::test]
async fn a_busy_failing_then_hanging_server_is_retried_with_backoff_and_timeouts() {
    let server = FakeServer::start(Vec::new(), Act::Answer(Duration::ZERO)).await;
    on_every_backend(
        || server.options(),
        |app| async {
            server.script.seen.lock().unwrap().clear();
            server.script.acts.lock().unwrap().extend([
                Act::Status(429, Some(1)),
                Act::Status(500, None),
                Act::Hang,
            ]);
            let dataset = app
                .upload_ok(&GEN_ROWS[..GEN_ROWS.find('\n').unwrap() + 1])
                .await;
            let new = server.side(json!({"timeout_seconds": 1, "max_retries": 5}));
            let location = app.submit_evaluation(&generation_spec(&dataset, new)).await;
            let done = app.wait_finished(&location).await;
            assert_eq!(done["status"], "succeeded", "{done}");
            let seen = server.seen();
            // 429, 500, a hang, an answer; then the report's one-token provenance request.
            assert_eq!(seen.len(), 5, "{seen:?}");
            assert_eq!(seen[4].body["max_tokens"], 1);
            // Retry-After: 1 was waited for; the hang ended at the 1 s timeout.
            assert!(seen[1].at - seen[0].at >= Duration::from_millis(990));
            assert!(seen[3].at - seen[2].at >= Duration::from_millis(990));
            for request in &seen[..4] {
                assert_eq!(
                    request.authorization.as_deref(),
                    Some(format!("Bearer {KEY}").as_str())
                );
                assert_eq!(request.body["model"], "served-model");
                assert_eq!(request.body["temperature"], 0.0);
                assert_eq!(request.body["max_tokens"], 4);
                assert_eq!(request.body["stop"], json!(["\n"]));
                assert!(request.body["prompt"].as_array().unwrap()[0].is_u64());
            }
            let listing: Value = app
                .get(&format!("{location}/instances"))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(listing["items"][0]["new"]["output"], "4");
            assert_eq!(listing["items"][0]["new"]["score"], 1.0);
            let provenance = &done["report"]["provenance"]["new"];
            assert_eq!(provenance["kind"], "endpoint");
            assert_eq!(provenance["server"], "fake-vllm/0");
            assert_eq!(provenance["system_fingerprint"], "fp-test");
            assert_eq!(provenance["listed"]["max_model_len"], 256);
            assert_eq!(done["report"]["provenance"]["old"]["kind"], "model");
            assert!(!done.to_string().contains(KEY));
            let markdown = app
                .get(&format!("{location}/report.md"))
                .await
                .text()
                .await
                .unwrap();
            assert!(markdown.contains("served\\-model served at"), "{markdown}");
            app
        },
    )
    .await;
}

#[tokio::test]
async fn a_server_that_keeps_failing_fails_the_job_with_its_last_error_and_no_secret() {
    let server = FakeServer::start(Vec::new(), Act::Status(503, None)).await;
    on_every_backend(
        || server.options(),
        |app| async {
            server.script.seen.lock().unwrap().clear();
            // One row, one request: each try is counted.
            let dataset = app.upload_ok(&rows(1)).await;
            let new = server.side(json!({"max_retries": 1}));
            let location = app.submit_evaluation(&generation_spec(&dataset, new)).await;
            let done = app.wait_finished(&location).await;
            assert_eq!(done["status"], "failed", "{done}");
            let error = done["error"].as_str().unwrap();
            assert!(error.contains("503"), "{error}");
            assert!(
                error.contains("POST /completions failed 2 times"),
                "{error}"
            );
            assert!(!error.contains(KEY), "{error}");
            assert!(!error.contains(&server.address), "{error}");
            // Each of the shard's 3 attempts tried twice.
            assert_eq!(server.seen().len(), 6);
            assert!(!done.to_string().contains(KEY));
            app
        },
    )
    .await;
}

#[tokio::test]
async fn requests_in_flight_stay_within_max_in_flight_and_prompts_are_batched() {
    let server = FakeServer::start(Vec::new(), Act::Answer(Duration::from_millis(150))).await;
    let app = TestApp::spawn(sqlite_db().await, server.options()).await;
    let dataset = app.upload_ok(&rows(24)).await;
    let generations = |model: &str| -> Vec<Seen> {
        server
            .seen()
            .into_iter()
            .filter(|s| s.body["model"] == model && s.body["max_tokens"] == 4)
            .collect()
    };
    // Both sides served: every token counted comes from a server.
    let mut spec = generation_spec(&dataset, server.side(json!({"max_in_flight": 3})));
    spec["old"] = server.side(json!({"model": "other-model", "max_in_flight": 3}));
    let location = app.submit_evaluation(&spec).await;
    let done = app.wait_finished(&location).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(generations("served-model").len(), 24);
    assert_eq!(generations("other-model").len(), 24);
    assert_eq!(server.most_in_flight(), 3);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let tokens = metrics
        .lines()
        .find_map(|l| l.strip_prefix("muscle_tokens_scored_total "))
        .expect("muscle_tokens_scored_total");
    assert!(tokens.trim().parse::<f64>().unwrap() > 48.0, "{tokens}");

    server.script.seen.lock().unwrap().clear();
    let new = server.side(json!({"max_in_flight": 2, "prompts_per_request": 5}));
    let location = app.submit_evaluation(&generation_spec(&dataset, new)).await;
    let done = app.wait_finished(&location).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let sizes: Vec<usize> = generations("served-model")
        .iter()
        .map(|s| s.body["prompt"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 24);
    assert!(
        sizes.iter().all(|&n| n <= 5) && sizes.contains(&5),
        "{sizes:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_job_stops_sending_at_once() {
    let server = FakeServer::start(Vec::new(), Act::Hang).await;
    // A short lease: the worker hears of the cancel at its next heartbeat (a third of it).
    let options = Options {
        lease_seconds: 3,
        ..server.options()
    };
    let app = TestApp::spawn(sqlite_db().await, options).await;
    let dataset = app.upload_ok(&rows(16)).await;
    let new = server.side(json!({"max_in_flight": 2, "timeout_seconds": 600}));
    let location = app.submit_evaluation(&generation_spec(&dataset, new)).await;
    let started = Instant::now();
    while server.seen().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no request came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel = app
        .post_json(&format!("{location}/cancel"), &json!({}))
        .await;
    assert!(cancel.status().is_success(), "{}", cancel.status());
    let cancelled_at = Instant::now();
    let done = app.wait_finished(&location).await;
    assert_eq!(done["status"], "cancelled");
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.seen().len(),
        2,
        "requests were sent after the cancel"
    );
    app.stop().await;
}

#[tokio::test]
async fn submission_names_every_side_field_the_server_or_the_policy_refuses() {
    let server = FakeServer::start(Vec::new(), Act::Answer(Duration::ZERO)).await;
    let app = TestApp::spawn(sqlite_db().await, server.options()).await;
    let generation = app.upload_ok(GEN_ROWS).await;
    let choice = app.upload_ok(MC_ROWS).await;

    let other_port = json!({"url": "http://127.0.0.1:1/v1"});
    let problem = app
        .refused(
            "/v1/evaluations",
            &generation_spec(&generation, server.side(other_port)),
        )
        .await;
    assert_eq!(fields(&problem), ["new.endpoint.url"], "{problem}");
    assert!(problem.to_string().contains("MUSCLE_ENDPOINT_HOSTS"));

    let bad_key = json!({"api_key_env": "HOME", "model": "", "tokenizer": "models/nope",
                         "max_in_flight": 0, "url": "ftp://x/v1"});
    let problem = app
        .refused(
            "/v1/evaluations",
            &generation_spec(&generation, server.side(bad_key)),
        )
        .await;
    assert_eq!(
        fields(&problem),
        [
            "new.endpoint.url",
            "new.endpoint.model",
            "new.endpoint.tokenizer",
            "new.endpoint.api_key_env",
            "new.endpoint.max_in_flight"
        ],
        "{problem}"
    );

    let unset = json!({"api_key_env": "MUSCLE_ENDPOINT_KEY_UNSET"});
    let problem = app
        .refused(
            "/v1/evaluations",
            &generation_spec(&generation, server.side(unset)),
        )
        .await;
    assert_eq!(fields(&problem), ["new.endpoint.api_key_env"], "{problem}");

    let unknown = json!({"model": "llama-70b"});
    let problem = app
        .refused(
            "/v1/evaluations",
            &generation_spec(&generation, server.side(unknown)),
        )
        .await;
    assert_eq!(fields(&problem), ["new.endpoint.model"], "{problem}");
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("served-model, other-model"),
        "the models it does list: {message}"
    );

    // A redirect is not followed: the server must be allowed by the address it answers at.
    let moved = json!({"url": format!("http://{}/moved/v1", server.address)});
    let problem = app
        .refused(
            "/v1/evaluations",
            &generation_spec(&generation, server.side(moved)),
        )
        .await;
    assert_eq!(fields(&problem), ["new.endpoint.url"], "{problem}");
    assert!(problem.to_string().contains("307"), "{problem}");

    let mut chat = evaluation_spec(&choice);
    chat["new"] = server.side(json!({"api": "chat"}));
    let problem = app.refused("/v1/evaluations", &chat).await;
    assert_eq!(fields(&problem), ["new.endpoint.api"], "{problem}");
    assert!(problem.to_string().contains("log-probabilities"));

    // Nothing was sent to the server's completions by any refused submission.
    assert!(server.seen().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn muscle_eval_runs_a_served_side_with_the_hosts_and_keys_of_its_environment() {
    let server = FakeServer::start(Vec::new(), Act::Answer(Duration::ZERO)).await;
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("rows.jsonl");
    std::fs::write(&dataset, GEN_ROWS).unwrap();
    let mut spec = generation_spec("unused", server.side(json!({})));
    spec["dataset"] = json!({"path": dataset});
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let run = |hosts: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_muscle"))
            .arg("eval")
            .arg(&spec_path)
            .env("MUSCLE_MODEL_DIR", model_dir())
            .env("MUSCLE_DATA_DIR", dir.path().join("data"))
            .env("MUSCLE_ENDPOINT_HOSTS", hosts)
            .env(KEY_VAR, KEY)
            .env_remove("DATABASE_URL")
            .output()
    };
    let output = run(&server.address).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["n"], 4);
    assert_eq!(report["new"]["accuracy"], 0.75, "3 of 4 targets are \"4\"");
    assert_eq!(report["provenance"]["new"]["server"], "fake-vllm/0");
    assert!(!stderr.contains(KEY) && !report.to_string().contains(KEY));

    // Not allowed where it runs: invalid input, exit code 2, naming the field.
    let output = run("").await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("new.endpoint.url"), "{stderr}");
}

#[tokio::test]
async fn a_served_old_side_is_asked_twice_for_the_noise_floor() {
    let server = FakeServer::start(Vec::new(), Act::Answer(Duration::ZERO)).await;
    let app = TestApp::spawn(sqlite_db().await, server.options()).await;
    let dataset = app.upload_ok(GEN_ROWS).await;
    let mut spec = generation_spec(&dataset, json!({"model": "models/llama-gqa"}));
    spec["old"] = server.side(json!({}));
    spec["options"]["noise_floor"] = json!(true);
    let location = app.submit_evaluation(&spec).await;
    let done = app.wait_finished(&location).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let asked = server
        .seen()
        .iter()
        .filter(|s| s.body["max_tokens"] == 4)
        .count();
    assert_eq!(asked, 8, "each of 4 rows twice");
    assert_eq!(done["report"]["noise_floor"]["self_flip_rate"], 0.0);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_endpoint_host_stops_serve_and_worker_from_starting() {
    for command in ["serve", "worker"] {
        let output = muscle_exits(
            command,
            &[("MUSCLE_ENDPOINT_HOSTS", "vllm-a:8000,[fd00::1:8000")],
        )
        .await;
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("MUSCLE_ENDPOINT_HOSTS") && stderr.contains("[fd00::1:8000"),
            "{command}: {stderr}"
        );
    }
}
