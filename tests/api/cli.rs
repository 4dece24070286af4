//! `muscle eval`: the same path as the server, with exit codes a pipeline can act on.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::helpers::*;

fn muscle(dir: &Path, spec: &Value, extra: &[&str]) -> (i32, Value, String) {
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let out = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_muscle"))
        .arg("eval")
        .arg(&spec_path)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .env("MUSCLE_MODEL_DIR", model_dir())
        .env("MUSCLE_DATA_DIR", dir.join("data"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&out)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (
        output.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn spec_with_file(dir: &Path, gate: Value) -> Value {
    let dataset = dir.join("questions.jsonl");
    std::fs::write(&dataset, MC_ROWS).unwrap();
    let mut spec = evaluation_spec("unused");
    spec["dataset"] = json!({"path": dataset});
    spec["gate"] = gate;
    spec
}

#[test]
fn eval_exit_codes_follow_the_gate_and_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let instances = dir.path().join("instances.jsonl");
    let spec = spec_with_file(dir.path(), json!([{"metric": "nfr", "max": 1.0}]));
    let (code, report, stderr) = muscle(
        dir.path(),
        &spec,
        &["--instances", instances.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["n"], 6);
    assert_eq!(report["gate"]["passed"], true);
    assert!(
        stderr.contains("gate passed: 1 of 1 checks passed"),
        "{stderr}"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&instances)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["id"], "q1");
    assert_eq!(lines[0]["prompt"], "The cat sat on the");
    assert_eq!(lines[0]["choices"], json!(["mat", "moon", "dog"]));
    assert!(lines[0]["old"]["scores"].as_array().unwrap().len() == 3);

    // An impossible bound: the run completes, the gate fails, the exit code says so.
    let spec = spec_with_file(dir.path(), json!([{"metric": "agreement", "min": 1.01}]));
    let (code, report, stderr) = muscle(dir.path(), &spec, &[]);
    assert_eq!(code, 1);
    assert_eq!(report["gate"]["passed"], false);
    // Why it failed is said on stderr, though the report went to --out.
    // The value is shown to 4 significant digits.
    let agreement = report["metrics"]["agreement"].as_f64().unwrap();
    let shown: f64 = stderr
        .split("gate failed: agreement ")
        .nth(1)
        .and_then(|rest| rest.split(" < 1.01; 1 of 1 checks failed").next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no verdict line in {stderr}"));
    assert!((shown - agreement).abs() < 5e-4, "{shown} vs {agreement}");
    assert_eq!(report["gate"]["checks"][0]["passed"], false);

    let mut spec = spec_with_file(dir.path(), json!([]));
    spec["new"]["model"] = json!("models/no-such-model");
    let (code, _, stderr) = muscle(dir.path(), &spec, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("new.model"), "{stderr}");

    let spec = spec_with_file(dir.path(), json!([]));
    let (code, _, stderr) = muscle(dir.path(), &spec, &["--device", "gpu"]);
    assert_eq!(code, 2, "an unknown device is invalid input: {stderr}");
    assert!(stderr.contains("cpu, cuda or cuda:N"), "{stderr}");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"p\", \"choices\": [\"a\", \"b\"], \"answer\": 9}\n",
    )
    .unwrap();
    let mut spec = spec_with_file(dir.path(), json!([]));
    spec["dataset"] = json!({"path": bad});
    let (code, _, stderr) = muscle(dir.path(), &spec, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 1: answer"), "{stderr}");
}

#[test]
fn half_precision_is_refused_on_cpu_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec_with_file(dir.path(), json!([]));
    spec["old"]["dtype"] = json!("bf16");
    spec["new"]["dtype"] = json!("f16");
    let (code, report, stderr) = muscle(dir.path(), &spec, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(report, Value::Null, "no report is written");
    for (field, dtype) in [("old.dtype", "bf16"), ("new.dtype", "f16")] {
        let line = stderr
            .lines()
            .find(|l| l.contains(field))
            .unwrap_or_else(|| panic!("no {field} error in {stderr}"));
        assert!(line.contains(dtype) && line.contains("\"f32\""), "{line}");
    }
    spec["old"]["dtype"] = json!("f32");
    spec["new"]["dtype"] = json!("f32");
    let (code, _, stderr) = muscle(dir.path(), &spec, &[]);
    assert_eq!(code, 0, "f32 runs: {stderr}");
}

#[test]
fn different_tokenizers_are_evaluated_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("llama-other-tokenizer");
    std::fs::create_dir_all(&other).unwrap();
    let source = model_dir().join("models/llama-gqa");
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    // The same vocabulary written differently: another file, so another tokenizer as far as
    // a compatibility adapter is concerned.
    let tokenizer: Value =
        serde_json::from_str(&std::fs::read_to_string(other.join("tokenizer.json")).unwrap())
            .unwrap();
    std::fs::write(
        other.join("tokenizer.json"),
        serde_json::to_string(&tokenizer).unwrap(),
    )
    .unwrap();

    let mut spec = spec_with_file(dir.path(), json!([]));
    spec["new"] = json!({"model": other});
    let (code, report, stderr) = muscle(dir.path(), &spec, &[]);
    assert_eq!(code, 0, "{stderr}");
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("tokenizers differ")),
        "{warnings:?}"
    );
    assert_eq!(report["n"], 6);
}

