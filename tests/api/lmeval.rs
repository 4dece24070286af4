//! lm-evaluation-harness samples files as datasets: muscle runs the same models on the exact
//! requests lm-eval recorded (tests/fixtures/lmeval, written by lm_eval itself) and must give
//! the same per-choice log-likelihoods and the same greedy outputs.

use std::collections::HashMap;
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

fn samples(side: &str, task: &str) -> (String, Vec<Value>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/lmeval/{side}/samples_{task}.jsonl"));
    let text = std::fs::read_to_string(path).unwrap();
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
    assert_eq!(response.status(), StatusCode::CREATED);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_outputs_match_the_recorded_lm_eval_generations() {
    let (text, _) = samples("old", "muscle_gsm");
    let recorded = [
        ("old", samples("old", "muscle_gsm").1),
        ("new", samples("new", "muscle_gsm").1),
    ];
    on_every_backend(Options::default, |app| {
        let text = text.clone();
        let recorded = recorded.clone();
        async move {
            let dataset = upload_samples(&app, &text, "name=gsm").await;
            assert_eq!(dataset["kind"], "generation");
            assert_eq!(dataset["rows"], 16);
            let mut spec = sides();
            spec["dataset"] = dataset["id"].clone();
            spec["task"] = json!({"type": "generation", "max_new_tokens": 24,
                                  "stop": ["Question:", "</s>", "<|im_end|>"]});
            spec["options"] = json!({"batch_size": 4});
            let response = app.post_json("/v1/evaluations", &spec).await;
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let location = response.headers()["location"].to_str().unwrap().to_string();
            let done = app.wait_finished(&location).await;
            assert_eq!(done["status"], "succeeded", "{done}");
            let items = instances(&app, &location).await;
            assert_eq!(items.len(), 16);
            for (side, lines) in &recorded {
                let lines = by_doc(lines);
                for item in &items {
                    let line = &lines[item["id"].as_str().unwrap()];
                    assert_eq!(
                        item[side]["output"], line["resps"][0][0],
                        "{side} doc {}",
                        item["id"]
                    );
                }
            }
            app
        }
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
