//! Training on the tiny fixture model: descent, the compatibility start, refusals, and the
//! PEFT adapter we write (round trip through our loader, and the committed PEFT reference).

use std::path::PathBuf;

use muscle::engine::{DeviceSpec, LoadedModel, ModelSpec};
use muscle::spec::TrainingSpec;
use muscle::train::peft::write_adapter;
use muscle::train::{NoHooks, TrainError, TrainInputs, Trainer};
use serde_json::{Value, json};

use super::helpers::{copy_dir, fixtures, logits, max_diff, rows};

fn model() -> PathBuf {
    fixtures().join("engine/models/llama-gqa")
}

fn adapter(name: &str) -> PathBuf {
    fixtures().join("engine/adapters").join(name)
}

fn spec(v: Value) -> TrainingSpec {
    serde_json::from_value(v).unwrap()
}

fn task_inputs(hyper: Value, n: usize) -> TrainInputs {
    TrainInputs {
        spec: spec(
            json!({"objective": "task", "new": {"model": "m"}, "dataset": "d",
            "output": "o", "hyperparameters": hyper}),
        ),
        new_base: model(),
        new_adapter: None,
        old: None,
        device: DeviceSpec::Cpu,
        rows: rows(n),
    }
}

fn compat_inputs(hyper: Value, old_base: PathBuf) -> TrainInputs {
    TrainInputs {
        spec: spec(
            json!({"objective": "compatibility", "old": {"model": "a", "adapter": "b"},
            "new": {"model": "m", "adapter": "t"}, "dataset": "d", "output": "o",
            "hyperparameters": hyper}),
        ),
        new_base: model(),
        new_adapter: Some(adapter("llama-gqa-lora-all")),
        old: Some((old_base, Some(adapter("llama-gqa-lora-list")))),
        device: DeviceSpec::Cpu,
        rows: rows(20),
    }
}

#[test]
fn gradient_descent_lowers_the_training_loss() {
    let mut trainer = Trainer::new(task_inputs(
        json!({"rank": 4, "alpha": 8, "learning_rate": 0.01, "epochs": 1, "batch_size": 4,
               "warmup_steps": 0, "loss_tokens": "answer"}),
        20,
    ))
    .unwrap();
    let all: Vec<usize> = (0..trainer.train.len()).collect();
    let first = trainer.optimizer_step(&all).unwrap().loss;
    let mut last = first;
    for _ in 0..15 {
        last = trainer.optimizer_step(&all).unwrap().loss;
    }
    assert!(last < first * 0.5, "loss {first} -> {last}");
    // The validation cross-entropy is finite and the run loop records history and a best epoch.
    trainer.run(&mut NoHooks).unwrap();
    assert_eq!(trainer.state.epochs_done, 1);
    assert_eq!(trainer.state.best_epoch, Some(1));
    assert!(trainer.best_tensors.is_some());
    assert!(
        trainer
            .state
            .history
            .iter()
            .any(|h| matches!(h, muscle::train::HistoryEntry::Validation(_)))
    );
}

#[test]
fn the_compatibility_adapter_starts_as_the_new_task_model() {
    // Rank 16 > the task adapter's 8: its factors fill the first 8 ranks, the rest start at zero.
    let trainer = Trainer::new(compat_inputs(json!({"rank": 16, "alpha": 32}), model())).unwrap();
    let teacher = LoadedModel::load(
        &ModelSpec::cpu_f32(model(), Some(adapter("llama-gqa-lora-all"))),
        false,
    )
    .unwrap();
    let ids = [1u32, 40, 41, 42, 43, 100, 200];
    let d = max_diff(
        &logits(&trainer.student, &ids),
        &logits(&teacher.decoder, &ids),
    );
    assert!(d < 1e-4, "student differs from the new task model by {d}");
    assert!(trainer.lora.init.starts_with("started from"));

    // A rank below the task adapter's cannot hold it: refused with the reason.
    let Err(TrainError::Invalid(message)) =
        Trainer::new(compat_inputs(json!({"rank": 4}), model()))
    else {
        panic!("rank 4 accepted");
    };
    assert!(message.contains("rank 4 is below"), "{message}");
    // So is a target set that leaves out layers the task adapter adapts.
    let Err(TrainError::Invalid(message)) = Trainer::new(compat_inputs(
        json!({"rank": 8, "target_modules": ["q_proj", "v_proj"]}),
        model(),
    )) else {
        panic!("narrower targets accepted");
    };
    assert!(message.contains("target_modules leaves out"), "{message}");
}

#[test]
fn compatibility_training_runs_and_reports_the_mask() {
    let mut trainer = Trainer::new(compat_inputs(
        json!({"rank": 8, "alpha": 16, "epochs": 1, "batch_size": 8, "warmup_steps": 0,
               "learning_rate": 0.001, "ce_weight": 0.5, "loss_tokens": "all"}),
        model(),
    ))
    .unwrap();
    let all: Vec<usize> = (0..trainer.train.len()).collect();
    let entry = trainer.optimizer_step(&all).unwrap();
    let share = entry.old_share.unwrap();
    assert!((0.0..=1.0).contains(&share));
    assert!(entry.distil.unwrap() >= 0.0);
    assert!(entry.loss.is_finite());
}

