//! What the documents of every kind show of a job.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::Job;
use crate::time::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct JobProgress {
    pub done: i64,
    pub total: i64,
}

/// A job's times as RFC 3339 UTC.
pub struct JobTimes {
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl JobTimes {
    pub fn of(job: &Job) -> Self {
        Self {
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
        }
    }
}
