//! The one place an evaluation job is planned: its stored spec, and its shards of
//! `options.shard_size` (else the server's MUSCLE_SHARD_SIZE) instances plus the report step.

/// Most work shards of one job: a smaller shard size on a large dataset is raised to fit (a
/// million one-instance shards would be one huge insert and a queue scan per claim).
pub const MAX_SHARDS: i64 = 10_000;

use std::num::NonZeroU32;

use crate::callback::CallbackSpec;
use crate::domain::{JobKind, JobPlanning, plan_shards};
use crate::spec::EvaluationSpec;
use crate::store::{Document, NewJob};

pub fn evaluation_job(spec: &EvaluationSpec, total: i64, planning: JobPlanning) -> NewJob {
    let asked = spec
        .options
        .shard_size
        .and_then(NonZeroU32::new)
        .unwrap_or(planning.shard_size);
    let least = u32::try_from((total + MAX_SHARDS - 1) / MAX_SHARDS)
        .ok()
        .and_then(NonZeroU32::new);
    let shard_size = least.map_or(asked, |least| asked.max(least));
    NewJob {
        kind: JobKind::Evaluation,
        name: spec.name.clone(),
        spec: Document::of(spec),
        total,
        shards: plan_shards(total, shard_size),
        max_attempts: planning.max_attempts,
        idempotency: None,
        callback: spec.callback.as_ref().map(CallbackSpec::to_new),
        output: None,
    }
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
        let planning = JobPlanning {
            shard_size: crate::domain::DEFAULT_SHARD_SIZE,
            max_attempts: NonZeroU32::new(3).unwrap(),
        };
        let job = evaluation_job(&spec, 1_000_000, planning);
        // 10,000 work shards of 100 and the report step.
        assert_eq!(job.shards.len(), 10_001);
        assert_eq!(job.shards[0].end - job.shards[0].start, 100);
        spec.options.shard_size = None;
        assert_eq!(evaluation_job(&spec, 1_200, planning).shards.len(), 4);
    }
}
