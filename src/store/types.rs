use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::{RawValue, to_raw_value};

use crate::dataset::Item;
use crate::lmeval::RecordedInstance;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    MultipleChoice,
    Generation,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MultipleChoice => "multiple_choice",
            Self::Generation => "generation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "multiple_choice" => Some(Self::MultipleChoice),
            "generation" => Some(Self::Generation),
            _ => None,
        }
    }
}

/// A recorded run to store: one model's results on one task.
pub struct NewPredictions {
    pub name: String,
    pub format: String,
    pub task: Option<String>,
    pub kind: DatasetKind,
    pub filters: Vec<String>,
    pub metrics: Vec<String>,
    pub model: Option<String>,
    pub sha256: String,
}

/// A stored recorded run (POST /v1/predictions).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Predictions {
    pub id: String,
    pub name: String,
    /// `lm-eval`: an lm-evaluation-harness samples file.
    pub format: String,
    /// The harness task, when given at upload.
    pub task: Option<String>,
    pub kind: DatasetKind,
    /// Lines stored: one per (document, filter).
    pub rows: i64,
    /// The filters present (`none` for multiple choice; gsm8k has `strict-match` and
    /// `flexible-extract`).
    pub filters: Vec<String>,
    /// Per-sample metrics recorded.
    pub metrics: Vec<String>,
    /// The model as recorded, when given at upload.
    pub model: Option<String>,
    pub sha256: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// One stored line of a recorded run, its instance held as JSON text (see [`DatasetRow`]).
#[derive(Debug, Clone)]
pub struct PredictionRow {
    pub idx: i64,
    pub doc_id: String,
    pub filter: String,
    body: Box<RawValue>,
}

impl PredictionRow {
    pub fn new(idx: i64, instance: &RecordedInstance) -> Self {
        Self {
            idx,
            doc_id: instance.doc_id.clone(),
            filter: instance.filter.clone(),
            body: to_raw_value(instance).expect("a recorded instance has only string keys"),
        }
    }

    pub fn stored(
        idx: i64,
        doc_id: String,
        filter: String,
        body: String,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            idx,
            doc_id,
            filter,
            body: RawValue::from_string(body)?,
        })
    }

    pub fn instance(&self) -> serde_json::Result<RecordedInstance> {
        serde_json::from_str(self.body.get())
    }

    pub fn json(&self) -> &str {
        self.body.get()
    }
}

pub struct NewDataset {
    pub name: String,
    pub kind: DatasetKind,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Dataset {
    pub id: String,
    pub name: String,
    pub rows: i64,
    pub kind: DatasetKind,
    pub sha256: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// One validated dataset line. Its item is held as normalised JSON text, the compact form
/// that lets a million-row upload be validated and stored without a tree of values per row.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    pub idx: i64,
    pub id: String,
    body: Box<RawValue>,
}

impl PartialEq for DatasetRow {
    fn eq(&self, other: &Self) -> bool {
        (self.idx, &self.id, self.json()) == (other.idx, &other.id, other.json())
    }
}

impl DatasetRow {
    pub fn new(idx: i64, id: String, item: &Item) -> Self {
        Self {
            idx,
            id,
            body: to_raw_value(item).expect("an item has only string keys"),
        }
    }

    /// A row read back from the store, its text checked to be JSON.
    pub fn stored(idx: i64, id: String, body: String) -> serde_json::Result<Self> {
        Ok(Self {
            idx,
            id,
            body: RawValue::from_string(body)?,
        })
    }

    pub fn item(&self) -> serde_json::Result<Item> {
        serde_json::from_str(self.body.get())
    }

