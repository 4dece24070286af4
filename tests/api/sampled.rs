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
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = app
            .get(&format!("{location}/instances?limit=500&cursor={cursor}"))
            .await
            .json()
            .await
            .unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return (job, items),
        }
    }
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
/// base learnt far more of them, and the draws say which of the greedy flips are reliable. The
/// numbers README.md quotes, with slack for float summation order on another CPU.
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
            552
        );
        let near = |value: u64, readme: u64| value.abs_diff(readme) <= 5;
        let counts = &job["report"]["counts"];
        let greedy = |name: &str| counts[name].as_u64().unwrap();
        assert!(
            near(greedy("negative_flips"), 11) && near(greedy("positive_flips"), 387),
            "{counts}"
        );
        assert!(
            count("reliably_worse") == 0
                && near(count("reliably_better"), 443)
                && near(count("greedy_flips_reliable"), 385)
                && near(count("reliable_missed_by_greedy"), 58),
            "{sampled}"
        );
        let expected_nfr = sampled["expected_nfr"].as_f64().unwrap();
        assert!((expected_nfr - 0.0148).abs() < 0.003, "{sampled}");
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
        // None of the greedy negative flips is a reliable change.
        assert!(
            items
                .iter()
                .filter(|i| i["flip"] == "negative")
                .all(|i| i["sampled"]["verdict"] == "none")
        );
        app
    })
    .await;
}

/// A served side draws through its server: one request per draw, at the task's temperature,
/// top-p and top-k, each with a seed of its own that another batch or shard size repeats.
#[tokio::test]
async fn a_served_side_sends_one_seeded_request_per_draw() {
    use crate::fake_endpoint::{Act, FakeServer};
    let server = FakeServer::start(Vec::new(), Act::Answer(std::time::Duration::ZERO)).await;
    let app = TestApp::spawn(sqlite_db().await, server.options()).await;
    let dataset = app
        .upload_ok(concat!(
            r#"{"id": "e1", "prompt": "2 + 2 =", "target": "4"}"#,
            "\n",
            r#"{"id": "e2", "prompt": "3 + 1 =", "target": "4"}"#,
            "\n",
            r#"{"id": "e3", "prompt": "5 - 1 =", "target": "4"}"#,
            "\n",
        ))
        .await;
    let served = |batch_size: u32, shard_size: u32| {
        let mut spec = spec(&dataset, batch_size, shard_size);
        spec["new"] = server.side(json!({"prompts_per_request": 4}));
        spec["task"]["metric"] = json!("exact_match");
        spec["gate"] = json!([]);
        spec
    };
    let (job, items) = run(&app, &served(4, 500)).await;
    let seen = server.seen();
    let draws: Vec<&Value> = seen
        .iter()
        .map(|s| &s.body)
        .filter(|b| b.get("seed").is_some())
        .collect();
    assert_eq!(draws.len(), 3 * K, "one request per draw");
    for body in &draws {
        assert_eq!(body["temperature"], 1.3);
        assert_eq!(body["top_p"], 0.95);
        assert_eq!(body["top_k"], 50);
        assert!(
            body["prompt"].is_array() && body["prompt"][0].is_u64(),
            "{body}"
        );
    }
    let seeds: std::collections::BTreeSet<i64> =
        draws.iter().map(|b| b["seed"].as_i64().unwrap()).collect();
    assert_eq!(seeds.len(), 3 * K, "every draw has a seed of its own");
    // The greedy requests carry no sampling parameters.
    let greedy = seen
        .iter()
        .filter(|s| s.body.get("seed").is_none())
        .collect::<Vec<_>>();
    assert!(!greedy.is_empty() && greedy.iter().all(|s| s.body["temperature"] == 0.0));
    // Each draw was scored: the server says "5" to odd seeds, and "5" is wrong.
    for item in &items {
        let scores = scores(&item["new"]);
        assert_eq!(scores.len(), K);
        assert_eq!(item["new"]["output"], "4");
    }
    let wrong: usize = items
        .iter()
        .map(|i| scores(&i["new"]).iter().filter(|s| **s == 0.0).count())
        .sum();
    let odd = seeds.iter().filter(|s| *s % 2 == 1).count();
    assert_eq!(wrong, odd);
    assert_eq!(job["report"]["sampled"]["n"], 3);

    // Another batching sends the same seeds.
    let before = server.seen().len();
    run(&app, &served(1, 1)).await;
    let again: std::collections::BTreeSet<i64> = server.seen()[before..]
        .iter()
        .filter_map(|s| s.body["seed"].as_i64())
        .collect();
    assert_eq!(again, seeds);
    app.stop().await;
}
