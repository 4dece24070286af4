//! The database going away under a running server (Postgres stopped at once): reads and writes
//! are answered 503 with Retry-After, never 500; /readyz says so within 2 s; and when the
//! database is back the same server serves again, with what it had acknowledged.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::helpers::*;
use super::own_postgres::Cluster;

const OTHER_ROWS: &str = "{\"id\": \"g1\", \"prompt\": \"2 + 2 =\", \"target\": \" 4\"}\n";

fn assert_unavailable(what: &str, response: &reqwest::Response) {
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{what} while the database is down"
    );
    assert!(
        response.headers().get("retry-after").is_some(),
        "{what}: 503 without Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_503_and_the_server_recovers_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = match Cluster::create(dir.path()) {
        Ok(cluster) => cluster,
        Err(why) => {
            skip(
                "the test",
                &format!("cannot run a Postgres cluster of its own: {why}"),
            );
            return;
        }
    };
    let app = TestApp::spawn(owned_at("postgres", cluster.url()), Options::api_only()).await;
    let kept = app.upload_ok(MC_ROWS).await;

    cluster.stop();
    // At once: each waits out the pool's acquire timeout before its 503.
    let read_path = format!("/v1/datasets/{kept}");
    let (upload, list, read) = tokio::join!(
        app.upload(OTHER_ROWS),
        app.get("/v1/datasets"),
        app.get(&read_path)
    );
    assert_unavailable("an upload", &upload);
    assert_unavailable("a list", &list);
    assert_unavailable("a read", &read);
    let started = Instant::now();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/readyz took {:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

    cluster.ensure_running();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = app.upload(OTHER_ROWS).await.status();
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "while it comes back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, StatusCode::CREATED, "after the database came back");
    let dataset: Value = app
        .get(&format!("/v1/datasets/{kept}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dataset["id"], kept.as_str());
    // Readiness probes the database at most once a second: its 503 may stand that long.
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..15 {
        ready = app.get("/readyz").await.status();
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready,
        StatusCode::OK,
        "/readyz after the database came back"
    );
    let mut app = app;
    app.shutdown().await;
}
