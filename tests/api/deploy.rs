//! What can be checked of the deployment without a Docker engine: the compose file validates,
//! and the container entrypoint runs and health-checks the real binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::helpers::{repo, skip_required};

/// docker-compose (v1, Debian's package) or the v2 plugin, whichever is installed. A plain
/// `docker` client without the compose plugin reads `compose` as an unknown command and `-f` as
/// an unknown flag, so the plugin is asked for its version before it is used.
fn compose_config(file: &Path) -> Option<String> {
    let answers = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let attempts: [&[&str]; 2] = [&["docker-compose"], &["docker", "compose"]];
    let tool = attempts.into_iter().find(|cmd| answers(cmd))?;
    let output = Command::new(tool[0])
        .args(&tool[1..])
        .arg("-f")
        .arg(file)
        .arg("config")
        .output()
        .unwrap_or_else(|e| panic!("{} config: {e}", tool.join(" ")));
    if !output.status.success() {
        panic!(
            "{} rejects the compose file:\n{}",
            tool.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn the_compose_file_validates_with_postgres_api_and_gpu_workers() {
    let Some(config) = compose_config(&repo().join("docker/compose.yaml")) else {
        skip_required(
            "validating docker/compose.yaml",
            "neither docker-compose nor the docker compose plugin is installed (apt-get install \
             docker-compose; .ci/run installs it)",
        );
        return;
    };
    for needle in [
        "postgres:",
        "condition: service_healthy",
        "driver: nvidia",
        "capabilities:",
        "- gpu",
        "MUSCLE_DEVICE: cuda",
        "DATABASE_URL: postgres://muscle:muscle@postgres:5432/muscle",
        "/models:ro",
        "dockerfile: docker/Dockerfile.cuda",
        "CUDA_COMPUTE_CAP: '90'",
        // The optional inference server endpoint sides reach by name (README).
        "image: vllm/vllm-openai:",
        "- vllm",
        "VLLM_BATCH_INVARIANT: '1'",
        "MUSCLE_ENDPOINT_HOSTS:",
    ] {
        assert!(
            config.contains(needle),
            "compose config lacks {needle:?}:\n{config}"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn entrypoint(run: &Path, data: &Path, args: &[&str], port: u16) -> Command {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_muscle"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(repo().join("docker/entrypoint.sh"));
    command
        .args(args)
        .env("PATH", path)
        .env("MUSCLE_RUN_DIR", run)
        .env("MUSCLE_DATA_DIR", data)
        .env("MUSCLE_MODEL_DIR", repo().join("examples"))
        .env("MUSCLE_BIND", format!("127.0.0.1:{port}"))
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn the_entrypoint_runs_muscle_and_answers_the_healthcheck() {
    let run = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let status = entrypoint(run.path(), data.path(), &["migrate"], port)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        data.path().join("muscle.db").is_file(),
        "migrate created the SQLite database"
    );

    let mut server = entrypoint(run.path(), data.path(), &["serve"], port)
        .spawn()
        .unwrap();
    let healthy = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        entrypoint(run.path(), data.path(), &["healthcheck"], port)
            .status()
            .unwrap()
            .success()
    });
    assert_eq!(
        std::fs::read_to_string(run.path().join("muscle.pid"))
            .unwrap()
            .trim(),
        server.id().to_string(),
        "muscle runs as the entrypoint's own PID, so signals reach it"
    );
    // SIGTERM: a graceful stop, exit code 0.
    Command::new("kill")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    let exit = server.wait().unwrap();
    assert!(healthy, "the healthcheck never passed");
    assert!(exit.success(), "serve exits cleanly on SIGTERM: {exit:?}");
    let after = entrypoint(run.path(), data.path(), &["healthcheck"], port)
        .status()
        .unwrap();
    assert!(
        !after.success(),
        "the healthcheck fails once the server is gone"
    );

    let mut worker = entrypoint(run.path(), data.path(), &["worker"], port)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let alive = entrypoint(run.path(), data.path(), &["healthcheck"], port)
        .status()
        .unwrap();
    Command::new("kill")
        .arg(worker.id().to_string())
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success());
    assert!(alive.success(), "a running worker is healthy");
}
