//! What a training job is in the queue: its stored spec, step count and shards, and the checks
//! made before it is queued.

use serde_json::Value;

use crate::spec::{Hyperparameters, TrainingSpec};
use crate::store::{NewShard, ShardKind};

/// Optimiser steps per epoch for `rows` dataset rows.
pub fn steps_per_epoch(rows: i64, h: &Hyperparameters) -> i64 {
    let validation =
        crate::train::split::validation_count(rows.max(0) as usize, h.validation_fraction) as i64;
    let train = (rows - validation).max(1);
    let per_step = i64::from(h.batch_size) * i64::from(h.grad_accum);
    (train + per_step - 1) / per_step
}

/// The stored job spec, total optimizer steps and shards of a training over `rows` rows: one
/// Work shard for the whole run and a Finalize shard.
pub fn training_job(spec: &TrainingSpec, rows: i64) -> (Value, i64, Vec<NewShard>) {
    let per_epoch = steps_per_epoch(rows, &spec.hyperparameters);
    let total = per_epoch * i64::from(spec.hyperparameters.epochs);
    let stored = serde_json::json!({
        "spec": spec,
        "dataset_rows": rows,
        "steps_per_epoch": per_epoch,
    });
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
    (stored, total, shards)
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
