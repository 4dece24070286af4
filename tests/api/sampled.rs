//! Sampled generation through the API (issue 25): K draws per instance and side on the fixture
//! models, the report's `sampled` section recomputed here from the listed draws, each
//! instance's verdict and the listing's `?verdict=` filter, gates on `sampled.*`, the same draws
//! whatever the batch and shard sizes, and the bad specs refused.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const ROWS: &str = concat!(
    r#"{"id": "s1", "prompt": "2 + 2 =", "targets": ["4", " 4"]}"#,
    "\n",
    r#"{"id": "s2", "prompt": "The cat sat on the", "target": " mat"}"#,
    "\n",
    r#"{"id": "s3", "prompt": "One, two,", "target": " three"}"#,
    "\n",
    r#"{"id": "s4", "prompt": "Water is", "target": " wet"}"#,
    "\n",
    r#"{"id": "s5", "prompt": "A dog says", "target": " woof"}"#,
    "\n",
);

const K: usize = 6;

fn spec(dataset: &str, batch_size: u32, shard_size: u32) -> Value {
    json!({
        "old": {"model": "models/llama-gqa"},
        "new": {"model": "models/llama-gqa", "adapter": "adapters/llama-gqa-lora-list"},
        "dataset": dataset,
        "task": {"type": "generation", "max_new_tokens": 3, "metric": "rouge1",
                 "sampling": {"samples": K, "temperature": 1.3, "top_p": 0.95, "top_k": 50,
                              "seed": 7}},
        "options": {"batch_size": batch_size, "shard_size": shard_size},
        "gate": [{"metric": "sampled.expected_nfr", "max": 1.0},
                 {"metric": "sampled.reliably_worse", "max": 0}],
    })
}

async fn run(app: &TestApp, spec: &Value) -> (Value, Vec<Value>) {
    let location = app.submit_evaluation(spec).await;
    let job = app.wait_finished(&location).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let listing: Value = app
        .get(&format!("{location}/instances?limit=500"))
        .await
        .json()
        .await
        .unwrap();
    (job, listing["items"].as_array().unwrap().clone())
}

fn scores(side: &Value) -> Vec<f64> {
    side["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["score"].as_f64().unwrap())
        .collect()
}

fn outputs(items: &[Value]) -> Vec<(String, Value, Value)> {
    items
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["old"]["samples"].clone(),
                i["new"]["samples"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sampled_outputs_give_expected_rates_verdicts_and_gates() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(ROWS).await;
        let (job, items) = run(&app, &spec(&dataset, 4, 500)).await;
        let report = &job["report"];
        let sampled = &report["sampled"];
        assert_eq!(sampled["samples"], K);
        assert_eq!(sampled["temperature"], 1.3);
        assert_eq!(sampled["n"], 5);
        assert_eq!(items.len(), 5);

        // The expected flip rates, recomputed from the listed draws.
        let mut negative = 0.0;
        let mut positive = 0.0;
        let mut verdicts = std::collections::BTreeMap::<String, u64>::new();
        for item in &items {
            let (old, new) = (scores(&item["old"]), scores(&item["new"]));
            assert_eq!((old.len(), new.len()), (K, K), "{item}");
            for (side, s) in [("old", &old), ("new", &new)] {
                let p = item[side]["p"].as_f64().unwrap();
                assert!((p - s.iter().sum::<f64>() / K as f64).abs() < 1e-12);
                for draw in &item[side]["samples"].as_array().unwrap()[..] {
                    assert!(draw["output"].is_string(), "{draw}");
                }
            }
            for o in &old {
                for n in &new {
                    negative += f64::from(u8::from(n - o < 0.0));
                    positive += f64::from(u8::from(n - o > 0.0));
                }
            }
            let verdict = item["sampled"]["verdict"].as_str().unwrap().to_owned();
            let q = item["sampled"]["q_value"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&q));
            assert!(verdict == "none" || q < 0.05, "{item}");
            *verdicts.entry(verdict).or_default() += 1;
        }
        let pairs = (items.len() * K * K) as f64;
        let expected_nfr = sampled["expected_nfr"].as_f64().unwrap();
        assert!((expected_nfr - negative / pairs).abs() < 1e-12);
        assert!((sampled["expected_pfr"].as_f64().unwrap() - positive / pairs).abs() < 1e-12);
        let interval = &sampled["intervals"]["expected_nfr"];
        assert!(interval["lower"].as_f64().unwrap() <= expected_nfr + 1e-12);
        assert!(interval["upper"].as_f64().unwrap() >= expected_nfr - 1e-12);
        let count = |name: &str| verdicts.get(name).copied().unwrap_or(0);
        assert_eq!(sampled["reliably_worse"], count("worse"));
        assert_eq!(sampled["reliably_better"], count("better"));
        assert_eq!(sampled["no_reliable_change"], count("none"));

        // The gate reads the section.
        let checks = report["gate"]["checks"].as_array().unwrap();
        assert_eq!(checks[0]["value"].as_f64(), Some(expected_nfr));
        assert_eq!(
            checks[1]["value"].as_f64(),
            sampled["reliably_worse"].as_f64()
        );
        assert_eq!(report["gate"]["passed"], count("worse") == 0);

        // The listing filters by verdict.
        let location = format!("/v1/evaluations/{}", job["id"].as_str().unwrap());
        for verdict in ["worse", "better", "none"] {
            let page: Value = app
                .get(&format!("{location}/instances?verdict={verdict}"))
                .await
                .json()
                .await
                .unwrap();
            let listed = page["items"].as_array().unwrap();
            assert_eq!(listed.len() as u64, count(verdict), "{verdict}: {page}");
            assert!(listed.iter().all(|i| i["sampled"]["verdict"] == verdict));
        }
        let bad = problem(
            app.get(&format!("{location}/instances?verdict=maybe"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(bad.to_string().contains("verdict"), "{bad}");

        // Another batch size and shard size draw the very same outputs.
        let (_, again) = run(&app, &spec(&dataset, 1, 2)).await;
        assert_eq!(outputs(&again), outputs(&items));
        // Without sampling, the greedy outputs are those of the sampled job.
        let mut greedy = spec(&dataset, 4, 500);
        greedy["task"].as_object_mut().unwrap().remove("sampling");
        greedy["gate"] = json!([]);
        let (job, plain) = run(&app, &greedy).await;
        assert!(job["report"]["sampled"].is_null());
        for (a, b) in plain.iter().zip(&items) {
            assert_eq!(a["old"]["output"], b["old"]["output"]);
            assert_eq!(a["new"]["output"], b["new"]["output"]);
            assert!(a["old"].get("samples").is_none() && a.get("sampled").is_none());
        }
        app
    })
    .await;
}

#[tokio::test]
async fn bad_sampling_is_refused_field_by_field() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(ROWS).await;
        let mut bad = spec(&dataset, 4, 500);
        bad["task"]["sampling"] = json!({"samples": 1, "temperature": 0, "top_p": 1.5, "top_k": 0});
        let body = app.refused("/v1/evaluations", &bad).await;
        assert_eq!(
            fields(&body),
            [
                "task.sampling.samples",
                "task.sampling.temperature",
                "task.sampling.top_p",
                "task.sampling.top_k"
            ],
            "{body}"
        );
        let mut unsampled = spec(&dataset, 4, 500);
        unsampled["task"]
            .as_object_mut()
            .unwrap()
            .remove("sampling");
        let body = app.refused("/v1/evaluations", &unsampled).await;
        assert_eq!(
            fields(&body),
            ["gate[0].metric", "gate[1].metric"],
            "{body}"
        );
        assert!(body.to_string().contains("sampling"), "{body}");
        let mut unknown = spec(&dataset, 4, 500);
        unknown["task"]["sampling"]["temprature"] = json!(1.0);
        let body = app.refused("/v1/evaluations", &unknown).await;
        assert!(body.to_string().contains("temprature"), "{body}");
        app
    })
    .await;
}

