use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use muscle::worker::{Executor, Interruption, ShardContext, ShardError, ShardResult};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_runs_end_to_end_on_real_models() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let response = app
            .post_json("/v1/evaluations", &evaluation_spec(&dataset))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let created: Value = response.json().await.unwrap();
        assert_eq!(
            location,
            format!("/v1/evaluations/{}", created["id"].as_str().unwrap())
        );
        assert_eq!(created["status"], "queued");
        assert_eq!(created["progress"], json!({"done": 0, "total": 6}));
        assert_eq!(
            created["spec"]["task"],
            json!({"type": "multiple_choice", "delimiter": " ", "score": "acc"})
        );

        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["progress"], json!({"done": 6, "total": 6}));
        assert!(done["started_at"].is_string() && done["finished_at"].is_string());
        let report = &done["report"];
        assert_eq!(report["n"], 6);
        assert_eq!(report["partial"], false);
        let counts = &report["counts"];
        let sum: u64 = [
            "negative_flips",
            "positive_flips",
            "both_correct",
            "both_wrong",
        ]
        .iter()
        .map(|k| counts[k].as_u64().unwrap())
        .sum();
        assert_eq!(sum, 6);
        assert_eq!(report["gate"]["passed"], true);
        assert_eq!(report["gate"]["checks"][0]["metric"], "nfr");

        // Every instance row: both models' per-choice scores, a prediction that is their argmax,
        // and a flip label consistent with correctness.
        let page: Value = app
            .get(&format!("{location}/instances?limit=100"))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 6);
        // Each item says what the models were asked: the dataset row's prompt and choices.
        assert_eq!(items[0]["prompt"], "The cat sat on the");
        assert_eq!(items[0]["choices"], json!(["mat", "moon", "dog"]));
        assert!(items[0].get("targets").is_none());
        let mut old_differs_from_new = false;
        for item in items {
            for side in ["old", "new"] {
                let scores: Vec<f64> = item[side]["scores"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_f64().unwrap())
                    .collect();
                assert!(scores.iter().all(|s| *s < 0.0 && s.is_finite()));
                let argmax = scores
                    .iter()
                    .enumerate()
                    .fold(0, |best, (i, s)| if *s > scores[best] { i } else { best });
                assert_eq!(item[side]["prediction"], json!(argmax));
                assert_eq!(
                    item[side]["correct"],
                    json!(Some(argmax as i64) == item["gold"].as_i64())
                );
            }
            old_differs_from_new |= item["old"]["scores"] != item["new"]["scores"];
            let flip = match (
                item["old"]["correct"].as_bool().unwrap(),
                item["new"]["correct"].as_bool().unwrap(),
            ) {
                (true, true) => "both_correct",
                (true, false) => "negative",
                (false, true) => "positive",
                (false, false) => "both_wrong",
            };
            assert_eq!(item["flip"], flip);
        }
        assert!(
            old_differs_from_new,
            "the adapter changed the new model's scores"
        );

        let math: Value = app
            .get(&format!("{location}/instances?slice=topic%3Dmath"))
            .await
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = math["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["q2", "q6"]);
        let both_correct = counts["both_correct"].as_u64().unwrap() as usize;
        let listed: Value = app
            .get(&format!("{location}/instances?flip=both_correct"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["items"].as_array().unwrap().len(), both_correct);
        let bad = problem(
            app.get(&format!("{location}/instances?flip=sideways"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&bad), vec!["flip"]);
        // A slice the report does not know is refused with the known ones, not listed empty.
        let bad = problem(
            app.get(&format!("{location}/instances?slice=topic%3Dmaths"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&bad), vec!["slice"]);
        // A cursor past i64 is no cursor this API handed out (it was a 500).
        let bad_cursor = problem(
            app.get(&format!("{location}/instances?cursor=9223372036854775808"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&bad_cursor), vec!["cursor"]);
        let message = bad["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("topic=math") && message.contains("answer=0"),
            "{message}"
        );

        let markdown = app.get(&format!("{location}/report.md")).await;
        assert_eq!(markdown.status(), StatusCode::OK);
        assert!(
            markdown.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/markdown")
        );
        let markdown = markdown.text().await.unwrap();
        assert!(
            markdown.contains("**Gate: PASSED** (1 check)"),
            "{markdown}"
        );
        assert!(markdown.contains("| instances | 6 |"), "{markdown}");

        let csv = app.get(&format!("{location}/instances.csv")).await;
        assert_eq!(csv.status(), StatusCode::OK);
        let csv = csv.text().await.unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 7);
        assert!(lines[0].starts_with("index,id,flip,gold,tags,old_prediction"));
        assert!(
            lines[0].ends_with(
                ",prompt,choices,targets,old_p,new_p,old_samples,new_samples,verdict,q_value"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("0,q1,"));
        assert!(
            // Multiple choice: no targets, no draws, no verdict.
            lines[1].ends_with(r#",The cat sat on the,"[""mat"",""moon"",""dog""]",,,,,,,"#),
            "{}",
            lines[1]
        );
        app
    })
    .await;
}

/// A model root holding a copy of the fixture Llama, the same folder claiming an architecture
/// the engine does not run, and an adapter trained on another base.
fn root_with_misfits() -> PathBuf {
    let root = tempfile::tempdir().unwrap().keep();
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    };
    let fixtures = model_dir();
    copy(
        &fixtures.join("models/llama-gqa"),
        &root.join("models/llama-gqa"),
    );
    copy(
        &fixtures.join("models/llama-gqa"),
        &root.join("models/gpt2"),
    );
    let config = root.join("models/gpt2/config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    v["architectures"] = json!(["GPT2LMHeadModel"]);
    std::fs::write(&config, v.to_string()).unwrap();
    copy(
        &fixtures.join("models/mistral"),
        &root.join("models/mistral"),
    );
    // Weights linked out of the root, and an index naming a shard by an absolute path.
    copy(
        &fixtures.join("models/llama-gqa"),
        &root.join("models/linked"),
    );
    std::fs::remove_file(root.join("models/linked/model.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        fixtures.join("models/llama-gqa/model.safetensors"),
        root.join("models/linked/model.safetensors"),
    )
    .unwrap();
    copy(
        &fixtures.join("models/llama-gqa"),
        &root.join("models/indexed"),
    );
    std::fs::remove_file(root.join("models/indexed/model.safetensors")).unwrap();
    let outside = fixtures.join("models/llama-gqa/model.safetensors");
    std::fs::write(
        root.join("models/indexed/model.safetensors.index.json"),
        json!({"weight_map": {"model.embed_tokens.weight": outside}}).to_string(),
    )
    .unwrap();
    for adapter in ["bad-shape", "llama-gqa-lora-list"] {
        copy(
            &fixtures.join("adapters").join(adapter),
            &root.join("adapters").join(adapter),
        );
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_models_and_misfit_adapters_are_refused_at_submission() {
    let root = root_with_misfits();
    let options = || Options {
        model_dir: root.clone(),
        ..Options::api_only()
    };
    on_every_backend(options, |app| {
        let root = root.clone();
        async move {
            let dataset = app.upload_ok(MC_ROWS).await;
            let mut spec = evaluation_spec(&dataset);
            spec["old"]["model"] = json!("models/gpt2");
            spec["new"]["adapter"] = json!("adapters/bad-shape");
            let body = app.refused("/v1/evaluations", &spec).await;
            assert_eq!(fields(&body), vec!["old.model", "new.adapter"]);
            let old = body["errors"][0]["message"].as_str().unwrap();
            assert!(
                old.contains("GPT2LMHeadModel") && old.contains("Gemma2ForCausalLM"),
                "the message names the architecture and the supported ones: {old}"
            );
            let new = body["errors"][1]["message"].as_str().unwrap();
            assert!(
                new.contains("shape mismatch for model.layers.0.self_attn.v_proj"),
                "{new}"
            );
            assert!(
                !new.contains(root.to_str().unwrap()),
                "no server path: {new}"
            );

            // Same shapes, but trained on another base (its base_model_name_or_path).
            let mut spec = evaluation_spec(&dataset);
            spec["new"] =
                json!({"model": "models/mistral", "adapter": "adapters/llama-gqa-lora-list"});
            let body = app.refused("/v1/evaluations", &spec).await;
            assert_eq!(fields(&body), vec!["new.adapter"]);
            let message = body["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains("models/llama-gqa"), "{message}");

            // Nothing outside MUSCLE_MODEL_DIR is read, through a link or an index.
            let mut spec = evaluation_spec(&dataset);
            spec["old"] = json!({"model": "models/linked"});
            spec["new"] = json!({"model": "models/indexed"});
            let body = app.refused("/v1/evaluations", &spec).await;
            assert_eq!(fields(&body), vec!["old.model", "new.model"]);
            let linked = body["errors"][0]["message"].as_str().unwrap();
            assert!(
                linked.contains("model.safetensors leads outside MUSCLE_MODEL_DIR"),
                "{linked}"
            );
            let indexed = body["errors"][1]["message"].as_str().unwrap();
            assert!(
                indexed.contains("not a file of the model folder"),
                "{indexed}"
            );

            let listed = app
                .get("/v1/evaluations")
                .await
                .json::<Value>()
                .await
                .unwrap();
            assert_eq!(
                listed["items"].as_array().unwrap().len(),
                0,
                "nothing was created"
            );

            let catalog: Value = app.get("/v1/models").await.json().await.unwrap();
            let gpt2 = catalog["models"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "models/gpt2")
                .unwrap();
            assert_eq!(
                (&gpt2["family"], &gpt2["supported"]),
                (&json!(null), &json!(false))
            );
            app
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_name_every_field_and_create_nothing() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let response = app
            .client
            .post(app.url("/v1/evaluations"))
            .header("content-type", "text/plain")
            .body(evaluation_spec(&dataset).to_string())
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

        let mut spec = evaluation_spec(&dataset);
        spec["old"]["model"] = json!("models/llama-gqq");
        spec["new"]["adapter"] = json!("../engine/adapters/llama-gqa-lora-list");
        spec["gate"] = json!([{"metric": "nfr", "max": 0.1}, {"metric": "flips", "max": 1}]);
        spec["options"]["batch_size"] = json!(0);
        let body = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(
            fields(&body),
            vec![
                "old.model",
                "new.adapter",
                "options.batch_size",
                "gate[1].metric"
            ]
        );

        let mut spec = evaluation_spec("no-such-dataset");
        spec["task"] = json!({"type": "generation"});
        let body = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&body), vec!["dataset"]);

        let mut spec = evaluation_spec(&dataset);
        spec["task"] = json!({"type": "generation"});
        let body = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&body), vec!["task.type"]);

        let mut spec = evaluation_spec(&dataset);
        spec["dataset"] = json!({"path": "/etc/passwd"});
        let body = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&body), vec!["dataset"]);

        let mut spec = evaluation_spec(&dataset);
        spec["old"]["model"] = json!("/work/models/llama");
        spec["options"]["batch_sise"] = json!(3);
        let body = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&body), vec!["options.batch_sise"]);

        // Every unknown field at once, wherever it is.
        let mut spec = evaluation_spec(&dataset);
        spec["options"]["batch_sise"] = json!(3);
        spec["gate"] = json!([{"metric": "nfr", "maximum": 0.1}]);
        spec["nmae"] = json!("typo");
        let body = app.refused("/v1/evaluations", &spec).await;
        let mut got = fields(&body);
        got.sort();
        assert_eq!(
            got,
            vec!["gate[0].maximum", "nmae", "options.batch_sise"],
            "{body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("batch_sise")
        );

        let response = app
            .client
            .post(app.url("/v1/evaluations"))
            .header("content-type", "application/json")
            .body("{\"old\": ")
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;

        let page: Value = app.get("/v1/evaluations").await.json().await.unwrap();
        assert_eq!(
            page["items"],
            json!([]),
            "no refused submission left a job behind"
        );
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_job() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let spec = evaluation_spec(&dataset);
        let post = |body: Value| {
            app.client
                .post(app.url("/v1/evaluations"))
                .header("idempotency-key", "release-7")
                .json(&body)
                .send()
        };
        let first = post(spec.clone()).await.unwrap();
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first: Value = first.json().await.unwrap();
        let again = post(spec.clone()).await.unwrap();
        assert_eq!(again.status(), StatusCode::ACCEPTED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["id"], first["id"]);
        let mut other = spec.clone();
        other["name"] = json!("another");
        let body = problem(post(other).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&body), vec!["Idempotency-Key"]);
        let page: Value = app.get("/v1/evaluations").await.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_and_pages_stay_stable() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut spec = evaluation_spec(&dataset);
            spec["name"] = json!(if i % 2 == 0 { "even" } else { "odd" });
            let body: Value = app
                .post_json("/v1/evaluations", &spec)
                .await
                .json()
                .await
                .unwrap();
            ids.push(body["id"].as_str().unwrap().to_string());
        }
        let cancelled = ids[6].clone();
        app.client
            .post(app.url(&format!("/v1/evaluations/{cancelled}/cancel")))
            .send()
            .await
            .unwrap();

        let mut seen = Vec::new();
        let mut path = "/v1/evaluations?limit=3&status=queued".to_string();
        loop {
            let page: Value = app.get(&path).await.json().await.unwrap();
            for item in page["items"].as_array().unwrap() {
                assert_eq!(item["status"], "queued");
                assert_eq!(item["report"], Value::Null);
                seen.push(item["id"].as_str().unwrap().to_string());
            }
            // A job arriving between pages does not shift the pages already handed out.
            app.post_json("/v1/evaluations", &evaluation_spec(&dataset))
                .await;
            match page["next_cursor"].as_str() {
                Some(cursor) => {
                    path = format!("/v1/evaluations?limit=3&status=queued&cursor={cursor}")
                }
                None => break,
            }
        }
        let expected: Vec<String> = ids[..6].iter().rev().cloned().collect();
        assert_eq!(seen, expected);

        let odd: Value = app
            .get("/v1/evaluations?name=odd&limit=500")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(odd["items"].as_array().unwrap().len(), 3);
        let body = problem(
            app.get("/v1/evaluations?status=done").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["status"]);
        let body = problem(
            app.get("/v1/evaluations?limit=501").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["limit"]);
        app
    })
    .await;
}

