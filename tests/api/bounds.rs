//! Bounded answers: a report lists at most `max_slices` slices however the rows are tagged,
//! a spec's lists and strings have bounds named in a 422, and a 422 lists at most 100 errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

/// Multiple-choice rows, each tagged with its own id (a field unique per row) and one of three
/// topics.
fn uniquely_tagged(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"id\": \"q{i}\", \"prompt\": \"The cat sat on the\", \"choices\": [\"mat\", \"moon\"], \
                 \"answer\": {}, \"tags\": {{\"uid\": \"u{i}\", \"topic\": \"t{}\"}}}}\n",
                i % 2,
                i % 3
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicing_by_a_unique_field_lists_at_most_max_slices() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(&uniquely_tagged(40)).await;
        let mut spec = evaluation_spec(&dataset);
        spec["options"]["max_slices"] = json!(6);
        let location = app.submit_evaluation(&spec).await;
        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let report = &done["report"];
        // 2 answers + 3 topics + 40 uids.
        let slices = report["slices"].as_array().unwrap();
        assert_eq!(slices.len(), 6);
        assert_eq!(report["slices_omitted"], 45 - 6);
        let warnings: Vec<&str> = report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("uid has 40 distinct values")),
            "{warnings:?}"
        );
        // The largest three are among those kept (the two answers with 20 rows each, a topic
        // with 14).
        let names: Vec<&str> = slices
            .iter()
            .map(|s| s["slice"].as_str().unwrap())
            .collect();
        for largest in ["answer=0", "answer=1", "topic=t0"] {
            assert!(names.contains(&largest), "{names:?}");
        }
        // An omitted slice still filters the instances.
        let omitted = (0..40)
            .map(|i| format!("uid=u{i}"))
            .find(|name| !names.contains(&name.as_str()))
            .unwrap();
        let page: Value = app
            .get(&format!(
                "{location}/instances?slice={}",
                omitted.replace('=', "%3D")
            ))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
        // A slice that is neither listed nor held by any instance is still refused.
        let refused = problem(
            app.get(&format!("{location}/instances?slice=uid%3Dnope"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let message = refused["errors"][0]["message"].as_str().unwrap();
        assert!(message.ends_with(" and 39 more)"), "{message}");
        let markdown = app
            .get(&format!("{location}/report.md"))
            .await
            .text()
            .await
            .unwrap();
        assert!(markdown.len() < 20_000, "{} bytes", markdown.len());
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_slice_names_at_most_twenty_known_ones() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(&uniquely_tagged(40)).await;
        let location = app.submit_evaluation(&evaluation_spec(&dataset)).await;
        assert_eq!(app.wait_finished(&location).await["status"], "succeeded");
        let refused = problem(
            app.get(&format!("{location}/instances?slice=nope")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let message = refused["errors"][0]["message"].as_str().unwrap();
        assert!(message.ends_with(" and 25 more)"), "{message}");
        assert_eq!(message.matches(", ").count(), 19, "{message}");
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_specs_are_refused_naming_the_field() {
    on_every_backend(Options::api_only, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let mut spec = evaluation_spec(&dataset);
        spec["gate"] = json!(vec![json!({"metric": "nfr", "max": 0.1}); 101]);
        spec["options"]["slice_by"] = json!(vec!["id"; 17]);
        let refused = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&refused), ["options.slice_by", "gate"]);

        // 20,000 bad gate entries: refused before they are parsed into checks, in a short answer.
        let mut spec = evaluation_spec(&dataset);
        spec["gate"] = json!(vec![json!({"metric": "nfrr", "max": 0.1}); 20_000]);
        let response = app
            .client
            .post(app.url("/v1/evaluations"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(body.len() < 2_000, "{} bytes", body.len());
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let refused: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(fields(&refused), ["gate"]);

        let mut spec = evaluation_spec(&dataset);
        spec["name"] = json!("n".repeat(5000));
        spec["task"] = json!({"type": "generation", "stop": ["s".repeat(5000)]});
        let refused = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&refused), ["name", "task.stop[0]"]);

        // 500 faults: the first 100 are listed and the detail says how many there were.
        let mut spec = evaluation_spec(&dataset);
        spec["gate"] = json!(vec![json!({"metric": "nfr\u{0}", "max": 0.1}); 500]);
        let refused = app.refused("/v1/evaluations", &spec).await;
        assert_eq!(fields(&refused).len(), 100);
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("the first 100 of 500 errors"),
            "{}",
            refused["detail"]
        );
        app
    })
    .await;
}
