//! The one place an evaluation job is planned: its stored spec, and its shards of
//! `options.shard_size` (else the server's MUSCLE_SHARD_SIZE) instances plus the report step.

/// Most work shards of one job: a smaller shard size on a large dataset is raised to fit (a
/// million one-instance shards would be one huge insert and a queue scan per claim).
pub const MAX_SHARDS: i64 = 10_000;

use crate::spec::EvaluationSpec;
use crate::store::{JobKind, NewJob, plan_shards};

pub fn evaluation_job(
    spec: &EvaluationSpec,
    total: i64,
    default_shard_size: u32,
    max_attempts: u32,
) -> Result<NewJob, serde_json::Error> {
    let asked = i64::from(spec.options.shard_size.unwrap_or(default_shard_size).max(1));
    let shard_size = asked.max((total + MAX_SHARDS - 1) / MAX_SHARDS);
    Ok(NewJob {
        kind: JobKind::Evaluation,
        name: spec.name.clone(),
        spec: serde_json::to_value(spec)?,
        total,
        shards: plan_shards(total, shard_size),
        max_attempts: max_attempts.max(1),
        idempotency: None,
        callback: None,
        output: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_body;

    #[test]
    fn a_tiny_shard_size_on_a_large_dataset_is_raised_to_the_shard_cap() {
        let mut spec: EvaluationSpec = parse_body(
            br#"{"old": {"model": "a"}, "new": {"model": "b"}, "dataset": "d",
                "task": {"type": "multiple_choice"}, "options": {"shard_size": 1}}"#,
        )
        .unwrap();
        let job = evaluation_job(&spec, 1_000_000, 500, 3).unwrap();
        // 10,000 work shards of 100 and the report step.
        assert_eq!(job.shards.len(), 10_001);
        assert_eq!(job.shards[0].end - job.shards[0].start, 100);
        spec.options.shard_size = None;
        assert_eq!(
            evaluation_job(&spec, 1_200, 500, 3).unwrap().shards.len(),
            4
        );
    }
}
