//! The one place an evaluation job is planned: its stored spec, and its shards of
//! `options.shard_size` (else the server's MUSCLE_SHARD_SIZE) instances plus the report step.

use crate::spec::EvaluationSpec;
use crate::store::{JobKind, NewJob, plan_shards};

pub fn evaluation_job(
    spec: &EvaluationSpec,
    total: i64,
    default_shard_size: u32,
    max_attempts: u32,
) -> Result<NewJob, serde_json::Error> {
    let shard_size = spec.options.shard_size.unwrap_or(default_shard_size).max(1);
    Ok(NewJob {
        kind: JobKind::Evaluation,
        name: spec.name.clone(),
        spec: serde_json::to_value(spec)?,
        total,
        shards: plan_shards(total, i64::from(shard_size)),
        max_attempts: max_attempts.max(1),
        idempotency: None,
        callback: None,
    })
}