    pub fn json(&self) -> &str {
        self.body.get()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Evaluation,
    Training,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evaluation => "evaluation",
            Self::Training => "training",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "evaluation" => Some(Self::Evaluation),
            "training" => Some(Self::Training),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a shard does: `work` shards cover a range of instances; the one `finalize` shard of a
/// job becomes claimable once every work shard has succeeded, and finishes the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardKind {
    Work,
    Finalize,
}

impl ShardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Work => "work",
            Self::Finalize => "finalize",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "work" => Some(Self::Work),
            "finalize" => Some(Self::Finalize),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewShard {
    pub kind: ShardKind,
    pub start: i64,
    pub end: i64,
}

/// Splits `0..total` into work shards of at most `shard_size` instances, then a finalize shard.
pub fn plan_shards(total: i64, shard_size: i64) -> Vec<NewShard> {
    let size = shard_size.max(1);
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

pub struct Idempotency {
    pub key: String,
    /// Hash of the request body: the same key with another body is refused.
    pub request_hash: String,
}

pub struct NewJob {
    pub kind: JobKind,
    pub name: Option<String>,
    pub spec: Value,
    pub total: i64,
    pub shards: Vec<NewShard>,
    pub max_attempts: u32,
    pub idempotency: Option<Idempotency>,
    /// Sent when the job ends (stored with the job, in the same transaction).
    pub callback: Option<NewCallback>,
    /// A training's output folder: no two queued or running trainings write the same one.
    pub output: Option<String>,
}

pub struct NewCallback {
    pub url: String,
    pub secret_env: String,
}

/// A finished job's callback that is due for an attempt.
#[derive(Debug, Clone)]
pub struct DueCallback {
    pub job_id: String,
    pub kind: JobKind,
    pub url: String,
    pub secret_env: String,
    /// Attempts made so far.
    pub attempts: i64,
}

/// How one callback attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackAttempt {
    Delivered { status: u16 },
    Retry { error: String, next_at: i64 },
    GaveUp { error: String },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub name: Option<String>,
    pub status: JobStatus,
    pub spec: Value,
    pub progress_done: i64,
    pub progress_total: i64,
    pub error: Option<String>,
    /// Null in listings, which read `summary` alone.
    pub report: Option<Value>,
    /// The headline of the stored report (evaluations).
    pub summary: Option<Value>,
    pub result: Option<Value>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

pub struct Created<T> {
    pub value: T,
    pub created: bool,
}

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: i64,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct JobFilter {
    pub kind: JobKind,
    pub status: Option<JobStatus>,
    pub name: Option<String>,
    pub page: PageRequest,
}

/// The claim a worker holds; every write it makes is fenced on `attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub job_id: String,
    pub shard: i64,
    pub attempt: i64,
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub fence: Fence,
    pub job_kind: JobKind,
    pub shard_kind: ShardKind,
    pub start: i64,
    pub end: i64,
    /// Instances of this shard already stored by earlier attempts.
    pub done: i64,
    pub checkpoint: Option<Value>,
    pub spec: Value,
}

/// What a fenced write found: the claim still holds, another attempt owns the shard now, or the
/// job was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    Lost,
    Cancelled,
}

#[derive(Default)]
pub struct Completion {
    pub report: Option<Value>,
    pub summary: Option<Value>,
    pub result: Option<Value>,
}

/// One evaluated instance: both models' outcomes and the flip label.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub idx: i64,
    pub id: String,
    pub flip: String,
    /// Gold label of a multiple-choice instance.
    pub gold: Option<i64>,
    pub tags: Value,
    pub old: Value,
    pub new: Value,
    /// Slice names (`answer=1`, `topic=physics`) the instance belongs to, for filtering.
    pub slices: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub flip: Option<String>,
    pub slice: Option<String>,
    pub page: PageRequest,
}

#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// (kind, status, count)
    pub jobs: Vec<(JobKind, JobStatus, i64)>,
    pub queued_shards: i64,
    pub running_shards: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_instance_once_then_finalize() {
        let shards = plan_shards(1001, 500);
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
        let shards = plan_shards(0, 500);
        assert_eq!(shards.len(), 1);
        assert_eq!(shards[0].kind, ShardKind::Finalize);
    }

    #[test]
    fn statuses_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }
}
