//! `muscle train SPEC.json` end to end: the result JSON and the exit codes.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::helpers::*;

fn run(dir: &Path, spec: &Value) -> (i32, String, String) {
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_muscle"))
        .args(["train", path.to_str().unwrap()])
        .env("MUSCLE_MODEL_DIR", dir.join("models"))
        .env("MUSCLE_DATA_DIR", dir.join("data"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn muscle_train_runs_evaluates_and_sets_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    copy_dir(
        &model_dir().join("models/llama-gqa"),
        &models.join("llama-gqa"),
    );
    for adapter in ["llama-gqa-lora-list", "llama-gqa-lora-all"] {
        copy_dir(
            &model_dir().join("adapters").join(adapter),
            &models.join(adapter),
        );
    }
    let rows: String = (0..8)
        .map(|i| {
            json!({"prompt": format!("item {i} is"), "choices": ["red", "blue"], "answer": i % 2})
                .to_string()
                + "\n"
        })
        .collect();
    let data = dir.path().join("rows.jsonl");
    std::fs::write(&data, rows).unwrap();
    let mut spec = json!({
        "objective": "compatibility",
        "old": {"model": "llama-gqa", "adapter": "llama-gqa-lora-list"},
        "new": {"model": "llama-gqa", "adapter": "llama-gqa-lora-all"},
        "dataset": {"path": data},
        "output": "compat",
        "hyperparameters": {"rank": 8, "epochs": 1, "batch_size": 4, "warmup_steps": 0},
        "evaluate": {"dataset": {"path": data}, "task": {"type": "multiple_choice"},
                     "gate": [{"metric": "nfr", "max": 1.0}]}
    });
    let (code, stdout, stderr) = run(dir.path(), &spec);
    assert_eq!(code, 0, "{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["adapter"], "compat");
    assert_eq!(result["best_epoch"], 1);
    assert_eq!(
        result["evaluations"]["old_vs_compat"]["status"], "succeeded",
        "{result}"
    );
    assert!(models.join("compat/adapter_model.safetensors").is_file());

    // A gate the trained adapter cannot pass: exit 1, the result still printed.
    spec["output"] = json!("compat-2");
    spec["evaluate"]["gate"] = json!([{"metric": "btc", "min": 1.01}]);
    let (code, stdout, stderr) = run(dir.path(), &spec);
    assert_eq!(code, 1, "{stderr}");
    assert!(serde_json::from_str::<Value>(&stdout).is_ok());
    assert!(
        stderr.contains("old_vs_compat: gate failed: btc "),
        "{stderr}"
    );

    // Invalid input: the output exists already -> 2.
    spec["output"] = json!("compat");
    let (code, _, stderr) = run(dir.path(), &spec);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("output"), "{stderr}");
}

#[test]
fn muscle_train_refuses_an_output_it_could_not_write_or_list() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    copy_dir(
        &model_dir().join("models/llama-gqa"),
        &models.join("llama-gqa"),
    );
    std::fs::write(models.join("notes.txt"), "a file").unwrap();
    let data = dir.path().join("rows.jsonl");
    std::fs::write(
        &data,
        r#"{"prompt": "item 1 is", "choices": ["red", "blue"], "answer": 0}"#,
    )
    .unwrap();
    let long = format!("trained/{}", "x".repeat(300));
    for (output, message) in [
        (
            "trained/",
            "output: \"trained\" is the folder adapters are written under",
        ),
        (
            "notes.txt/lora",
            "output: \"notes.txt\" is a file, not a folder",
        ),
        ("llama-gqa/lora", "output: \"llama-gqa\" is a model folder"),
        (long.as_str(), "is 300 bytes long"),
    ] {
        let spec = json!({"objective": "task", "new": {"model": "llama-gqa"},
                          "dataset": {"path": data}, "output": output});
        let (code, stdout, stderr) = run(dir.path(), &spec);
        assert_eq!(code, 2, "{output}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(message), "{output}: {stderr}");
    }
}
