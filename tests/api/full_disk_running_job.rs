//! The disk under the database fills while an evaluation is writing its instances and uploads
//! are coming in: no write is acknowledged that is not on disk, and after space comes back and
//! the server restarts every acknowledged upload and every instance read before is there.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::full_disk::{Tmpfs, free_bytes};
use super::helpers::*;

const ITEMS: usize = 4000;

fn questions(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"id\": \"q{i}\", \"prompt\": \"Question {i}: the cat sat on the\", \
                 \"choices\": [\"mat\", \"moon\", \"dog\"], \"answer\": {}}}\n",
                i % 3
            )
        })
        .collect()
}

fn upload_rows(tag: usize) -> String {
    (0..50)
        .map(|i| {
            format!(
                "{{\"id\": \"u{tag}-{i}\", \"prompt\": \"{}\", \"choices\": [\"a\", \"b\"], \"answer\": 0}}\n",
                "y".repeat(100)
            )
        })
        .collect()
}

/// Uploads `n`; the dataset id when acknowledged, else the refusal's status.
async fn try_upload(app: &TestApp, n: usize) -> Result<String, StatusCode> {
    let response = app
        .client
        .post(app.url(&format!("/v1/datasets?name=during-{n}")))
        .header("content-type", "application/x-ndjson")
        .body(upload_rows(n))
        .send()
        .await
        .unwrap();
    match response.status() {
        StatusCode::CREATED => {
            let body: Value = response.json().await.unwrap();
            Ok(body["id"].as_str().unwrap().to_string())
        }
        status => {
            assert!(
                matches!(
                    status,
                    StatusCode::INSUFFICIENT_STORAGE | StatusCode::SERVICE_UNAVAILABLE
                ),
                "an upload on a full disk answered {status}: {}",
                response.text().await.unwrap()
            );
            Err(status)
        }
    }
}

async fn job(app: &TestApp, location: &str) -> Value {
    app.get(location).await.json().await.unwrap()
}

/// Every stored instance of the job, as (index, flip).
async fn instances(app: &TestApp, location: &str) -> Vec<(i64, String)> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = app
            .get(&format!("{location}/instances?limit=500{cursor}"))
            .await
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            all.push((
                item["index"].as_i64().unwrap_or_default(),
                item["flip"].as_str().unwrap().to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return all,
        }
    }
}

async fn fill_while_a_job_writes(
    db: impl Fn() -> TestDb,
    filler: &Path,
    leave_free: u64,
    space_back: impl Fn(),
) {
    let options = || Options {
        workers: 1,
        lease_seconds: 3,
        shard_size: 16,
        http: muscle::http::HttpOptions {
            max_body_bytes: 4 << 20,
            ..Default::default()
        },
        ..Options::default()
    };
    let app = TestApp::spawn(db(), options()).await;
    let dataset = app.upload_ok(&questions(ITEMS)).await;
    let mut spec = evaluation_spec(&dataset);
    spec["options"] = json!({"batch_size": 8, "shard_size": 16});
    let location = app.submit_evaluation(&spec).await;
    let started = Instant::now();
    while job(&app, &location).await["progress"]["done"] == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never wrote"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The disk fills while the job writes; uploads keep coming until several are refused.
    let free = free_bytes(filler.parent().unwrap());
    std::fs::write(filler, vec![0u8; free.saturating_sub(leave_free) as usize]).unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 0..400 {
        match try_upload(&app, n).await {
            Ok(id) => acknowledged.push(id),
            Err(_) => refused += 1,
        }
        if refused >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = job(&app, &location).await;
    eprintln!(
        "while full: {} uploads acknowledged, {refused} refused; job {} at {}",
        acknowledged.len(),
        during["status"],
        during["progress"]
    );
    assert!(refused > 0, "the disk never filled");

    // Space back: uploads are taken again, and the job ends (resumed or failed, not stuck).
    std::fs::remove_file(filler).unwrap();
    space_back();
    let mut after = 0;
    for n in 1000..1200 {
        if let Ok(id) = try_upload(&app, n).await {
            acknowledged.push(id);
            after += 1;
            if after == 5 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after, 5, "uploads were not taken after space came back");
    let finished = loop {
        let body = job(&app, &location).await;
        if matches!(body["status"].as_str(), Some("succeeded" | "failed")) {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the job neither finished nor failed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen = instances(&app, &location).await;
    eprintln!(
        "job {} with {} instances: {}",
        finished["status"],
        seen.len(),
        finished["error"]
    );
    if finished["status"] == "succeeded" {
        assert_eq!(seen.len(), ITEMS);
    }
    let mut app = app;
    app.shutdown().await;

    // After a restart: every acknowledged upload with all its rows, every instance read before.
    let app = TestApp::spawn(db(), Options::api_only()).await;
    for id in &acknowledged {
        let response = app.get(&format!("/v1/datasets/{id}")).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "acknowledged upload {id} lost"
        );
        let dataset: Value = response.json().await.unwrap();
        assert_eq!(dataset["rows"], 50, "{id}: {dataset}");
    }
    assert_eq!(instances(&app, &location).await, seen);
    assert_eq!(job(&app, &location).await["status"], finished["status"]);
    let mut app = app;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_under_a_running_job_on_sqlite_loses_no_acknowledged_write() {
    let Some(disk) = Tmpfs::mount("24m") else {
        return;
    };
    let db_path = disk.path().join("muscle.db");
    fill_while_a_job_writes(
        || sqlite_at(&db_path),
        &disk.path().join("filler"),
        256 * 1024,
        || {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_under_a_running_job_on_postgres_loses_no_acknowledged_write() {
    let Some(disk) = Tmpfs::mount("128m") else {
        return;
    };
    let Some(cluster) = disk.cluster() else {
        return;
    };
    let url = cluster.url();
    fill_while_a_job_writes(
        || owned_at("postgres", url.clone()),
        &disk.path().join("filler"),
        2 * 1024 * 1024,
        || cluster.ensure_running(),
    )
    .await;
}