/// `muscle wait ID --server URL`: exit code and verdict line.
async fn wait_for(app: &TestApp, id: &str, timeout: u64) -> (i32, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_muscle"))
        .args([
            "wait",
            id,
            "--server",
            &app.base,
            "--timeout",
            &timeout.to_string(),
        ])
        .env_remove("MUSCLE_API_TOKEN")
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn submit(app: &TestApp, gate: Value) -> String {
    let dataset = app.upload_ok(MC_ROWS).await;
    let mut spec = evaluation_spec(&dataset);
    spec["gate"] = gate;
    let created: Value = app
        .post_json("/v1/evaluations", &spec)
        .await
        .json()
        .await
        .unwrap();
    created["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_a_job_to_its_verdict() {
    on_every_backend(Options::default, |app| async move {
        let id = submit(&app, json!([{"metric": "nfr", "max": 1.0}])).await;
        let (code, stderr) = wait_for(&app, &id, 120).await;
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains("gate passed: 1 of 1 checks passed"),
            "{stderr}"
        );

        let id = submit(&app, json!([{"metric": "agreement", "min": 1.01}])).await;
        let (code, stderr) = wait_for(&app, &id, 120).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("gate failed: agreement"), "{stderr}");

        let (code, stderr) = wait_for(&app, "00000000-0000-0000-0000-000000000000", 5).await;
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("no evaluation or training"), "{stderr}");
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_gives_up_at_its_timeout() {
    on_every_backend(Options::api_only, |app| async move {
        let id = submit(&app, json!([])).await;
        let (code, stderr) = wait_for(&app, &id, 1).await;
        assert_eq!(code, 4, "{stderr}");
        assert!(stderr.contains("timed out after 1 s"), "{stderr}");
        assert!(stderr.contains("queued"), "{stderr}");
        app
    })
    .await;
}

/// stderr a closed pipe (`muscle eval ... 2>&1 >/dev/null | true`): logs and the verdict are
/// lost, the evaluation is not, and the exit code is the gate's.
#[test]
fn a_closed_stderr_neither_hangs_nor_changes_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(
        &spec_path,
        spec_with_file(dir.path(), json!([])).to_string(),
    )
    .unwrap();
    let out = dir.path().join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_muscle"))
        .arg("eval")
        .arg(&spec_path)
        .arg("--out")
        .arg(&out)
        .env("MUSCLE_MODEL_DIR", model_dir())
        .env("MUSCLE_DATA_DIR", dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("muscle eval hung with its stderr closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert_eq!(report["n"], 6);
}

/// `muscle serve` with one setting changed: its exit code and stderr, or None if it was still
/// running after `wait` (it started serving).
fn serve_with(dir: &Path, name: &str, value: &str, wait: u64) -> Option<(i32, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muscle"))
        .arg("serve")
        .env("MUSCLE_BIND", "127.0.0.1:0")
        .env("MUSCLE_WORKERS", "0")
        .env("MUSCLE_MODEL_DIR", model_dir())
        .env("MUSCLE_DATA_DIR", dir.join("data"))
        .env_remove("DATABASE_URL")
        .env_remove("MUSCLE_API_TOKEN")
        .env_remove("MUSCLE_CORS_ORIGINS")
        .env(name, value)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(wait) {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            return Some((
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

#[test]
fn serve_refuses_a_token_http_cannot_carry_and_bad_cors_origins() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value, says) in [
        ("MUSCLE_API_TOKEN", "tøken-1", "character 2 is not ASCII"),
        (
            "MUSCLE_API_TOKEN",
            "token-2 ",
            "begins or ends with whitespace",
        ),
        (
            "MUSCLE_CORS_ORIGINS",
            "*,https://dash.example.com",
            "`*` (any origin) cannot be listed",
        ),
        (
            "MUSCLE_CORS_ORIGINS",
            "https://dash.example.com/",
            "is not an origin",
        ),
    ] {
        let (code, stderr) = serve_with(dir.path(), name, value, 20)
            .unwrap_or_else(|| panic!("serve started with {name}={value:?}"));
        assert_eq!(code, 2, "{name}={value:?}: {stderr}");
        assert!(
            stderr.contains(&format!("error: {name}")) && stderr.contains(says),
            "{name}={value:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        if name == "MUSCLE_API_TOKEN" {
            assert!(
                !stderr.contains(value.trim()),
                "the token is echoed: {stderr}"
            );
        }
    }
    // `*` alone is any origin: the server starts and keeps running (it panicked at start).
    assert_eq!(serve_with(dir.path(), "MUSCLE_CORS_ORIGINS", "*", 5), None);
}
