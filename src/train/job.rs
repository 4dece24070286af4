//! What a training job is in the queue: its stored spec, step count and shards, and the checks
//! made before it is queued.

use crate::callback::CallbackSpec;
use crate::domain::{JobKind, JobPlanning, NewShard, ShardKind};
use crate::spec::{Hyperparameters, TrainingSpec};
use crate::store::{Document, NewJob};
use serde::{Deserialize, Serialize};

/// A training as the queue stores it: its spec and the dataset's size it was planned on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTraining {
    pub spec: TrainingSpec,
    pub dataset_rows: i64,
    pub steps_per_epoch: i64,
}

impl StoredTraining {
    pub fn new(spec: TrainingSpec, rows: i64) -> Self {
        Self {
            steps_per_epoch: steps_per_epoch(rows, &spec.hyperparameters),
            spec,
            dataset_rows: rows,
        }
    }
}

/// Optimiser steps per epoch for `rows` dataset rows.
pub fn steps_per_epoch(rows: i64, h: &Hyperparameters) -> i64 {
    let validation =
        crate::train::split::validation_count(rows.max(0) as usize, h.validation_fraction) as i64;
    let train = (rows - validation).max(1);
    let per_step = i64::from(h.batch_size) * i64::from(h.grad_accum);
    (train + per_step - 1) / per_step
}

/// The job of a training: its total optimizer steps, one Work shard for the whole run and a
/// Finalize shard.
pub fn training_job(stored: &StoredTraining, planning: JobPlanning) -> NewJob {
    let spec = &stored.spec;
    let total = stored.steps_per_epoch * i64::from(spec.hyperparameters.epochs);
    let shards = vec![
        NewShard {
            kind: ShardKind::Work,
            start: 0,
            end: total,
        },
        NewShard {
            kind: ShardKind::Finalize,
            start: 0,
            end: total,
        },
    ];
    NewJob {
        kind: JobKind::Training,
        name: spec.name.clone(),
        spec: Document::of(stored),
        total,
        shards,
        max_attempts: planning.max_attempts,
        idempotency: None,
        callback: spec.callback.as_ref().map(CallbackSpec::to_new),
        // Refused by a unique index while another training queued or running writes it.
        output: Some(spec.output.clone()),
    }
}

/// Refuses an old/new pair the compatibility loss cannot compare (different tokenizers or
/// vocabularies), as a field error on `old`.
pub fn check_vocabularies(
    spec: &TrainingSpec,
    resolver: &crate::models::Resolver,
) -> Option<crate::validation::FieldError> {
    use crate::models::FolderKind;
    let old = spec.old.as_ref()?;
    if spec.objective != crate::spec::Objective::Compatibility {
        return None;
    }
    let old = resolver.resolve(&old.model, FolderKind::Model).ok()?;
    let new = resolver.resolve(&spec.new.model, FolderKind::Model).ok()?;
    crate::train::pair::check_same_vocabulary(&old, &new)
        .err()
        .map(|message| crate::validation::FieldError::field("old.model", message))
}
