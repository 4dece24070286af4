//! One compose project of the deployment: docker/compose.yaml with docker/compose.cpu.yaml (CPU
//! workers) and tests/fixtures/docker/host-network.yaml (loopback ports, since this machine's
//! dockerd has no bridge network), its own env file, and `down -v` when dropped.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::files::repo;
use super::ports::free_port;

pub struct Stack {
    pub project: String,
    env_file: tempfile::NamedTempFile,
    pub api: String,
    http: reqwest::Client,
}

/// Whether `command` runs and exits 0, its output discarded.
pub fn answers(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command`, panicking with its output unless it exits 0; returns its stdout.
pub fn checked(command: &mut Command, what: &str) -> String {
    let output: Output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stdout), 40),
            tail(&String::from_utf8_lossy(&output.stderr), 40)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A line in the test's output past the harness's capture: what each phase took.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "docker stack: {line}");
}

impl Stack {
    /// A project named after this process, on free loopback ports, with the example models
    /// mounted, leases of `lease_seconds` and no API token (the walk-through sends none).
    pub fn new(lease_seconds: u64) -> Self {
        let project = format!("muscle-test-{}", std::process::id());
        let api_port = free_port();
        let pg_port = free_port();
        let mut env_file = tempfile::NamedTempFile::new().unwrap();
        write!(
            env_file,
            "POSTGRES_PASSWORD=stack-test-{pid}\n\
             MUSCLE_API_TOKEN=\n\
             MODELS_DIR={models}\n\
             MUSCLE_LEASE_SECONDS={lease_seconds}\n\
             MUSCLE_TEST_API_PORT={api_port}\n\
             MUSCLE_TEST_PG_PORT={pg_port}\n",
            pid = std::process::id(),
            models = repo().join("examples").display(),
        )
        .unwrap();
        Self {
            project,
            env_file,
            api: format!("http://127.0.0.1:{api_port}"),
            http: reqwest::Client::new(),
        }
    }

    pub fn compose(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .current_dir(repo())
            .args(["compose", "-p", &self.project, "--env-file"])
            .arg(self.env_file.path())
            .args([
                "-f",
                "docker/compose.yaml",
                "-f",
                "docker/compose.cpu.yaml",
                "-f",
            ])
            .arg(PathBuf::from("tests/fixtures/docker/host-network.yaml"));
        command
    }

    /// `docker compose <args>`, panicking with the services' last log lines when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let output = self.compose().args(args).output().unwrap();
        if !output.status.success() {
            panic!(
                "docker compose {} failed:\n{}\n--- logs\n{}",
                args.join(" "),
                tail(&String::from_utf8_lossy(&output.stderr), 40),
                self.logs()
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn logs(&self) -> String {
        let output = self
            .compose()
            .args(["logs", "--no-color", "--tail", "30"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `up -d --wait`: every service started and healthy (the images' HEALTHCHECK).
    pub fn up(&self) -> Duration {
        let started = Instant::now();
        self.run(&["up", "-d", "--wait", "--wait-timeout", "180"]);
        started.elapsed()
    }

    /// One SQL answer from the stack's own Postgres, through its container.
    pub fn sql(&self, query: &str) -> String {
        self.run(&[
            "exec", "-T", "postgres", "psql", "-U", "muscle", "-d", "muscle", "-tAc", query,
        ])
        .trim()
        .to_string()
    }

    pub async fn get(&self, path: &str) -> Value {
        let answer = self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn post(&self, path: &str, content_type: &str, body: String) -> Value {
        let answer = self
            .http
            .post(format!("{}{path}", self.api))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self
            .compose()
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
