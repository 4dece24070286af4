use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::evaluation::{EvalOptions, TaskSpec, check_gate, check_task};
use super::{DatasetRef, ModelRef, check_name};
use crate::callback::CallbackSpec;
use crate::metrics::GateCheck;
use crate::models::Resolver;
use crate::validation::{Errors, FieldError};

/// The body of POST /v1/trainings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub objective: Objective,
    /// The old task model, a frozen teacher (compatibility objective only).
    #[serde(default)]
    pub old: Option<ModelRef>,
    /// The new base model; with the compatibility objective its adapter is the new task
    /// adapter the compatibility adapter starts from.
    pub new: ModelRef,
    pub dataset: DatasetRef,
    /// Name of the adapter folder to write under MUSCLE_MODEL_DIR: a new folder, at most 3
    /// deep, each name at most 255 bytes and not beginning with `.`, inside no model or adapter
    /// folder, and not `trained` itself (stored as `a/b`: `./a//b/` is the same output), that no
    /// training still queued or running writes.
    pub output: String,
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// When given, the run ends by evaluating old vs new and old vs new+compatibility.
    #[serde(default)]
    pub evaluate: Option<EvaluateAfter>,
    /// Called (a signed POST of this training) when it ends; the server's allowed hosts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Plain cross-entropy: how task adapters are made.
    Task,
    /// The MUSCLE loss: distil from the old model where the adapter is wrong, else from the new.
    Compatibility,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mask {
    /// m = [argmax of the adapter != ground truth].
    #[default]
    Muscle,
    /// Distil from the old model only where the old model is right.
    OldCorrect,
    /// Plain knowledge distillation from the old model.
    KdOld,
    /// m = [p_adapter(y) < p_old(y)].
    Likelihood,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossTokens {
    /// Prompt and answer tokens, as the paper fine-tunes.
    All,
    /// Answer tokens only.
    #[default]
    Answer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Hyperparameters {
    pub rank: u32,
    pub alpha: f64,
    /// PEFT's `lora_dropout`, on each adapted layer's input. The masks are drawn from `seed`, the
    /// step and the layer: a run resumed from a checkpoint drops what the uninterrupted one would.
    pub dropout: f64,
    /// Module names or suffixes to adapt; every linear layer but the output head when absent.
    pub target_modules: Option<Vec<String>>,
    pub learning_rate: f64,
    pub epochs: u32,
    pub batch_size: u32,
    pub grad_accum: u32,
    pub warmup_steps: u32,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub temperature: f64,
    pub mask: Mask,
    /// Weight of the auxiliary cross-entropy: L' = (1 - w) * L + w * CE.
    pub ce_weight: f64,
    pub loss_tokens: LossTokens,
    pub validation_fraction: f64,
    pub max_seq_len: u32,
    pub seed: u64,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: None,
            learning_rate: 1e-4,
            epochs: 3,
            batch_size: 8,
            grad_accum: 1,
            warmup_steps: 50,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            temperature: 2.0,
            mask: Mask::Muscle,
            ce_weight: 0.0,
            loss_tokens: LossTokens::Answer,
            validation_fraction: 0.2,
            max_seq_len: 512,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateAfter {
    pub dataset: DatasetRef,
    pub task: TaskSpec,
    #[serde(default)]
    pub options: EvalOptions,
    #[serde(default)]
    pub gate: Vec<GateCheck>,
}

impl TrainingSpec {
    /// `output` in the one form it is stored and compared in (`./a//b/` is `a/b`).
    pub fn normalize(&mut self) {
        self.output = crate::train::output::normalized(&self.output);
    }

    pub fn check(&self, resolver: &Resolver) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        check_name(&self.name, &mut errors);
        match (self.objective, &self.old) {
            (Objective::Compatibility, None) => {
                errors.add("old", "the compatibility objective needs the old model as teacher")
            }
            (Objective::Compatibility, Some(old)) => old.check("old", resolver, &mut errors),
            (Objective::Task, Some(_)) => errors.add(
                "old",
                "the task objective trains on `new` alone; remove `old` or use the compatibility objective",
            ),
            (Objective::Task, None) => {}
        }
        self.new.check("new", resolver, &mut errors);
        if self.objective == Objective::Compatibility && self.new.adapter.is_none() {
            errors.add(
                "new.adapter",
                "the compatibility adapter starts from the new task adapter; name it",
            );
        }
        if let Err(message) = crate::train::output::check_new_output(resolver, &self.output) {
            errors.add("output", message);
        }
        check_hyperparameters(&self.hyperparameters, &mut errors);
        if let Some(evaluate) = &self.evaluate {
            check_task(&evaluate.task, "evaluate.task", &mut errors);
            check_gate(&evaluate.gate, "evaluate.gate", &mut errors);
        }
        errors.into_result(())
    }
}

fn check_hyperparameters(h: &Hyperparameters, errors: &mut Errors) {
    let mut require = |ok: bool, field: &str, message: &str| {
        if !ok {
            errors.add(format!("hyperparameters.{field}"), message);
        }
    };
    require(
        (1..=1024).contains(&h.rank),
        "rank",
        "must be from 1 to 1024",
    );
    require(
        h.alpha.is_finite() && h.alpha > 0.0,
        "alpha",
        "must be positive",
    );
    require(
        (0.0..1.0).contains(&h.dropout),
        "dropout",
        "must be at least 0 and below 1",
    );
    require(
        h.target_modules.as_ref().is_none_or(|m| !m.is_empty()),
        "target_modules",
        "must name at least one module, or be absent for every linear layer",
    );
    require(
        h.learning_rate.is_finite() && h.learning_rate > 0.0 && h.learning_rate < 1.0,
        "learning_rate",
        "must be above 0 and below 1",
    );
    require(
        (1..=1000).contains(&h.epochs),
        "epochs",
        "must be from 1 to 1000",
    );
    require(
        (1..=4096).contains(&h.batch_size),
        "batch_size",
        "must be from 1 to 4096",
    );
    require(
        (1..=1024).contains(&h.grad_accum),
        "grad_accum",
        "must be from 1 to 1024",
    );
    require(
        h.weight_decay.is_finite() && h.weight_decay >= 0.0,
        "weight_decay",
        "must be at least 0",
    );
    require(
        h.max_grad_norm.is_finite() && h.max_grad_norm >= 0.0,
        "max_grad_norm",
        "must be at least 0 (0 turns clipping off)",
    );
    require(
        h.temperature.is_finite() && h.temperature > 0.0,
        "temperature",
        "must be positive",
    );
    require(
        (0.0..=1.0).contains(&h.ce_weight),
        "ce_weight",
        "must be from 0 to 1",
    );
    require(
        h.validation_fraction > 0.0 && h.validation_fraction < 1.0,
        "validation_fraction",
        "must be above 0 and below 1",
    );
    require(
        (8..=32768).contains(&h.max_seq_len),
        "max_seq_len",
        "must be from 8 to 32768",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_body;

    #[test]
    fn compatibility_needs_both_teachers_and_a_fresh_output() {
        let root = tempfile::tempdir().unwrap();
        for name in ["base", "taken"] {
            crate::spec::write_test_model(&root.path().join(name));
        }
        let resolver = Resolver::server(root.path());
        let spec: TrainingSpec = parse_body(
            br#"{"objective": "compatibility", "new": {"model": "base"}, "dataset": "d",
                "output": "taken", "hyperparameters": {"rank": 0, "ce_weight": 2}}"#,
        )
        .unwrap();
        let fields: Vec<String> = spec
            .check(&resolver)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "old",
                "new.adapter",
                "output",
                "hyperparameters.rank",
                "hyperparameters.ce_weight"
            ]
        );

        let spec: TrainingSpec = parse_body(
            br#"{"objective": "task", "new": {"model": "base"}, "dataset": "d", "output": "new-task"}"#,
        )
        .unwrap();
        spec.check(&resolver).unwrap();
        assert_eq!(spec.hyperparameters, Hyperparameters::default());
    }
}
