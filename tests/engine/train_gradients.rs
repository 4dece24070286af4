//! The memory-saving training paths compute the gradients of the plain one: blocks recomputed in
//! the backward or read back from the tapes their forward kept, on candle's fused kernels (with
//! hand-written backward passes), against candle's own backward through plain ops, on every family; and the loss taken a chunk of rows at a time
//! against the loss on whole logits.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use muscle::engine::{DeviceSpec, LoadedModel, ModelSpec, WeightDtype};
use muscle::spec::{Mask, TrainingSpec};
use muscle::train::data::Example;
use muscle::train::head_loss::{TeacherStates, head_cross_entropy, head_loss};
use muscle::train::loss::{LossConfig, Teachers, cross_entropy, loss};
use muscle::train::{TrainInputs, Trainer};
use serde_json::json;

use super::helpers::{fixtures, rows};

/// (model folder, adapter folder) of every family the engine runs.
fn models() -> Vec<(PathBuf, Option<PathBuf>)> {
    let engine = |m: &str, a: Option<&str>| {
        (
            fixtures().join("engine/models").join(m),
            a.map(|a| fixtures().join("engine/adapters").join(a)),
        )
    };
    let family = |m: &str, a: Option<&str>| {
        (
            fixtures().join("families/models").join(m),
            a.map(|a| fixtures().join("families/adapters").join(a)),
        )
    };
    vec![
        engine("llama-gqa", Some("llama-gqa-lora-all")),
        engine("mistral", None),
        engine("qwen2-bias", Some("qwen2-lora-regex")),
        family("phi-partial05", None),
        family("phi-qkln04", Some("phi-lora")),
        family("phi3-longrope", Some("phi3-lora")),
        family("gemma", None),
        family("gemma2", Some("gemma2-lora")),
        family("gemma3", Some("gemma3-lora")),
        family("qwen3", Some("qwen3-lora")),
    ]
}

fn compatibility(model: PathBuf, adapter: Option<PathBuf>) -> TrainInputs {
    let spec: TrainingSpec = serde_json::from_value(json!({
        "objective": "compatibility", "old": {"model": "a"},
        "new": {"model": "m", "adapter": "t"}, "dataset": "d", "output": "o",
        "hyperparameters": {"rank": 8, "alpha": 16, "epochs": 1, "batch_size": 8,
            "dropout": 0.1, "ce_weight": 0.5, "loss_tokens": "all"}}))
    .unwrap();
    TrainInputs {
        spec,
        new_base: model.clone(),
        new_adapter: adapter,
        old: Some((model, None)),
        device: DeviceSpec::Cpu,
        rows: rows(12),
    }
}

/// The loss and every LoRA factor's gradient, in the adapter's order.
fn loss_and_gradients(trainer: &Trainer) -> (f32, Vec<Vec<f32>>) {
    let examples: Vec<&Example> = trainer.train.iter().collect();
    let (value, grads) = trainer.loss_and_gradients(&examples).unwrap();
    let gradients = trainer
        .lora
        .vars()
        .iter()
        .map(|(name, var)| {
            grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    (value.total.to_scalar::<f32>().unwrap(), gradients)
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale + 1e-7,
        "{what}: differs by {worst} (largest entry {scale})"
    );
}

#[test]
fn recomputed_fused_blocks_give_the_plain_gradients() {
    for (model, adapter) in models() {
        let name = model.file_name().unwrap().to_string_lossy().to_string();
        let mut trainer =
            Trainer::new(compatibility(model, adapter)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(trainer.student.fused && trainer.student.recompute.is_some());
        trainer.student.dropout_seed = 11;
        // Every block run again in the backward, the first block's tape kept, every one kept.
        let fast: Vec<_> = [0, 1, usize::MAX]
            .into_iter()
            .map(|budget| {
                trainer.student.tape_budget = budget;
                (budget, loss_and_gradients(&trainer))
            })
            .collect();

        trainer.student.fused = false;
        trainer.student.recompute = None;
        let (plain_loss, plain) = loss_and_gradients(&trainer);
        assert!(
            plain.iter().flatten().any(|g| g.abs() > 1e-6),
            "{name}: every gradient is zero"
        );
        for (budget, (loss, fast)) in fast {
            assert!(
                (loss - plain_loss).abs() <= 1e-5 * plain_loss.abs(),
                "{name}, tape budget {budget}: loss {loss} vs {plain_loss}"
            );
            for (i, (f, p)) in fast.iter().zip(&plain).enumerate() {
                assert_close(&format!("{name}, tape budget {budget}: factor {i}"), f, p);
            }
        }

        // Another dropout seed drops other entries: the seed is what both paths shared.
        trainer.student.dropout_seed = 12;
        let (_, reseeded) = loss_and_gradients(&trainer);
        assert_ne!(reseeded, plain, "{name}: the dropout seed changes nothing");
    }
}

#[test]
fn the_loss_by_chunks_is_the_loss_on_whole_logits() {
    let base = fixtures().join("engine/models/llama-gqa");
    let spec = ModelSpec {
        base,
        adapter: None,
        dtype: WeightDtype::F32,
        device: DeviceSpec::Cpu,
    };
    let decoder = LoadedModel::load(&spec, true).unwrap().decoder;
    let dev = Device::Cpu;
    // 70 rows: two whole chunks and a part.
    let (n, hidden) = (70, decoder.config.hidden_size);
    let states =
        |scale: f64| (Tensor::randn(0f32, 1.0, (n, hidden), &dev).unwrap() * scale).unwrap();
    let student = Var::from_tensor(&states(2.0)).unwrap();
    let (old, new) = (states(2.0), states(2.0));
    let vocab = decoder.config.vocab_size as u32;
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 5) % vocab).collect();
    let config = LossConfig {
        temperature: 2.0,
        mask: Mask::Muscle,
        ce_weight: 0.25,
    };

    let chunked = head_loss(
        &decoder,
        student.as_tensor(),
        Some((
            TeacherStates {
                decoder: &decoder,
                hidden: &old,
            },
            TeacherStates {
                decoder: &decoder,
                hidden: &new,
            },
        )),
        &targets,
        config,
    )
    .unwrap();
    let chunked_grad = chunked.total.backward().unwrap();

    let logits = |h: &Tensor| decoder.head(h).unwrap();
    let (z_old, z_new) = (logits(&old), logits(&new));
    let whole = loss(
        &logits(student.as_tensor()),
        &targets,
        Some(Teachers {
            old: &z_old,
            new: &z_new,
        }),
        config,
    )
    .unwrap();
    let whole_grad = whole.total.backward().unwrap();

    let value = |t: &Tensor| t.to_scalar::<f32>().unwrap();
    assert!((value(&chunked.total) - value(&whole.total)).abs() < 1e-5 * value(&whole.total));
    assert!((chunked.ce - whole.ce).abs() < 1e-5 * whole.ce);
    assert!((chunked.distil.unwrap() - whole.distil.unwrap()).abs() < 1e-5);
    assert!((chunked.old_share.unwrap() - whole.old_share.unwrap()).abs() < 1e-9);
    let flat = |g: &candle_core::backprop::GradStore| {
        g.get(student.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_close("hidden", &flat(&chunked_grad), &flat(&whole_grad));

    let y = Tensor::from_slice(&targets, n, &dev).unwrap();
    let ce = cross_entropy(&logits(&old), &y)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let by_chunks = head_cross_entropy(&decoder, &old, &targets).unwrap();
    assert!((by_chunks - ce.to_scalar::<f64>().unwrap()).abs() < 1e-5);
}
