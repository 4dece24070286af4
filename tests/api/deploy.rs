//! What can be checked of the deployment without a Docker engine: the compose files validate,
//! and the container entrypoint runs and health-checks the real binary. tests/docker builds the
//! image and runs the stack on a real engine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::helpers::{free_port, repo, skip_required};

/// The compose v2 plugin, or docker-compose where that is v1 (Debian's package; it cannot read
/// the CPU overlay's `!reset`). A plain `docker` client without the plugin reads `compose` as an
/// unknown command and `-f` as an unknown flag, so each is asked for its version first.
fn compose_config(files: &[&str], profiles: &[&str]) -> Option<String> {
    let answers = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let attempts: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    let tool = attempts.into_iter().find(|cmd| answers(cmd))?;
    if files.len() > 1 && tool == ["docker-compose"] {
        return None;
    }
    let mut command = Command::new(tool[0]);
    command.args(&tool[1..]).current_dir(repo());
    for file in files {
        command.arg("-f").arg(file);
    }
    for profile in profiles {
        command.args(["--profile", profile]);
    }
    let output = command
        .arg("config")
        .output()
        .unwrap_or_else(|e| panic!("{} config: {e}", tool.join(" ")));
    if !output.status.success() {
        panic!(
            "{} rejects {files:?}:\n{}",
            tool.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

const NO_COMPOSE: &str = "the docker compose v2 plugin is not installed (scripts/docker/install-engine.sh \
                          installs it; .ci/run runs that)";

#[test]
fn the_compose_file_validates_with_postgres_api_and_gpu_workers() {
    let Some(config) = compose_config(&["docker/compose.yaml"], &["vllm"]) else {
        skip_required("validating docker/compose.yaml", NO_COMPOSE);
        return;
    };
    // v1 quotes strings with ', v2 with ".
    let config = config.replace('\'', "\"");
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
        "CUDA_COMPUTE_CAP: \"90\"",
        // The optional inference server endpoint sides reach by name (README).
        "image: vllm/vllm-openai:",
        "- vllm",
        "VLLM_BATCH_INVARIANT: \"1\"",
        "MUSCLE_ENDPOINT_HOSTS:",
        // Trained adapters in their own writable volume, not inside the read-only models.
        "MUSCLE_TRAINED_DIR: /trained",
        "target: /trained",
        "read_only: true",
    ] {
        assert!(
            config.contains(needle),
            "compose config lacks {needle:?}:\n{config}"
        );
    }
    assert!(
        !config.contains("/models/trained"),
        "no mount point inside the read-only models:\n{config}"
    );
}

#[test]
fn the_cpu_overlay_runs_workers_on_the_cpu_image_without_gpus() {
    let Some(config) = compose_config(&["docker/compose.yaml", "docker/compose.cpu.yaml"], &[])
    else {
        skip_required("validating docker/compose.cpu.yaml", NO_COMPOSE);
        return;
    };
    let worker = &config[config.find("\n  worker:").expect("a worker service")..];
    for needle in [
        "dockerfile: docker/Dockerfile\n",
        "image: muscle:cpu",
        "MUSCLE_DEVICE: cpu",
    ] {
        assert!(
            worker.contains(needle),
            "the CPU worker lacks {needle:?}:\n{worker}"
        );
    }
    assert!(
        !config.contains("nvidia") && !config.contains("CUDA_COMPUTE_CAP"),
        "no GPU is reserved or built for:\n{config}"
    );
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
