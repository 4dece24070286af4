//! A full disk under the SQLite file: writes are refused with 507/503 (never 201, never 500),
//! and every acknowledged write is still there after space comes back and the server restarts.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use super::common;
use super::helpers::*;

/// A small tmpfs at `dir`, or why there cannot be one here.
fn mount_tmpfs(dir: &Path, size: &str) -> Result<(), String> {
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

struct Unmount<'a>(&'a Path);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_loses_no_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = mount_tmpfs(dir.path(), "3m") {
        eprintln!("skipped: cannot mount a tmpfs here (needs root): {why}");
        return;
    }
    let _unmount = Unmount(dir.path());
    let db_path = dir.path().join("muscle.db");
    let filler = dir.path().join("filler");

    let app = TestApp::spawn(common::sqlite_at(&db_path), Options::api_only()).await;
    // Most of the space taken, so that a few uploads fill the rest.
    std::fs::write(&filler, vec![0u8; 1536 * 1024]).unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..60 {
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

    // Space back; the same server takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let response = app.upload(MC_ROWS).await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "after space came back"
    );
    let mut app = app;
    app.shutdown().await;

    // After a restart every acknowledged upload is there, rows and all.
    let app = TestApp::spawn(common::sqlite_at(&db_path), Options::api_only()).await;
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