/// Holds its shard until told to stop, and records why it stopped.
struct Blocking {
    started: Arc<AtomicUsize>,
    stopped: Arc<std::sync::Mutex<Vec<Interruption>>>,
}

#[async_trait]
impl Executor for Blocking {
    async fn run(&self, ctx: &ShardContext) -> ShardResult {
        self.started.fetch_add(1, Ordering::SeqCst);
        ctx.stop.cancelled().await;
        let error = ctx.check().unwrap_err();
        if let ShardError::Interrupted(why) = &error {
            self.stopped.lock().unwrap().push(*why);
        }
        Err(error)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_evaluations() {
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(std::sync::Mutex::new(Vec::new()));
    let options = {
        let started = started.clone();
        let stopped = stopped.clone();
        move || Options {
            executor: Some(Arc::new(Blocking {
                started: started.clone(),
                stopped: stopped.clone(),
            })),
            lease_seconds: 1,
            ..Options::default()
        }
    };
    on_every_backend(options, |app| {
        let started = started.clone();
        let stopped = stopped.clone();
        async move {
            started.store(0, Ordering::SeqCst);
            stopped.lock().unwrap().clear();
            let dataset = app.upload_ok(MC_ROWS).await;
            let running: Value = app
                .post_json("/v1/evaluations", &evaluation_spec(&dataset))
                .await
                .json()
                .await
                .unwrap();
            let running_id = running["id"].as_str().unwrap().to_string();
            while started.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let queued: Value = app
                .post_json("/v1/evaluations", &evaluation_spec(&dataset))
                .await
                .json()
                .await
                .unwrap();
            let queued_id = queued["id"].as_str().unwrap();

            let response = app
                .client
                .post(app.url(&format!("/v1/evaluations/{queued_id}/cancel")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["status"], "cancelled");

            let before: Value = app
                .get(&format!("/v1/evaluations/{running_id}"))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(before["status"], "running");
            let response = app
                .client
                .post(app.url(&format!("/v1/evaluations/{running_id}/cancel")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            // The worker learns of it at its next heartbeat and stops.
            for _ in 0..300 {
                if !stopped.lock().unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(*stopped.lock().unwrap(), vec![Interruption::Cancelled]);
            let after: Value = app
                .get(&format!("/v1/evaluations/{running_id}"))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(after["status"], "cancelled");

            let conflict = problem(
                app.client
                    .post(app.url(&format!("/v1/evaluations/{running_id}/cancel")))
                    .send()
                    .await
                    .unwrap(),
                StatusCode::CONFLICT,
            )
            .await;
            assert!(
                conflict["detail"]
                    .as_str()
                    .unwrap()
                    .contains("has finished (cancelled)")
            );
            problem(
                app.client
                    .post(app.url("/v1/evaluations/0190-none/cancel"))
                    .send()
                    .await
                    .unwrap(),
                StatusCode::NOT_FOUND,
            )
            .await;
            app
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noise_floor_reruns_the_old_model() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let mut spec = evaluation_spec(&dataset);
        spec["options"]["noise_floor"] = json!(true);
        let response = app.post_json("/v1/evaluations", &spec).await;
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        // The engine's results do not depend on batch size or order, so a second run of the
        // old model flips nothing.
        let noise = &done["report"]["noise_floor"];
        assert_eq!(noise["self_flip_rate"], 0.0, "{noise}");
        assert!(noise["nfr_exceeds_noise"].is_boolean());
        let page: Value = app
            .get(&format!("{location}/instances"))
            .await
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["old"]["rerun_score"], item["old"]["score"]);
            assert!(item["new"].get("rerun_score").is_none());
        }
        let plain: Value = app
            .post_json("/v1/evaluations", &evaluation_spec(&dataset))
            .await
            .json()
            .await
            .unwrap();
        let plain = app
            .wait_finished(&format!(
                "/v1/evaluations/{}",
                plain["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(plain["report"]["noise_floor"], Value::Null);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_wait_answers_when_the_job_finishes() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let response = app
            .post_json("/v1/evaluations", &evaluation_spec(&dataset))
            .await;
        let location = response.headers()["location"].to_str().unwrap().to_string();
        // One request: held until the job leaves queued/running (the worker takes seconds).
        let done: Value = app
            .get(&format!("{location}?wait=60"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["report"]["partial"], false);

        let body = problem(
            app.get(&format!("{location}?wait=61")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["wait"]);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_a_job_nobody_works_returns_it_queued_after_the_wait() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let response = app
            .post_json("/v1/evaluations", &evaluation_spec(&dataset))
            .await;
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let started = std::time::Instant::now();
        let job: Value = app
            .get(&format!("{location}?wait=1"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["status"], "queued");
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        let body = problem(
            app.get("/v1/trainings/00000000-0000-0000-0000-000000000000?wait=100")
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["wait"]);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_with_the_field_named() {
    on_every_backend(Options::api_only, |app| async move {
        let body = problem(
            app.get("/v1/evaluations?name=a%00b").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["name"]);
        let body = problem(
            app.get("/v1/evaluations/ab%00cd").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), vec!["(path)"]);

        let dataset = app.upload_ok(MC_ROWS).await;
        let mut spec = evaluation_spec(&dataset);
        spec["name"] = json!("release\u{0}1");
        let body = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&body), vec!["name"]);

        let row = "{\"id\": \"q\\u0000\", \"prompt\": \"p\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n";
        let body = problem(app.upload(row).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["line"], 1);
        assert_eq!(body["errors"][0]["field"], "id");
        let listed: Value = app.get("/v1/evaluations").await.json().await.unwrap();
        assert_eq!(listed["items"].as_array().unwrap().len(), 0, "nothing was created");
        app
    })
    .await;
}
