//! The Training/Finalize shard: the best epoch's adapter into MUSCLE_MODEL_DIR, the result, and
//! with `evaluate` two evaluation jobs (old vs new, old vs new + the trained adapter).

use std::path::Path;

use super::result::{EvaluationPair, QueuedEvaluation, QueuedEvaluations, TrainingResult};
use sha2::{Digest, Sha256};

use super::checkpoint;
use super::job::StoredTraining;
use super::output::output_folder;
use super::peft::{CONFIG, WEIGHTS};
use super::work::TrainRuntime;
use crate::evaluation::evaluation_job;
use crate::spec::{DatasetRef, EvaluationSpec, ModelRef, Objective};
use crate::store::{Completion, Document, Idempotency, Store};
use crate::worker::{ShardContext, ShardError, ShardResult};

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

/// Copies the adapter folder `from` to `to` through a hidden `.JOBID.partial` folder beside it
/// (removed again when a step fails), refusing to overwrite anything but the same adapter (an
/// earlier attempt of this shard that wrote it and then crashed).
pub fn install(from: &Path, to: &Path, job_id: &str) -> Result<(), String> {
    if to.symlink_metadata().is_ok() {
        if same_file(&from.join(WEIGHTS), &to.join(WEIGHTS))
            && same_file(&from.join(CONFIG), &to.join(CONFIG))
        {
            return Ok(());
        }
        return Err(format!(
            "{} already exists; refusing to overwrite it",
            to.display()
        ));
    }
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(".{job_id}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    let installed = copy_adapter(from, &tmp).and_then(|()| {
        std::fs::rename(&tmp, to)
            .map_err(|e| format!("moving the adapter to {}: {e}", to.display()))
    });
    if installed.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    installed
}

fn copy_adapter(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    for file in [CONFIG, WEIGHTS] {
        std::fs::copy(from.join(file), to.join(file))
            .map_err(|e| format!("copying {}: {e}", from.join(file).display()))?;
    }
    Ok(())
}

/// The evaluations a finished run asks for: (pair, old side, new side).
pub fn evaluation_pairs(job: &StoredTraining) -> Vec<(EvaluationPair, ModelRef, ModelRef)> {
    let spec = &job.spec;
    let trained = ModelRef {
        model: spec.new.model.clone(),
        adapter: Some(spec.output.clone()),
        dtype: spec.new.dtype,
    };
    match (spec.objective, &spec.old) {
        (Objective::Compatibility, Some(old)) => vec![
            (EvaluationPair::OldVsNew, old.clone(), spec.new.clone()),
            (EvaluationPair::OldVsCompat, old.clone(), trained),
        ],
        _ => vec![(EvaluationPair::BeforeVsAfter, spec.new.clone(), trained)],
    }
}

/// Queues the evaluations (idempotently: a re-run of this shard finds the same jobs).
pub async fn submit_evaluations(
    runtime: &TrainRuntime,
    store: &Store,
    job_id: &str,
    job: &StoredTraining,
) -> Result<Option<QueuedEvaluations>, ShardError> {
    let Some(evaluate) = &job.spec.evaluate else {
        return Ok(None);
    };
    let DatasetRef::Id(dataset_id) = &evaluate.dataset else {
        return Err(ShardError::fatal(
            "evaluate.dataset names no uploaded dataset",
        ));
    };
    let dataset = store.get_dataset(dataset_id).await?.ok_or_else(|| {
        ShardError::fatal(format!("evaluate.dataset {dataset_id:?} does not exist"))
    })?;
    let label = job.spec.name.clone().unwrap_or_else(|| job_id.to_string());
    let mut out = QueuedEvaluations::new();
    for (pair, old, new) in evaluation_pairs(job) {
        let spec = EvaluationSpec {
            name: Some(format!("{label}: {}", pair.label())),
            old: old.into(),
            new: new.into(),
            dataset: Some(evaluate.dataset.clone()),
            task: evaluate.task.clone(),
            options: evaluate.options.clone(),
            gate: evaluate.gate.clone(),
            callback: None,
        };
        let mut new_job = evaluation_job(&spec, dataset.rows, runtime.planning);
        new_job.idempotency = Some(Idempotency {
            key: format!("training:{job_id}:{}", pair.key()),
            request_hash: hex::encode(Sha256::digest(new_job.spec.text().as_bytes())),
        });
        let created = store.create_job(new_job).await?;
        out.insert(
            pair,
            QueuedEvaluation {
                id: created.value.id,
            },
        );
    }
    Ok(Some(out))
}

pub async fn finalize(
    runtime: &TrainRuntime,
    ctx: &ShardContext,
    job: &StoredTraining,
) -> ShardResult {
    let finished = write_adapter(runtime, ctx, job).await;
    if let Err(ShardError::Failed { retry: false, .. }) = &finished {
        // The job fails: nothing will resume from its checkpoints.
        checkpoint::remove(&runtime.data_dir, &ctx.claim.fence.job_id);
    }
    finished
}

async fn write_adapter(
    runtime: &TrainRuntime,
    ctx: &ShardContext,
    job: &StoredTraining,
) -> ShardResult {
    let job_id = &ctx.claim.fence.job_id;
    let root = checkpoint::job_dir(&runtime.data_dir, job_id);
    let last = checkpoint::epoch_dir(&root, job.spec.hyperparameters.epochs);
    let state = checkpoint::read_state(&last).map_err(|e| {
        ShardError::fatal(format!(
            "the final epoch checkpoint cannot be read ({e}); is MUSCLE_DATA_DIR shared by every worker?"
        ))
    })?;
    let best = checkpoint::best_adapter(&root, &state.run)
        .ok_or_else(|| ShardError::fatal("the final checkpoint names no best epoch"))?;
    // Checked again: the folders on the way may have changed since the submission.
    let output = output_folder(&runtime.resolver, &job.spec.output)
        .map_err(|e| ShardError::fatal(format!("output: {e}")))?;
    install(&best, &output, job_id).map_err(ShardError::fatal)?;
    let evaluations = submit_evaluations(runtime, ctx.store.as_ref(), job_id, job).await?;
    let result = TrainingResult {
        history: state.run.history,
        best_epoch: state.run.best_epoch,
        best_validation_ce: state.run.best_validation_ce,
        steps: state.run.step,
        resumed_from_epochs: state.run.resumed_from,
        init: state.init,
        adapter: job.spec.output.clone(),
        evaluations,
    };
    checkpoint::remove(&runtime.data_dir, job_id);
    Ok(Completion {
        result: Some(Document::of(&result)),
        ..Completion::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_install_leaves_no_partial_folder() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("checkpoint");
        std::fs::create_dir(&from).unwrap();
        // The weights are missing: the copy fails after the config was copied.
        std::fs::write(from.join(CONFIG), "{}").unwrap();
        let to = dir.path().join("models/trained/new");
        let error = install(&from, &to, "job-1").unwrap_err();
        assert!(error.contains(WEIGHTS), "{error}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("models/trained"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!to.exists());

        std::fs::write(from.join(WEIGHTS), "weights").unwrap();
        install(&from, &to, "job-1").unwrap();
        assert_eq!(std::fs::read(to.join(WEIGHTS)).unwrap(), b"weights");
        // The same adapter again (a re-run of the shard) is fine; another one is refused.
        install(&from, &to, "job-1").unwrap();
        std::fs::write(from.join(WEIGHTS), "other").unwrap();
        assert!(
            install(&from, &to, "job-2")
                .unwrap_err()
                .contains("already exists")
        );
    }
}
