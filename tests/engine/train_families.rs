//! `muscle train` on every model family beyond Llama (tests/fixtures/families): the task and
//! compatibility objectives train through the family's own layers, and the adapter we write
//! loads in PEFT to the logits our engine computes (tests/fixtures/train/peft_families.json,
//! made by scripts/reference/check_peft_export.py).

use std::path::PathBuf;

use muscle::engine::{DeviceSpec, LoadedModel, ModelSpec};
use muscle::spec::TrainingSpec;
use muscle::train::peft::write_adapter;
use muscle::train::{TrainInputs, Trainer};
use serde_json::{Value, json};

use super::helpers::{fixtures, logits, max_diff, rows};

fn family_model(name: &str) -> PathBuf {
    fixtures().join("families/models").join(name)
}

/// Every family model, with the adapter made for it by the fixture script (if any).
const MODELS: [(&str, Option<&str>); 7] = [
    ("phi-partial05", None),
    ("phi-qkln04", Some("phi-lora")),
    ("phi3-longrope", Some("phi3-lora")),
    ("gemma", None),
    ("gemma2", Some("gemma2-lora")),
    ("gemma3", Some("gemma3-lora")),
    ("qwen3", Some("qwen3-lora")),
];

fn spec(v: Value) -> TrainingSpec {
    serde_json::from_value(v).unwrap()
}

fn task_inputs(model: &str, hyper: Value) -> TrainInputs {
    TrainInputs {
        spec: spec(
            json!({"objective": "task", "new": {"model": "m"}, "dataset": "d",
            "output": "o", "hyperparameters": hyper}),
        ),
        new_base: family_model(model),
        new_adapter: None,
        old: None,
        device: DeviceSpec::Cpu,
        rows: rows(20),
    }
}

fn losses(trainer: &mut Trainer, steps: usize) -> (f64, f64) {
    let all: Vec<usize> = (0..trainer.train.len()).collect();
    let mut step = || trainer.optimizer_step(&all).unwrap().loss;
    let first = step();
    let mut last = first;
    for _ in 1..steps {
        last = step();
    }
    (first, last)
}

#[test]
fn every_family_trains_a_task_adapter() {
    for (model, _) in MODELS {
        let mut trainer = Trainer::new(task_inputs(
            model,
            json!({"rank": 4, "alpha": 8, "learning_rate": 0.01, "epochs": 1, "batch_size": 4,
                   "warmup_steps": 0, "loss_tokens": "answer"}),
        ))
        .unwrap_or_else(|e| panic!("{model}: {e}"));
        let (first, last) = losses(&mut trainer, 12);
        println!("{model}: task loss {first:.3} -> {last:.3}");
        // Gemma 2's final soft-cap (3 here) bounds the logits, so its loss falls slowest.
        assert!(last < first * 0.8, "{model}: loss {first} -> {last}");
    }
}

#[test]
fn every_family_trains_a_compatibility_adapter() {
    for (model, adapter) in MODELS {
        let Some(adapter) = adapter else { continue };
        let adapter = fixtures().join("families/adapters").join(adapter);
        let inputs = TrainInputs {
            spec: spec(json!({"objective": "compatibility", "old": {"model": "a"},
                "new": {"model": "m", "adapter": "t"}, "dataset": "d", "output": "o",
                "hyperparameters": {"rank": 8, "alpha": 16, "learning_rate": 0.01, "epochs": 1,
                    "batch_size": 4, "warmup_steps": 0, "loss_tokens": "all"}})),
            new_base: family_model(model),
            new_adapter: Some(adapter.clone()),
            old: Some((family_model(model), None)),
            device: DeviceSpec::Cpu,
            rows: rows(20),
        };
        let mut trainer = Trainer::new(inputs).unwrap_or_else(|e| panic!("{model}: {e}"));
        // The student starts as the new task model: distilling pulls it toward the old base.
        let (first, last) = losses(&mut trainer, 8);
        println!("{model}: compatibility loss {first:.4} -> {last:.4}");
        assert!(first.is_finite() && first > 0.0, "{model}: {first}");
        assert!(last < first, "{model}: loss {first} -> {last}");
    }
}

fn peft_dir(model: &str) -> PathBuf {
    fixtures().join("train/peft-families").join(model)
}

/// Regenerates the committed adapters (then run scripts/reference/check_peft_export.py):
/// `MUSCLE_WRITE_FIXTURES=1 cargo test --test engine train_families::write_family_peft_fixtures -- --ignored`
#[test]
#[ignore]
fn write_family_peft_fixtures() {
    if std::env::var("MUSCLE_WRITE_FIXTURES").is_err() {
        return;
    }
    for (model, _) in MODELS {
        let mut trainer = Trainer::new(task_inputs(
            model,
            json!({"rank": 4, "alpha": 8, "learning_rate": 0.02, "epochs": 1, "batch_size": 4,
                   "warmup_steps": 0, "loss_tokens": "all", "seed": 3}),
        ))
        .unwrap();
        losses(&mut trainer, 6);
        let out = peft_dir(model);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        write_adapter(
            &out,
            &trainer.lora,
            &trainer.lora.tensors(),
            &format!("models/{model}"),
        )
        .unwrap();
    }
}

#[test]
fn peft_loads_every_family_adapter_we_write_to_our_logits() {
    let reference: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("train/peft_families.json")).unwrap(),
    )
    .unwrap();
    let models = reference["models"].as_object().unwrap();
    assert_eq!(models.len(), MODELS.len());
    for (model, _) in MODELS {
        let cases = models[model].as_array().unwrap();
        assert!(!cases.is_empty());
        let ours = LoadedModel::load(
            &ModelSpec::cpu_f32(family_model(model), Some(peft_dir(model))),
            false,
        )
        .unwrap();
        for case in cases {
            let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
            let d = max_diff(&logits(&ours.decoder, &ids), &want);
            println!("{model} {}: PEFT vs ours {d:e}", case["text"]);
            assert!(
                d < 1e-4,
                "{model} {}: PEFT and our engine differ by {d}",
                case["text"]
            );
            let base: Vec<Vec<f32>> = serde_json::from_value(case["base_logits"].clone()).unwrap();
            assert!(
                max_diff(&want, &base) > 1e-2,
                "{model}: the adapter changes PEFT's logits"
            );
        }
    }
}