/// The shipped update's bases (examples/model-update) asked each entity's category: the new
/// base learnt far more of them, and the draws say which of the greedy flips are reliable.
#[tokio::test]
async fn on_the_shipped_update_greedy_flips_are_held_against_reliable_changes() {
    let options = || Options {
        model_dir: repo().join("examples"),
        ..Options::default()
    };
    on_every_backend(options, |app| async move {
        let example = repo().join("examples/model-update");
        let rows: String = std::fs::read_to_string(example.join("categories.jsonl"))
            .unwrap()
            .lines()
            .take(120)
            .map(|line| format!("{line}\n"))
            .collect();
        let dataset = app.upload_ok(&rows).await;
        let mut spec: Value = serde_json::from_str(
            &std::fs::read_to_string(example.join("eval-sampled.json")).unwrap(),
        )
        .unwrap();
        spec["dataset"] = json!(dataset);
        let (job, items) = run(&app, &spec).await;
        let sampled = &job["report"]["sampled"];
        let count = |name: &str| sampled[name].as_u64().unwrap();
        assert_eq!(
            count("reliably_worse") + count("reliably_better") + count("no_reliable_change"),
            120
        );
        assert!(count("reliably_better") > 20, "{sampled}");
        assert!(count("greedy_flips_reliable") <= count("greedy_flips"));
        let greedy_positive = job["report"]["counts"]["positive_flips"].as_u64().unwrap();
        assert!(greedy_positive > 20, "{}", job["report"]["counts"]);
        for item in &items {
            let p = |side: &str| item[side]["p"].as_f64().unwrap();
            match item["sampled"]["verdict"].as_str().unwrap() {
                "better" => assert!(p("new") > p("old"), "{item}"),
                "worse" => assert!(p("new") < p("old"), "{item}"),
                _ => {}
            }
        }
        // Recounted from the listing: greedy flips in the direction of the instance's verdict.
        let agreeing = items
            .iter()
            .filter(|i| {
                matches!(
                    (
                        i["flip"].as_str().unwrap(),
                        i["sampled"]["verdict"].as_str().unwrap()
                    ),
                    ("positive", "better") | ("negative", "worse")
                )
            })
            .count() as u64;
        assert_eq!(agreeing, count("greedy_flips_reliable"));
        app
    })
    .await;
}
