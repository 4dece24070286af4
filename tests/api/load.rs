//! Bursts on loopback: every answer is 2xx or 503 with Retry-After, never another 5xx, and
//! every accepted write is there afterwards.

use reqwest::StatusCode;
use serde_json::Value;

use super::helpers::*;

fn burst_options() -> Options {
    let mut options = Options::api_only();
    // Few slots, so that the burst meets the limit as well as the database's own limits.
    options.http.max_concurrent_requests = 8;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_submissions_and_uploads_get_2xx_or_503_with_retry_after() {
    on_every_backend(burst_options, |app| async move {
        let dataset = app.upload_ok(MC_ROWS).await;
        let spec = evaluation_spec(&dataset);
        let mut tasks = Vec::new();
        for i in 0..300 {
            let client = app.client.clone();
            let url = app.url("/v1/evaluations");
            let upload = app.url(&format!("/v1/datasets?name=burst-{i}"));
            let spec = spec.clone();
            tasks.push(tokio::spawn(async move {
                let response = if i % 3 == 0 {
                    client
                        .post(upload)
                        .header("content-type", "application/x-ndjson")
                        .body(MC_ROWS.replace("q1", &format!("q1-{i}")))
                        .send()
                        .await
                } else {
                    client.post(url).json(&spec).send().await
                }
                .unwrap();
                let retry = response.headers().get("retry-after").is_some();
                (i % 3 == 0, response.status(), retry)
            }));
        }
        let (mut accepted_jobs, mut stored_datasets, mut busy) = (0, 0, 0);
        for task in tasks {
            let (upload, status, retry) = task.await.unwrap();
            match status {
                StatusCode::ACCEPTED if !upload => accepted_jobs += 1,
                StatusCode::CREATED if upload => stored_datasets += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(retry, "503 without Retry-After");
                    busy += 1;
                }
                other => panic!("upload {upload}: {other}"),
            }
        }
        eprintln!("{accepted_jobs} jobs, {stored_datasets} uploads accepted, {busy} told to retry");
        assert!(accepted_jobs > 0 && stored_datasets > 0);
        let jobs: Value = app
            .get("/v1/evaluations?limit=500")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(jobs["items"].as_array().unwrap().len(), accepted_jobs);
        let datasets: Value = app
            .get("/v1/datasets?limit=500")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            datasets["items"].as_array().unwrap().len(),
            stored_datasets + 1
        );
        app
    })
    .await;
}
