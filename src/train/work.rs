//! The Training/Work shard: the whole run on a thread pool of its own (`engine::threads`),
//! progress (optimizer steps) and epoch checkpoints reported to the queue, stopping between
//! steps when asked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::checkpoint;
use super::job::StoredTraining;
use super::trainer::{Hooks, TrainError, TrainInputs, Trainer};
use crate::engine::DeviceSpec;
use crate::models::{FolderKind, Resolver};
use crate::spec::{DatasetRef, ModelRef};
use crate::store::Document;
use crate::worker::{Interruption, ShardContext, ShardError};

/// What a worker host needs to run trainings.
#[derive(Clone)]
pub struct TrainRuntime {
    pub resolver: Resolver,
    pub device: DeviceSpec,
    /// MUSCLE_DATA_DIR: epoch checkpoints go under `checkpoints/<job id>/`.
    pub data_dir: PathBuf,
    /// How the evaluations a training queues are planned.
    pub planning: crate::domain::JobPlanning,
}

fn resolve(
    resolver: &Resolver,
    name: &str,
    kind: FolderKind,
    field: &str,
) -> Result<PathBuf, ShardError> {
    resolver
        .resolve(name, kind)
        .map_err(|e| ShardError::fatal(format!("{field}: {e}")))
}

fn model_paths(
    resolver: &Resolver,
    model: &ModelRef,
    field: &str,
) -> Result<(PathBuf, Option<PathBuf>), ShardError> {
    let base = resolve(
        resolver,
        &model.model,
        FolderKind::Model,
        &format!("{field}.model"),
    )?;
    let adapter = model
        .adapter
        .as_deref()
        .map(|a| {
            resolve(
                resolver,
                a,
                FolderKind::Adapter,
                &format!("{field}.adapter"),
            )
        })
        .transpose()?;
    Ok((base, adapter))
}