#[test]
fn old_and_new_models_with_different_tokenizers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    copy_dir(&model(), &other);
    let mut tokenizer: Value =
        serde_json::from_slice(&std::fs::read(other.join("tokenizer.json")).unwrap()).unwrap();
    tokenizer["added_tokens"][0]["content"] = json!("<unknown>");
    std::fs::write(other.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let Err(TrainError::Invalid(message)) = Trainer::new(compat_inputs(json!({}), other.clone()))
    else {
        panic!("a tokenizer change was accepted");
    };
    assert!(message.contains("different tokenizers"), "{message}");

    // Same tokenizer, another vocabulary size.
    std::fs::copy(model().join("tokenizer.json"), other.join("tokenizer.json")).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(other.join("config.json")).unwrap()).unwrap();
    config["vocab_size"] = json!(512);
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let message = muscle::train::pair::check_same_vocabulary(&other, &model()).unwrap_err();
    assert!(
        message.contains("vocabulary sizes (512 vs 448)"),
        "{message}"
    );
}

/// Trains a few steps with a high learning rate, so the adapter is far from a no-op.
fn trained() -> Trainer {
    let mut trainer = Trainer::new(task_inputs(
        json!({"rank": 4, "alpha": 8, "learning_rate": 0.02, "batch_size": 8,
               "warmup_steps": 0, "loss_tokens": "all", "seed": 3}),
        16,
    ))
    .unwrap();
    let all: Vec<usize> = (0..trainer.train.len()).collect();
    for _ in 0..4 {
        trainer.optimizer_step(&all).unwrap();
    }
    trainer.student.training = false;
    trainer
}

#[test]
fn an_exported_adapter_loads_back_to_the_same_logits() {
    let trainer = trained();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    write_adapter(
        &out,
        &trainer.lora,
        &trainer.lora.tensors(),
        "models/llama-gqa",
    )
    .unwrap();
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    let loaded = LoadedModel::load(&ModelSpec::cpu_f32(model(), Some(out.clone())), false).unwrap();
    let base = LoadedModel::load(&ModelSpec::cpu_f32(model(), None), false).unwrap();
    let ids = [1u32, 70, 80, 90, 100, 33, 34];
    let ours = logits(&trainer.student, &ids);
    assert!(max_diff(&ours, &logits(&loaded.decoder, &ids)) < 1e-4);
    assert!(
        max_diff(&ours, &logits(&base.decoder, &ids)) > 1e-2,
        "the adapter must change the model for this test to mean anything"
    );
    // The safetensors header carries {"format": "pt"} and PEFT key names.
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .unwrap()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );
    assert!(
        meta.tensors()
            .contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")
    );
}

const PEFT_FIXTURE: &str = "train/peft-adapter";

/// Regenerates the committed adapter (then run scripts/reference/check_peft_export.py):
/// `MUSCLE_WRITE_FIXTURES=1 cargo test --test engine train_engine::write_peft_fixture -- --ignored`
#[test]
#[ignore]
fn write_peft_fixture() {
    if std::env::var("MUSCLE_WRITE_FIXTURES").is_err() {
        return;
    }
    let trainer = trained();
    let out = fixtures().join(PEFT_FIXTURE);
    let _ = std::fs::remove_dir_all(&out);
    write_adapter(
        &out,
        &trainer.lora,
        &trainer.lora.tensors(),
        "models/llama-gqa",
    )
    .unwrap();
}

#[test]
fn peft_loads_our_adapter_to_the_same_logits() {
    let reference: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("train/peft_logits.json")).unwrap())
            .unwrap();
    let ours = LoadedModel::load(
        &ModelSpec::cpu_f32(model(), Some(fixtures().join(PEFT_FIXTURE))),
        false,
    )
    .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
        let got = logits(&ours.decoder, &ids);
        let d = max_diff(&got, &want);
        assert!(
            d < 1e-4,
            "{}: PEFT and our engine differ by {d}",
            case["text"]
        );
        let base: Vec<Vec<f32>> = serde_json::from_value(case["base_logits"].clone()).unwrap();
        assert!(
            max_diff(&want, &base) > 1e-2,
            "the adapter changes PEFT's logits"
        );
    }
}

/// Training throughput on this machine (prints; asserts nothing):
/// `MUSCLE_BENCH=task|compatibility cargo test --release --test engine train_engine::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    let Ok(objective) = std::env::var("MUSCLE_BENCH") else {
        return;
    };
    let hyper = json!({"rank": 8, "alpha": 16, "epochs": 3, "batch_size": 8, "warmup_steps": 0,
                       "loss_tokens": "all", "max_seq_len": 64});
    let mut inputs = if objective == "task" {
        task_inputs(hyper, 200)
    } else {
        compat_inputs(hyper, model())
    };
    inputs.rows = rows(200);
    let mut trainer = Trainer::new(inputs).unwrap();
    let started = std::time::Instant::now();
    trainer.run(&mut NoHooks).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{objective}: {} steps, {} tokens in {seconds:.2} s = {:.0} tokens/s",
        trainer.state.step,
        trainer.tokens_seen,
        trainer.tokens_seen as f64 / seconds
    );
}
