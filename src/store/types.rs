use serde::Serialize;
use serde_json::value::RawValue;

use super::{Document, StoreError, StoreResult};
use crate::domain::{DatasetKind, JobKind, JobStatus, NewShard, ShardKind};
use crate::metrics::{Flip, Verdict};
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

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
    /// A line to store, its instance already serialised (see `lmeval::recorded`).
    pub fn with_body(idx: i64, doc_id: String, filter: String, body: Box<RawValue>) -> Self {
        Self {
            idx,
            doc_id,
            filter,
            body,
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
    /// A row to store, its item already serialised (see `dataset`).
    pub fn with_body(idx: i64, id: String, body: Box<RawValue>) -> Self {
        Self { idx, id, body }
    }

    /// A row read back from the store, its text checked to be JSON.
    pub fn stored(idx: i64, id: String, body: String) -> serde_json::Result<Self> {
        Ok(Self {
            idx,
            id,
            body: RawValue::from_string(body)?,
        })
    }

    pub fn json(&self) -> &str {
        self.body.get()
    }
}

pub struct Idempotency {
    pub key: String,
    /// Hash of the request body: the same key with another body is refused.
    pub request_hash: String,
}

pub struct NewJob {
    pub kind: JobKind,
    pub name: Option<String>,
    pub spec: Document,
    pub total: i64,
    pub shards: Vec<NewShard>,
    pub max_attempts: std::num::NonZeroU32,
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
    pub spec: Document,
    pub progress_done: i64,
    pub progress_total: i64,
    pub error: Option<String>,
    /// Null in listings, which read `summary` alone.
    pub report: Option<Document>,
    /// The headline of the stored report (evaluations).
    pub summary: Option<Document>,
    pub result: Option<Document>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl Job {
    /// The job's spec as its kind stored it.
    pub fn read_spec<T: DeserializeOwned>(&self) -> StoreResult<T> {
        self.read("spec", &self.spec)
    }

    pub fn read_report<T: DeserializeOwned>(&self) -> StoreResult<Option<T>> {
        self.report
            .as_ref()
            .map(|d| self.read("report", d))
            .transpose()
    }

    pub fn read_summary<T: DeserializeOwned>(&self) -> StoreResult<Option<T>> {
        self.summary
            .as_ref()
            .map(|d| self.read("summary", d))
            .transpose()
    }

    pub fn read_result<T: DeserializeOwned>(&self) -> StoreResult<Option<T>> {
        self.result
            .as_ref()
            .map(|d| self.read("result", d))
            .transpose()
    }

    /// A stored document that no longer parses is an error naming the job, never a default.
    fn read<T: DeserializeOwned>(&self, what: &str, document: &Document) -> StoreResult<T> {
        document.read().map_err(|e| {
            StoreError::Corrupt(format!(
                "the stored {what} of {} {}: {e}",
                self.kind.as_str(),
                self.id
            ))
        })
    }
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
    pub checkpoint: Option<Document>,
    pub spec: Document,
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
    pub report: Option<Document>,
    pub summary: Option<Document>,
    pub result: Option<Document>,
    /// Evaluations with sampling: each instance's reliable change, stored with the report.
    pub verdicts: Vec<InstanceVerdict>,
}

/// One instance's reliable change across its sampled outputs, known once every instance is in
/// (its q-value is adjusted across all of them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceVerdict {
    pub idx: i64,
    pub q_value: f64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub flip: Option<Flip>,
    pub verdict: Option<Verdict>,
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
