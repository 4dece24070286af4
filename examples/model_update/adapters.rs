//! LoRA trainings through the service's own `Trainer`: task adapters (cross-entropy),
//! the compatibility adapter (MUSCLE loss) and the cross-entropy control.

use std::path::{Path, PathBuf};
use std::time::Instant;

use muscle::dataset::Item;
use muscle::engine::DeviceSpec;
use muscle::spec::{Hyperparameters, Objective, TrainingSpec};
use muscle::train::peft::write_adapter;
use muscle::train::{NoHooks, TrainInputs, Trainer};
use serde_json::json;

pub struct Job<'a> {
    pub objective: Objective,
    pub base: &'a Path,
    /// The adapter training starts from (the new task adapter for compat and control).
    pub start: Option<&'a Path>,
    /// The old task model (compatibility only).
    pub old: Option<(&'a Path, &'a Path)>,
    pub hyperparameters: Hyperparameters,
    /// Keep the last epoch (equal steps) instead of the lowest validation cross-entropy.
    pub last_epoch: bool,
    pub base_name: &'a str,
}

pub fn train(job: &Job<'_>, rows: &[Item], out: &Path) -> Result<(), String> {
    let t0 = Instant::now();
    let spec: TrainingSpec = serde_json::from_value(json!({
        "objective": job.objective,
        "new": {"model": job.base_name},
        "dataset": {"path": "train.jsonl"},
        "output": "unused",
        "hyperparameters": job.hyperparameters,
    }))
    .map_err(|e| e.to_string())?;
    let inputs = TrainInputs {
        spec,
        new_base: job.base.to_path_buf(),
        new_adapter: job.start.map(Path::to_path_buf),
        old: job
            .old
            .map(|(b, a)| (b.to_path_buf(), Some(a.to_path_buf()))),
        device: DeviceSpec::Cpu,
        rows: rows.to_vec(),
    };
    let mut trainer = Trainer::new(inputs).map_err(|e| e.to_string())?;
    trainer.run(&mut NoHooks).map_err(|e| e.to_string())?;
    let tensors = if job.last_epoch {
        trainer.lora.tensors()
    } else {
        trainer.best_tensors.clone().ok_or("no epoch finished")?
    };
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| e.to_string())?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    write_adapter(out, &trainer.lora, &tensors, job.base_name)?;
    let val: Vec<String> = trainer
        .state
        .history
        .iter()
        .filter_map(|h| match h {
            muscle::train::HistoryEntry::Validation(end) => {
                Some(format!("{:.3}", end.validation_ce))
            }
            muscle::train::HistoryEntry::Train(_) => None,
        })
        .collect();
    eprintln!(
        "  {} ({} steps, validation ce per epoch [{}]) in {:.0} s",
        out.display(),
        trainer.state.step,
        val.join(", "),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A scratch folder for the adapters of seeds other than the shipped one.
pub fn scratch(root: &Path, seed: u64, name: &str) -> PathBuf {
    root.join(format!("seed-{seed}")).join(name)
}
