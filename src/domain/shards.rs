//! How a job's instances are split into shards for the queue.

use std::num::NonZeroU32;

use super::ShardKind;

/// Instances per work shard unless MUSCLE_SHARD_SIZE or an evaluation's `options.shard_size`
/// says otherwise.
pub const DEFAULT_SHARD_SIZE: NonZeroU32 = NonZeroU32::new(500).unwrap();

/// How new jobs are split and retried (MUSCLE_SHARD_SIZE, MUSCLE_MAX_ATTEMPTS): read once from
/// the settings and shared by the API, the CLI and the workers that queue a training's
/// evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobPlanning {
    pub shard_size: NonZeroU32,
    pub max_attempts: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct NewShard {
    pub kind: ShardKind,
    pub start: i64,
    pub end: i64,
}

/// Splits `0..total` into work shards of `shard_size` instances, then a finalize shard.
pub fn plan_shards(total: i64, shard_size: NonZeroU32) -> Vec<NewShard> {
    let size = i64::from(shard_size.get());
    let mut shards: Vec<NewShard> = (0..total)
        .step_by(size as usize)
        .map(|start| NewShard {
            kind: ShardKind::Work,
            start,
            end: (start + size).min(total),
        })
        .collect();
    shards.push(NewShard {
        kind: ShardKind::Finalize,
        start: 0,
        end: total,
    });
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_HUNDRED: NonZeroU32 = DEFAULT_SHARD_SIZE;

    #[test]
    fn shards_cover_every_instance_once_then_finalize() {
        let shards = plan_shards(1001, FIVE_HUNDRED);
        let ranges: Vec<_> = shards.iter().map(|s| (s.kind, s.start, s.end)).collect();
        assert_eq!(
            ranges,
            vec![
                (ShardKind::Work, 0, 500),
                (ShardKind::Work, 500, 1000),
                (ShardKind::Work, 1000, 1001),
                (ShardKind::Finalize, 0, 1001),
            ]
        );
    }

    #[test]
    fn an_empty_job_has_only_the_finalize_shard() {
        let shards = plan_shards(0, FIVE_HUNDRED);
        assert_eq!(shards.len(), 1);
        assert_eq!(shards[0].kind, ShardKind::Finalize);
    }
}
