//! lm-evaluation-harness samples files as datasets: muscle runs the same models on the exact
//! requests lm-eval recorded (tests/fixtures/lmeval, written by lm_eval itself) and must give
//! the same per-choice log-likelihoods and the same greedy outputs.

use std::collections::HashMap;
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

fn samples(side: &str, task: &str) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(fixture_path(side, task)).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, lines)
}

/// Recorded lines by doc_id (the first filter's line for generation tasks).
fn by_doc(lines: &[Value]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for line in lines {
        out.entry(line["doc_id"].to_string())
            .or_insert_with(|| line.clone());
    }
    out
}

async fn upload_samples(app: &TestApp, text: &str, query: &str) -> Value {
    let response = app
        .client
        .post(app.url(&format!("/v1/datasets?format=lm-eval&{query}")))
        .header("content-type", "application/x-ndjson")
        .body(text.to_string())
        .send()
        .await
        .unwrap();
    // 200: the same file under the same name again (that dataset).
    assert!(matches!(
        response.status(),
        StatusCode::CREATED | StatusCode::OK
    ));
    response.json().await.unwrap()
}

async fn instances(app: &TestApp, location: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("{location}/instances?limit=500"))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

fn sides() -> Value {
    json!({
        "old": {"model": "models/llama-gqa"},
        "new": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-list"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_choice_log_likelihoods_match_the_recorded_lm_eval_runs() {
    let (text, _) = samples("old", "muscle_mc");
    let recorded = [
        ("old", samples("old", "muscle_mc").1),
        ("new", samples("new", "muscle_mc").1),
    ];
    on_every_backend(Options::default, |app| {
        let text = text.clone();
        let recorded = recorded.clone();
        async move {
            let dataset = upload_samples(&app, &text, "name=mc&slice_by=activity_label").await;
            assert_eq!(dataset["kind"], "multiple_choice");
            assert_eq!(dataset["rows"], 24);
            let mut spec = sides();
            spec["dataset"] = dataset["id"].clone();
            spec["task"] = json!({"type": "multiple_choice"});
            // add_bos "auto" (the default), as lm-eval 0.4.13 left BOS to this tokenizer,
            // whose post-processor prepends it.
            spec["options"] = json!({"batch_size": 4});
            let response = app.post_json("/v1/evaluations", &spec).await;
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let location = response.headers()["location"].to_str().unwrap().to_string();
            let done = app.wait_finished(&location).await;
            assert_eq!(done["status"], "succeeded", "{done}");

            let items = instances(&app, &location).await;
            assert_eq!(items.len(), 24);
            let mut worst: f64 = 0.0;
            for (side, lines) in &recorded {
                let lines = by_doc(lines);
                for item in &items {
                    let line = &lines[item["id"].as_str().unwrap()];
                    let scores = item[side]["scores"].as_array().unwrap();
                    let logged = line["filtered_resps"].as_array().unwrap();
                    assert_eq!(scores.len(), logged.len());
                    for (ours, theirs) in scores.iter().zip(logged) {
                        let theirs: f64 = theirs[0].as_str().unwrap().parse().unwrap();
                        worst = worst.max((ours.as_f64().unwrap() - theirs).abs());
                    }
                    assert_eq!(
                        item[side]["correct"].as_bool().unwrap(),
                        line["acc"].as_f64().unwrap() == 1.0,
                        "{side} doc {}",
                        item["id"]
                    );
                    assert_eq!(
                        item["tags"]["activity_label"],
                        line["doc"]["activity_label"]
                    );
                }
            }
            assert!(worst < 1e-4, "worst |d log-likelihood| {worst}");
            eprintln!("worst |d log-likelihood| against lm-eval: {worst:.2e}");
            let slices = done["report"]["slices"].to_string();
            assert!(slices.contains("Cooking"), "{slices}");
            app
        }
    })
    .await;
}

/// Runs old and new on an imported generation file with `task` and returns the instances.
async fn generate_on(app: &TestApp, file: &str, task: Value) -> Vec<Value> {
    let (text, _) = samples("old", file);
    let dataset = upload_samples(app, &text, &format!("name={file}")).await;
    assert_eq!(dataset["kind"], "generation");
    let mut spec = sides();
    spec["dataset"] = dataset["id"].clone();
    spec["task"] = task;
    spec["options"] = json!({"batch_size": 4});
    let response = app.post_json("/v1/evaluations", &spec).await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "{}",
        response.text().await.unwrap()
    );
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let done = app.wait_finished(&location).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    instances(app, &location).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_outputs_answers_and_exact_match_match_the_recorded_lm_eval_generations() {
    on_every_backend(Options::default, |app| async move {
        // gsm8k as the harness scores it, under each of its two filters.
        for filter in ["strict-match", "flexible-extract"] {
            let items = generate_on(
                &app,
                "muscle_gsm",
                json!({"type": "generation", "preset": "gsm8k", "filter": filter,
                       "max_new_tokens": 24}),
            )
            .await;
            assert_eq!(items.len(), 16);
            for side in ["old", "new"] {
                let (_, lines) = samples(side, "muscle_gsm");
                let lines: HashMap<String, &Value> = lines
                    .iter()
                    .filter(|l| l["filter"] == filter)
                    .map(|l| (l["doc_id"].to_string(), l))
                    .collect();
                for item in &items {
                    let line = lines[item["id"].as_str().unwrap()];
                    let what = format!("{filter} {side} doc {}", item["id"]);
                    assert_eq!(item[side]["output"], line["resps"][0][0], "{what}");
                    assert_eq!(item[side]["answer"], line["filtered_resps"][0], "{what}");
                    assert_eq!(item[side]["score"], line["exact_match"], "{what}");
                }
            }
        }
        // SAMSum as the paper ran it: greedy with no_repeat_ngram_size 2 (HF's
        // NoRepeatNGramLogitsProcessor in lm-eval's run), the paper's stop strings.
        let items = generate_on(
            &app,
            "muscle_samsum",
            json!({"type": "generation", "preset": "samsum", "max_new_tokens": 32}),
        )
        .await;
        assert_eq!(items.len(), 8);
        for side in ["old", "new"] {
            let lines = by_doc(&samples(side, "muscle_samsum").1);
            for item in &items {
                let line = &lines[item["id"].as_str().unwrap()];
                assert_eq!(
                    item[side]["output"], line["resps"][0][0],
                    "{side} doc {}",
                    item["id"]
                );
            }
        }
        // Without the n-gram ban the tiny models repeat themselves: the ban is what matched.
        let free = generate_on(
            &app,
            "muscle_samsum",
            json!({"type": "generation", "metric": "rouge1", "max_new_tokens": 32,
                   "stop": ["Dialogue:", "Summary:", "</s>", "\n\n"]}),
        )
        .await;
        let lines = by_doc(&samples("old", "muscle_samsum").1);
        let differing = free
            .iter()
            .filter(|item| {
                item["old"]["output"] != lines[item["id"].as_str().unwrap()]["resps"][0][0]
            })
            .count();
        assert!(differing > 0, "no output depends on no_repeat_ngram_size");
        app
    })
    .await;
}

#[tokio::test]
async fn a_bad_samples_file_is_refused_line_by_line() {
    on_every_backend(Options::api_only, |app| async move {
        let (text, _) = samples("old", "muscle_mc");
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[2] = lines[2].replace("\"False\"", "\"Nope\"");
        lines[5] = "{\"doc_id\": 1}".into();
        let response = app
            .client
            .post(app.url("/v1/datasets?format=lm-eval&slice_by=activity_label"))
            .header("content-type", "application/x-ndjson")
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap();
        let refused = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let at: Vec<(u64, String)> = refused["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["line"].as_u64().unwrap(),
                    e["field"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(at[0], (3, "filtered_resps[0]".to_string()), "{refused}");
        assert_eq!(at[1].0, 6);
        let listed: Value = app.get("/v1/datasets").await.json().await.unwrap();
        assert_eq!(listed["items"], json!([]), "nothing was stored");
        // slice_by belongs to lm-eval files.
        let response = app
            .client
            .post(app.url("/v1/datasets?slice_by=topic"))
            .header("content-type", "application/x-ndjson")
            .body(MC_ROWS)
            .send()
            .await
            .unwrap();
        let refused = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&refused), vec!["slice_by"]);
        app
    })
    .await;
}

fn fixture_path(side: &str, task: &str) -> PathBuf {
    fixtures().join(format!("lmeval/{side}/samples_{task}.jsonl"))
}

/// lm-eval's aggregate for one side, from its own results.json.
fn aggregate(side: &str, task: &str, key: &str) -> f64 {
    let path = fixtures().join(format!("lmeval/{side}/results.json"));
    let results: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    results["results"][task][key].as_f64().unwrap()
}

fn compare(dir: &std::path::Path, task: &str, extra: &[&str]) -> (i32, Value, Vec<Value>, String) {
    let out = dir.join(format!("{task}.report.json"));
    let instances = dir.join(format!("{task}.instances.jsonl"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_muscle"))
        .arg("compare")
        .arg(fixture_path("old", task))
        .arg(fixture_path("new", task))
        .arg("--out")
        .arg(&out)
        .arg("--instances")
        .arg(&instances)
        .args(extra)
        .env("MUSCLE_DATA_DIR", dir.join("data"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let lines = std::fs::read_to_string(&instances)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (output.status.code().unwrap_or(-1), report, lines, stderr)
}

/// Every instance's score on each side is the per-sample metric lm-eval recorded.
fn assert_per_sample(task: &str, filter: &str, metric: &str, items: &[Value]) {
    for side in ["old", "new"] {
        let (_, lines) = samples(side, task);
        let recorded: HashMap<String, f64> = lines
            .iter()
            .filter(|l| l["filter"] == filter)
            .map(|l| (l["doc_id"].to_string(), l[metric].as_f64().unwrap()))
            .collect();
        assert_eq!(recorded.len(), items.len());
        for item in items {
            let id = item["id"].as_str().unwrap();
            let score = item[side]["score"].as_f64().unwrap();
            assert_eq!(score, recorded[id], "{task} {side} doc {id}");
        }
    }
}

#[test]
fn compare_reproduces_lm_eval_per_sample_and_aggregate_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("muscle_mc", "none", "acc", vec![]),
        (
            "muscle_mc",
            "none",
            "acc_norm",
            vec!["--metric", "acc_norm"],
        ),
        (
            "muscle_gsm",
            "strict-match",
            "exact_match",
            vec!["--filter", "strict-match"],
        ),
        (
            "muscle_gsm",
            "flexible-extract",
            "exact_match",
            vec!["--filter", "flexible-extract"],
        ),
        (
            "muscle_samsum",
            "none",
            "rouge1",
            vec!["--metric", "rouge1"],
        ),
    ];
    for (task, filter, metric, extra) in cases {
        let mut args = extra.clone();
        args.extend([
            "--slice-by",
            if task == "muscle_mc" {
                "activity_label"
            } else {
                "id"
            },
        ]);
        let (code, report, items, stderr) = compare(dir.path(), task, &args);
        assert_eq!(code, 0, "{task}: {stderr}");
        assert!(stderr.contains("gate passed"), "{stderr}");
        assert_per_sample(task, filter, metric, &items);
        for side in ["old", "new"] {
            let theirs = aggregate(side, task, &format!("{metric},{filter}"));
            let ours = report[side]["accuracy"].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 1e-12,
                "{task} {metric} {side}: {ours} vs {theirs}"
            );
        }
        // The two runs line up: nothing about doc_ids or hashes.
        let warnings = report["warnings"].to_string();
        assert!(
            !warnings.contains("doc_id") && !warnings.contains("hash"),
            "{warnings}"
        );
    }

    // Several filters and none named: the error says which exist.
    let (code, _, _, stderr) = compare(dir.path(), "muscle_gsm", &[]);
    assert_eq!(code, 2, "{stderr}");
    // Once, in the command's terms: the flag, not the spec field or an internal id.
    assert_eq!(
        stderr.trim(),
        "muscle compare: --filter: each run holds the filters strict-match, flexible-extract: \
         name one with --filter",
    );
    let (code, _, _, stderr) = compare(dir.path(), "muscle_gsm", &["--filter", "nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("muscle compare: --filter: \"nope\" is not a filter of each run")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    // A gate the runs fail: exit 1 and the verdict.
    let (code, _, _, stderr) = compare(
        dir.path(),
        "muscle_mc",
        &[
            "--metric",
            "acc_norm",
            "--gate",
            r#"[{"metric": "nfr", "max": 0.0}]"#,
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("gate failed: nfr"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_runs_compare_through_the_api_and_name_what_does_not_line_up() {
    on_every_backend(Options::default, |app| async move {
        let mut ids = Vec::new();
        for side in ["old", "new"] {
            let (mut text, _) = samples(side, "muscle_mc");
            if side == "new" {
                // Drop doc 23 from the new run and change the prompt of doc 0.
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                lines.pop();
                let mut first: Value = serde_json::from_str(&lines[0]).unwrap();
                first["prompt_hash"] = json!("0".repeat(64));
                lines[0] = first.to_string();
                text = lines.join("\n");
            }
            let response = app
                .client
                .post(app.url(&format!(
                    "/v1/predictions?name=mc-{side}&task=muscle_mc&model={side}"
                )))
                .header("content-type", "application/x-ndjson")
                .body(text)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let stored: Value = response.json().await.unwrap();
            assert_eq!(stored["kind"], "multiple_choice");
            assert_eq!(stored["filters"], json!(["none"]));
            assert_eq!(stored["metrics"], json!(["acc", "acc_norm"]));
            ids.push(stored["id"].as_str().unwrap().to_string());
        }
        let listed: Value = app.get("/v1/predictions").await.json().await.unwrap();
        assert_eq!(listed["items"].as_array().unwrap().len(), 2);
        let one: Value = app
            .get(&format!("/v1/predictions/{}", ids[0]))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(one["model"], "old");

        // By name as well as by id; no dataset needed.
        let spec = json!({
            "old": {"predictions": "mc-old"},
            "new": {"predictions": ids[1]},
            "task": {"type": "multiple_choice"},
            "options": {"slice_by": ["activity_label"]},
        });
        let response = app.post_json("/v1/evaluations", &spec).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["spec"]["old"]["predictions"], ids[0].as_str());
        let report = &done["report"];
        assert_eq!(report["n"], 23);
        let warnings = report["warnings"].to_string();
        assert!(
            warnings.contains("1 doc_id(s) only in the old run, not compared: 23"),
            "{warnings}"
        );
        assert!(
            warnings.contains("different prompt_hash") && warnings.contains(": 0\""),
            "{warnings}"
        );
        let items = instances(&app, &location).await;
        assert_eq!(items.len(), 23);
        assert!(items[0]["prompt"].as_str().unwrap().ends_with("Answer:"));

        // A model on the new side runs the recorded requests of the old run.
        let spec = json!({
            "old": {"predictions": ids[0]},
            "new": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-list"},
            "task": {"type": "multiple_choice"},
        });
        let response = app.post_json("/v1/evaluations", &spec).await;
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let (_, new_lines) = samples("new", "muscle_mc");
        let new_lines = by_doc(&new_lines);
        for item in instances(&app, &location).await {
            let line = &new_lines[item["id"].as_str().unwrap()];
            assert_eq!(
                item["new"]["correct"].as_bool().unwrap(),
                line["acc"] == 1.0
            );
        }

        // What cannot work is named.
        let refused = app
            .refused(
                "/v1/evaluations",
                &json!({
                    "old": {"predictions": "nosuch"},
                    "new": {"predictions": ids[1]},
                    "task": {"type": "generation"},
                    "options": {"noise_floor": true},
                }),
            )
            .await;
        let named = fields(&refused);
        assert!(named.contains(&"old.predictions".to_string()), "{refused}");
        assert!(
            named.contains(&"options.noise_floor".to_string()),
            "{refused}"
        );
        assert!(named.contains(&"task.type".to_string()), "{refused}");
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_of_an_earlier_evaluation_is_a_recorded_run_for_the_next_one() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let response = app
            .post_json("/v1/evaluations", &evaluation_spec(&dataset))
            .await;
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(app.wait_finished(&location).await["status"], "succeeded");
        let listing: String = instances(&app, &location)
            .await
            .iter()
            .map(|item| format!("{item}\n"))
            .collect();

        let response = app
            .client
            .post(app.url("/v1/predictions?format=muscle&side=new&name=last-release"))
            .header("content-type", "application/x-ndjson")
            .body(listing)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let stored: Value = response.json().await.unwrap();
        assert_eq!((stored["format"].as_str(), stored["rows"].as_i64()), (Some("muscle"), Some(6)));

        // The same model run again on the recorded prompts: nothing flips.
        let mut spec = evaluation_spec("unused");
        spec.as_object_mut().unwrap().remove("dataset");
        spec["old"] = json!({"predictions": "last-release"});
        let response = app.post_json("/v1/evaluations", &spec).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let counts = &done["report"]["counts"];
        assert_eq!(counts["negative_flips"], 0, "{counts}");
        assert_eq!(counts["positive_flips"], 0, "{counts}");
        for item in instances(&app, &location).await {
            let (old, new) = (&item["old"]["scores"], &item["new"]["scores"]);
            for (a, b) in old.as_array().unwrap().iter().zip(new.as_array().unwrap()) {
                // Other batches, other float rounding: within what the engine guarantees.
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-5, "{a} vs {b}");
            }
        }

        // A listing line without its side's scores is named.
        let response = app
            .client
            .post(app.url("/v1/predictions?format=muscle"))
            .header("content-type", "application/x-ndjson")
            .body("{\"id\": \"q1\", \"prompt\": \"p\", \"choices\": [\"a\", \"b\"], \"gold\": 0, \"old\": {\"score\": 1}, \"new\": {\"score\": 0}}\n")
            .send()
            .await
            .unwrap();
        let refused = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refused["errors"][0]["line"], 1, "{refused}");
        app
    })
    .await;
}