/// The trainer's inputs: folders resolved on this host, rows read from the store.
pub async fn inputs(
    runtime: &TrainRuntime,
    ctx: &ShardContext,
    job: &StoredTraining,
) -> Result<TrainInputs, ShardError> {
    let spec = job.spec.clone();
    let DatasetRef::Id(dataset) = &spec.dataset else {
        return Err(ShardError::fatal("the job names no uploaded dataset"));
    };
    let rows = ctx.store.dataset_rows(dataset, 0, job.dataset_rows).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            row.item()
                .map_err(|e| ShardError::fatal(format!("dataset row {}: {e}", row.idx + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (new_base, new_adapter) = model_paths(&runtime.resolver, &spec.new, "new")?;
    let old = spec
        .old
        .as_ref()
        .map(|old| model_paths(&runtime.resolver, old, "old"))
        .transpose()?;
    Ok(TrainInputs {
        spec,
        new_base,
        new_adapter,
        old,
        device: runtime.device,
        rows,
    })
}

enum Event {
    Step(u64),
    Epoch(EpochCheckpoint),
}

/// What the queue keeps of the latest epoch checkpoint: a reclaimed shard resumes from `path`.
#[derive(Debug, Serialize, Deserialize)]
struct EpochCheckpoint {
    epoch: u32,
    step: u64,
    path: PathBuf,
}

struct ShardHooks {
    stop: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<Event>,
    root: PathBuf,
    base_model: String,
}

impl Hooks for ShardHooks {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn on_step(&mut self, step: u64) {
        let _ = self.events.send(Event::Step(step));
    }

    fn on_epoch(&mut self, trainer: &Trainer) -> Result<(), TrainError> {
        let dir = checkpoint::save(&self.root, trainer, &self.base_model)
            .map_err(|e| TrainError::Runtime(format!("saving the epoch checkpoint: {e}")))?;
        let _ = self.events.send(Event::Epoch(EpochCheckpoint {
            epoch: trainer.state.epochs_done,
            step: trainer.state.step,
            path: dir,
        }));
        Ok(())
    }
}

/// Runs (or resumes) the training of the shard's job.
pub async fn run_work(
    runtime: &TrainRuntime,
    ctx: &ShardContext,
    job: &StoredTraining,
) -> Result<(), ShardError> {
    checkpoint::sweep(&runtime.data_dir, ctx.store.as_ref()).await;
    let trained = train_job(runtime, ctx, job).await;
    if let Err(ShardError::Failed { retry: false, .. }) = &trained {
        // The job fails: nothing will resume from its checkpoints.
        checkpoint::remove(&runtime.data_dir, &ctx.claim.fence.job_id);
    }
    trained
}

async fn train_job(
    runtime: &TrainRuntime,
    ctx: &ShardContext,
    job: &StoredTraining,
) -> Result<(), ShardError> {
    let inputs = inputs(runtime, ctx, job).await?;
    let root = checkpoint::job_dir(&runtime.data_dir, &ctx.claim.fence.job_id);
    // A checkpoint that no longer reads is not resumed from: the run starts again.
    let resume = ctx
        .claim
        .checkpoint
        .as_ref()
        .and_then(|c| c.read::<EpochCheckpoint>().ok())
        .map(|c| c.path);
    let stop = Arc::new(AtomicBool::new(false));
    let (events, mut received) = mpsc::unbounded_channel();
    let hooks = ShardHooks {
        stop: stop.clone(),
        events,
        root: root.clone(),
        base_model: job.spec.new.model.clone(),
    };
    let worker = tokio::task::spawn_blocking(move || {
        crate::engine::threads::run_on_own_pool("muscle-train", move || {
            train(inputs, hooks, resume, &root)
        })
    });
    let mut store_error = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            event = received.recv() => match event {
                Some(Event::Step(step)) => ctx.set_done(step as i64),
                Some(Event::Epoch(checkpoint)) => {
                    if let Err(error) = ctx.save_checkpoint(&Document::of(&checkpoint)).await {
                        stop.store(true, Ordering::SeqCst);
                        store_error.get_or_insert(error);
                    }
                }
                None => break,
            },
            _ = ctx.stop.cancelled(), if !stopping => {
                stopping = true;
                stop.store(true, Ordering::SeqCst);
            }
        }
    }
    let outcome = worker
        .await
        .map_err(|e| ShardError::retryable(format!("the training thread failed: {e}")))?;
    if let Err(ShardError::Interrupted(Interruption::Cancelled)) = ctx.check() {
        // Nothing will resume a cancelled job: its checkpoints go.
        checkpoint::remove(&runtime.data_dir, &ctx.claim.fence.job_id);
    }
    if let Some(error) = store_error {
        return Err(error);
    }
    match outcome {
        Ok(()) => Ok(()),
        Err(TrainError::Stopped) => {
            ctx.check()?;
            Err(ShardError::Interrupted(Interruption::Shutdown))
        }
        Err(TrainError::Invalid(message)) => Err(ShardError::fatal(message)),
        Err(TrainError::Runtime(message)) => {
            ctx.check()?;
            Err(ShardError::retryable(message))
        }
    }
}

/// Builds the trainer (resuming from `resume` when it can be read) and runs it.
fn train(
    inputs: TrainInputs,
    mut hooks: ShardHooks,
    resume: Option<PathBuf>,
    root: &Path,
) -> Result<(), TrainError> {
    let mut trainer = Trainer::new(inputs)?;
    if let Some(dir) = resume {
        match checkpoint::restore(root, &dir, &mut trainer) {
            Ok(()) => {
                let epoch = trainer.state.epochs_done;
                tracing::info!(epoch, "resuming from the epoch checkpoint");
                trainer.state.resumed_from.push(epoch);
            }
            Err(error) => tracing::warn!(
                %error,
                "the epoch checkpoint cannot be read (is MUSCLE_DATA_DIR shared by every \
                 worker?); training from the start"
            ),
        }
    }
    hooks.on_step(trainer.state.step);
    let started = std::time::Instant::now();
    trainer.run(&mut hooks)?;
    tracing::info!(
        tokens = trainer.tokens_seen,
        seconds = started.elapsed().as_secs_f64(),
        "training done"
    );
    Ok(())
}
