//! What a job-end callback carries: the job exactly as GET /v1/evaluations/{id} or
//! GET /v1/trainings/{id} answers it, from the job's kind.

use async_trait::async_trait;

use super::AppState;
use crate::callback::JobDocuments;
use crate::kinds::registry;
use crate::store::Job;

#[async_trait]
impl JobDocuments for AppState {
    async fn document(&self, job: &Job) -> anyhow::Result<serde_json::Value> {
        registry(job.kind).document_json(&self.readers(), job).await
    }
}
