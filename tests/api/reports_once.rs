//! Reports are computed once: a cancelled evaluation's report is computed by the first of many
//! concurrent reads and then stored with the job, and listings read the stored summary.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;
use muscle::domain::JobKind;

fn questions(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"id\": \"q{i}\", \"prompt\": \"Question {i}: the cat sat on the\", \
                 \"choices\": [\"mat\", \"moon\"], \"answer\": {}, \"tags\": {{\"topic\": \"t{}\"}}}}\n",
                i % 2,
                i % 5
            )
        })
        .collect()
}

/// The value of an unlabelled counter in the Prometheus text of /metrics.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_evaluation_has_its_report_computed_once_and_stored() {
    let options = || Options {
        shard_size: 8,
        ..Options::default()
    };
    on_every_backend(options, |app| async move {
        let dataset = app.upload_ok(&questions(2000)).await;
        let mut spec = evaluation_spec(&dataset);
        spec["options"] = json!({"batch_size": 8, "shard_size": 8, "bootstrap_resamples": 20000});
        let location = app.submit_evaluation(&spec).await;
        let id = location.rsplit('/').next().unwrap().to_string();
        let started = Instant::now();
        loop {
            let job: Value = app.get(&location).await.json().await.unwrap();
            if job["progress"]["done"].as_i64().unwrap() >= 16 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cancelled = app
            .client
            .post(app.url(&format!("{location}/cancel")))
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), StatusCode::OK);
        let before = counter(&app, "muscle_reports_computed_total").await;

        // Eight readers at once: one computation, one answer.
        let reads = join_all((0..8).map(|_| async {
            let body: Value = app.get(&location).await.json().await.unwrap();
            body
        }))
        .await;
        assert_eq!(
            counter(&app, "muscle_reports_computed_total").await,
            before + 1
        );
        let report = &reads[0]["report"];
        assert_eq!(report["partial"], true, "{}", reads[0]);
        assert!(reads.iter().all(|r| r["report"] == *report));
        assert!(reads[0]["summary"].is_object() || reads[0]["summary"].is_null());

        // Stored with the job: read back from the store, and not computed again.
        let job = app
            .store
            .get_job(JobKind::Evaluation, &id)
            .await
            .unwrap()
            .unwrap();
        let stored: Value = job
            .read_report()
            .unwrap()
            .expect("the cancelled job's report is stored");
        assert_eq!(&stored, report);
        let again: Value = app.get(&location).await.json().await.unwrap();
        assert_eq!(again["report"], *report);
        assert_eq!(again["summary"]["n"], report["n"]);
        let markdown = app.get(&format!("{location}/report.md")).await;
        assert_eq!(markdown.status(), StatusCode::OK);
        assert_eq!(
            counter(&app, "muscle_reports_computed_total").await,
            before + 1
        );

        // The listing shows the stored summary and no report.
        let list: Value = app.get("/v1/evaluations").await.json().await.unwrap();
        let listed = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id.as_str())
            .unwrap();
        assert!(listed["report"].is_null());
        assert_eq!(listed["summary"], again["summary"]);
        assert_eq!(listed["summary"]["n"], report["n"]);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_succeeded_evaluation_is_listed_with_its_summary() {
    on_every_backend(Options::default, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let location = app.submit_evaluation(&evaluation_spec(&dataset)).await;
        let done = app.wait_finished(&location).await;
        assert_eq!(done["status"], "succeeded");
        let list: Value = app.get("/v1/evaluations").await.json().await.unwrap();
        let listed = &list["items"][0];
        assert_eq!(listed["id"], done["id"]);
        assert!(listed["report"].is_null());
        assert_eq!(listed["summary"], done["summary"]);
        assert_eq!(listed["summary"]["verdict"], "pass");
        assert_eq!(listed["summary"]["n"], 6);
        assert_eq!(listed["summary"]["nfr"], done["report"]["metrics"]["nfr"]);
        app
    })
    .await;
}
