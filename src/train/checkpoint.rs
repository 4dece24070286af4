//! Epoch checkpoints under `<data dir>/checkpoints/<job id>/epoch-<n>/`: the adapter as a PEFT
//! folder, the optimizer's moments and the run state (history, best epoch). Written to a
//! temporary folder and renamed, so a folder that exists is complete. Every host that may run
//! the shard must see the same data dir (shared storage) for a reclaimed shard to resume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::peft::write_adapter;
use super::trainer::{RunState, Trainer};
use crate::domain::{JobKind, JobStatus};
use crate::store::Store;

pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const STATE: &str = "state.json";
pub const ADAPTER: &str = "adapter";

pub fn job_dir(data_dir: &Path, job_id: &str) -> PathBuf {
    data_dir.join("checkpoints").join(job_id)
}

/// Removes the checkpoints of a job that will not run again.
pub fn remove(data_dir: &Path, job_id: &str) {
    let dir = job_dir(data_dir, job_id);
    if let Err(error) = std::fs::remove_dir_all(&dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, dir = %dir.display(), "could not remove the checkpoints");
    }
}

/// Removes the checkpoints of trainings that are over or gone: those left by a failure on the
/// last attempt, which no shard code sees, or by a host that went away.
pub async fn sweep(data_dir: &Path, store: &Store) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("checkpoints")) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(job_id) = entry.file_name().into_string() else {
            continue;
        };
        match store.get_job(JobKind::Training, &job_id).await {
            Ok(Some(job)) if matches!(job.status, JobStatus::Queued | JobStatus::Running) => {}
            Ok(_) => remove(data_dir, &job_id),
            Err(error) => {
                tracing::warn!(%error, "could not read a job; checkpoints kept for now");
                return;
            }
        }
    }
}

pub fn epoch_dir(root: &Path, epoch: u32) -> PathBuf {
    root.join(format!("epoch-{epoch}"))
}

/// An epoch checkpoint's `state.json`: where the run stands, the optimizer's step count and how
/// the adapter was initialised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    #[serde(flatten)]
    pub run: RunState,
    pub optimizer_step: u64,
    pub init: String,
}

/// The adapter folder of the best epoch recorded in `state`.
pub fn best_adapter(root: &Path, state: &RunState) -> Option<PathBuf> {
    Some(epoch_dir(root, state.best_epoch?).join(ADAPTER))
}

/// Saves the state after the epoch just finished and prunes epochs that are neither the latest
/// nor the best; returns the folder.
pub fn save(root: &Path, trainer: &Trainer, base_model: &str) -> Result<PathBuf, String> {
    let epoch = trainer.state.epochs_done;
    let dir = epoch_dir(root, epoch);
    let tmp = root.join(format!("epoch-{epoch}.tmp"));
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| format!("clearing {}: {e}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    write_adapter(
        &tmp.join(ADAPTER),
        &trainer.lora,
        &trainer.lora.tensors(),
        base_model,
    )?;
    super::peft::write_safetensors(
        &trainer.optimizer.state(&trainer.keys),
        &tmp.join(OPTIMIZER),
    )?;
    let state = CheckpointState {
        run: trainer.state.clone(),
        optimizer_step: trainer.optimizer.step,
        init: trainer.lora.init.clone(),
    };
    std::fs::write(
        tmp.join(STATE),
        serde_json::to_vec_pretty(&state).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("writing {}: {e}", tmp.join(STATE).display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("replacing {}: {e}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    let keep = [Some(epoch), trainer.state.best_epoch];
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(n) = name
                .strip_prefix("epoch-")
                .and_then(|n| n.parse::<u32>().ok())
                && !keep.contains(&Some(n))
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(dir)
}

pub fn read_state(dir: &Path) -> Result<CheckpointState, String> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn load_tensors(
    path: &Path,
    trainer: &Trainer,
) -> Result<HashMap<String, candle_core::Tensor>, String> {
    candle_core::safetensors::load(path, &trainer.student.device)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Puts the trainer back where the checkpoint in `dir` left it.
pub fn restore(root: &Path, dir: &Path, trainer: &mut Trainer) -> Result<(), String> {
    let state = read_state(dir)?;
    let adapter = load_tensors(&dir.join(ADAPTER).join(super::peft::WEIGHTS), trainer)?;
    trainer.lora.load(&adapter)?;
    let optimizer = load_tensors(&dir.join(OPTIMIZER), trainer)?;
    let keys = trainer.keys.clone();
    trainer
        .optimizer
        .restore(&keys, &optimizer, state.optimizer_step)?;
    trainer.state = state.run;
    trainer.best_tensors = match best_adapter(root, &trainer.state) {
        Some(best) => Some(load_tensors(&best.join(super::peft::WEIGHTS), trainer)?),
        None => None,
    };
    Ok(())
}
