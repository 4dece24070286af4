//! What a job-end callback carries: the job exactly as GET /v1/evaluations/{id} or
//! GET /v1/trainings/{id} answers it.

use async_trait::async_trait;

use super::AppState;
use super::evaluations::Evaluation;
use super::trainings::view;
use crate::callback::JobDocuments;
use crate::store::{Job, JobKind};

#[async_trait]
impl JobDocuments for AppState {
    async fn document(&self, job: &Job) -> anyhow::Result<serde_json::Value> {
        let document = match job.kind {
            JobKind::Evaluation => {
                let report = self
                    .reports
                    .report(self.store.as_ref(), job)
                    .await
                    .map_err(|e| anyhow::anyhow!("the report: {e:?}"))?;
                serde_json::to_value(Evaluation::of(job, report.map(|r| (*r).clone())))?
            }
            JobKind::Training => serde_json::to_value(
                view(self, job)
                    .await
                    .map_err(|e| anyhow::anyhow!("the training: {e:?}"))?,
            )?,
        };
        Ok(document)
    }
}
