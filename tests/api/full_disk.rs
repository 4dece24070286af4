//! A full disk under the database (a SQLite file, or a Postgres cluster of the test's own):
//! writes are refused with 507/503 (never 201, never 500), and every acknowledged write is still
//! there after space comes back and the server restarts.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use super::common::{self, TestDb};
use super::helpers::*;
use super::own_postgres::Cluster;

/// A small tmpfs at `dir`, or why there cannot be one here.
pub(super) fn mount_tmpfs(dir: &Path, size: &str) -> Result<(), String> {
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

pub(super) struct Unmount<'a>(pub(super) &'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        // Lazily: a server a failed assertion left running may still hold the file.
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

fn rows(n: usize, tag: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"id\": \"r{tag}-{i}\", \"prompt\": \"{}\", \"choices\": [\"a\", \"b\"], \"answer\": 0}}\n",
                "x".repeat(200)
            )
        })
        .collect()
}

/// Bytes still free on the file system holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> u64 {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// Fills the disk until a write is refused, then gives the space back (running `space_back`
/// for what the database needs then) and checks the acknowledged uploads after a restart.
async fn fill_then_recover(
    db: impl Fn() -> TestDb,
    filler: &Path,
    leave_free: u64,
    space_back: impl FnOnce(),
) {
    let app = TestApp::spawn(db(), Options::api_only()).await;
    let free = free_bytes(filler.parent().unwrap());
    std::fs::write(filler, vec![0u8; free.saturating_sub(leave_free) as usize]).unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..200 {
        let response = app
            .client
            .post(app.url(&format!("/v1/datasets?name=fill-{n}")))
            .header("content-type", "application/x-ndjson")
            .body(rows(400, n))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::CREATED => {
                let body: Value = response.json().await.unwrap();
                acknowledged.push(body["id"].as_str().unwrap().to_string());
            }
            status => {
                assert!(
                    matches!(
                        status,
                        StatusCode::INSUFFICIENT_STORAGE | StatusCode::SERVICE_UNAVAILABLE
                    ),
                    "a write on a full disk answered {status}: {}",
                    response.text().await.unwrap()
                );
                assert!(response.headers().get("retry-after").is_some());
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the disk never filled");
    eprintln!("{} uploads stored, then {refused}", acknowledged.len());
    // Readiness says writes fail.
    assert_eq!(
        app.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Space back; the same server takes writes again (its pool reconnecting if it must).
    std::fs::remove_file(filler).unwrap();
    space_back();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = app.upload(MC_ROWS).await.status();
        if status == StatusCode::CREATED {
            break;
        }
        assert!(
            matches!(
                status,
                StatusCode::INSUFFICIENT_STORAGE | StatusCode::SERVICE_UNAVAILABLE
            ),
            "while the database comes back: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status, StatusCode::CREATED, "after space came back");
    let mut app = app;
    app.shutdown().await;

    // After a restart every acknowledged upload is there, rows and all.
    let app = TestApp::spawn(db(), Options::api_only()).await;
    for id in &acknowledged {
        let dataset: Value = app
            .get(&format!("/v1/datasets/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(dataset["rows"], 400, "{id}: {dataset}");
    }
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let mut app = app;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_sqlite_refuses_writes_and_loses_no_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = mount_tmpfs(dir.path(), "3m") {
        eprintln!("skipped: cannot mount a tmpfs here (needs root): {why}");
        return;
    }
    let _unmount = Unmount(dir.path());
    let db_path = dir.path().join("muscle.db");
    fill_then_recover(
        || common::sqlite_at(&db_path),
        &dir.path().join("filler"),
        1024 * 1024,
        || {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_postgres_refuses_writes_and_loses_no_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = mount_tmpfs(dir.path(), "96m") {
        eprintln!("skipped: cannot mount a tmpfs here (needs root): {why}");
        return;
    }
    let _unmount = Unmount(dir.path());
    let cluster = match Cluster::create(dir.path()) {
        Ok(cluster) => cluster,
        Err(why) => {
            eprintln!("skipped: cannot run a Postgres cluster of the test's own: {why}");
            return;
        }
    };
    let url = cluster.url();
    fill_then_recover(
        || common::owned_at("postgres", url.clone()),
        &dir.path().join("filler"),
        2 * 1024 * 1024,
        || cluster.ensure_running(),
    )
    .await;
}
