//! Several `muscle worker` processes share one queue: shards are split between them, and a
//! worker killed with SIGKILL mid-shard loses its lease to the others without losing or
//! duplicating an instance.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Row;

use super::helpers::*;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(database_url: &str) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_muscle"))
        .arg("worker")
        .env("DATABASE_URL", database_url)
        .env("MUSCLE_MODEL_DIR", model_dir())
        .env("MUSCLE_LEASE_SECONDS", "2")
        .env("MUSCLE_POLL_MS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Worker(child)
}

fn rows(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"id": format!("r{i}"), "prompt": format!("Item number {i} is"),
                   "choices": ["red", "blue", "green"], "answer": i % 3})
            .to_string()
                + "\n"
        })
        .collect()
}

async fn running_shard_owners(pool: &sqlx::AnyPool) -> Vec<String> {
    sqlx::query("SELECT worker_id FROM shards WHERE status = 'running' AND done > 0")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .filter_map(|row| row.try_get::<Option<String>, _>("worker_id").ok().flatten())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_queue_and_survive_a_sigkill() {
    const N: usize = 600;
    for db in test_databases().await {
        eprintln!("-- on {}", db.backend);
        let url = db.url.clone();
        let app = TestApp::spawn(db, Options::api_only()).await;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();

        let mut victim = spawn_worker(&url);
        let survivor = spawn_worker(&url);
        let dataset = app.upload_ok(&rows(N)).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut spec = evaluation_spec(&dataset);
            spec["options"] = json!({"batch_size": 2, "shard_size": 50});
            let body: Value = app
                .post_json("/v1/evaluations", &spec)
                .await
                .json()
                .await
                .unwrap();
            ids.push(body["id"].as_str().unwrap().to_string());
        }

        // Kill the first worker while it is partway through a shard.
        let victim_tag = format!("-{}-", victim.0.id());
        let started = Instant::now();
        loop {
            if running_shard_owners(&pool)
                .await
                .iter()
                .any(|w| w.contains(&victim_tag))
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the worker never held a shard"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        victim.0.kill().unwrap();
        victim.0.wait().unwrap();

        for id in &ids {
            let done = app.wait_finished(&format!("/v1/evaluations/{id}")).await;
            assert_eq!(done["status"], "succeeded", "{done}");
            assert_eq!(done["report"]["n"], N as u64);
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, COUNT(DISTINCT idx) AS distinct_idx, MIN(idx) AS lo, MAX(idx) AS hi \
                 FROM instances WHERE job_id = $1",
            )
            .bind(id.clone())
            .fetch_one(&pool)
            .await
            .unwrap();
            let count: i64 = row.try_get("n").unwrap();
            let distinct: i64 = row.try_get("distinct_idx").unwrap();
            let (lo, hi): (i64, i64) = (row.try_get("lo").unwrap(), row.try_get("hi").unwrap());
            assert_eq!(
                (count, distinct, lo, hi),
                (N as i64, N as i64, 0, N as i64 - 1)
            );
        }
        let reclaimed: i64 = sqlx::query("SELECT COUNT(*) AS n FROM shards WHERE attempt > 1")
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert!(
            reclaimed >= 1,
            "the killed worker's shard was claimed again"
        );
        pool.close().await;
        // The survivor still polls the queue: stop it before the schema is dropped under it.
        drop(survivor);
        app.stop().await;
    }
}
