//! A full disk under the database (a SQLite file, or a Postgres cluster of the test's own):
//! writes are refused with 507/503 (never 201, never 500), and every acknowledged write is still
//! there after space comes back and the server restarts.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use super::helpers::*;
use super::own_postgres::Cluster;

/// A small tmpfs mounted at a folder of its own, unmounted when dropped.
pub(super) struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// A tmpfs of `size`, or None (the test says why it is skipped) where none can be mounted.
    pub(super) fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Self(dir)),
            Ok(output) => {
                let why = String::from_utf8_lossy(&output.stderr);
                skip(
                    "the test",
                    &format!("cannot mount a tmpfs here (needs root): {}", why.trim()),
                );
                None
            }
            Err(e) => {
                skip(
                    "the test",
                    &format!("cannot mount a tmpfs here: mount: {e}"),
                );
                None
            }
        }
    }

    pub(super) fn path(&self) -> &Path {
        self.0.path()
    }

    /// A Postgres cluster of the test's own on this tmpfs, or None (the test says why it is
    /// skipped).
    pub(super) fn cluster(&self) -> Option<Cluster> {
        Cluster::create(self.path())
            .map_err(|why| {
                skip(
                    "the test",
                    &format!("cannot run a Postgres cluster of its own: {why}"),
                )
            })
            .ok()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a server a failed assertion left running may still hold the file.
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
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
    let Some(disk) = Tmpfs::mount("3m") else {
        return;
    };
    let db_path = disk.path().join("muscle.db");
    fill_then_recover(
        || sqlite_at(&db_path),
        &disk.path().join("filler"),
        1024 * 1024,
        || {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_postgres_refuses_writes_and_loses_no_acknowledged_one() {
    let Some(disk) = Tmpfs::mount("96m") else {
        return;
    };
    let Some(cluster) = disk.cluster() else {
        return;
    };
    let url = cluster.url();
    fill_then_recover(
        || owned_at("postgres", url.clone()),
        &disk.path().join("filler"),
        2 * 1024 * 1024,
        || cluster.ensure_running(),
    )
    .await;
}
