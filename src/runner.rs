//! The executor workers run: it routes each claimed shard to the code for its job and shard kind.

use async_trait::async_trait;

use crate::evaluation::{self, EvalRuntime};
use crate::models::Resolver;
use crate::spec::EvaluationSpec;
use crate::store::{Completion, JobKind, ShardKind};
use crate::train::{self, TrainRuntime};
use crate::worker::{Executor, ShardContext, ShardError, ShardResult};

pub struct JobRunner {
    pub resolver: Resolver,
    pub evaluation: EvalRuntime,
    pub training: TrainRuntime,
}

#[async_trait]
impl Executor for JobRunner {
    async fn run(&self, ctx: &ShardContext) -> ShardResult {
        match (ctx.claim.job_kind, ctx.claim.shard_kind) {
            (JobKind::Evaluation, kind) => {
                // Parsed once per claim into its type; the steps take the type.
                let spec: EvaluationSpec = serde_json::from_value(ctx.claim.spec.clone())
                    .map_err(|e| ShardError::fatal(format!("stored spec does not parse: {e}")))?;
                match kind {
                    ShardKind::Work => {
                        evaluation::run_shard(&self.evaluation, ctx, &spec).await?;
                        Ok(Completion::default())
                    }
                    ShardKind::Finalize => evaluation::finalize(&self.resolver, ctx, &spec).await,
                }
            }
            (JobKind::Training, ShardKind::Work) => {
                train::run_work(&self.training, ctx).await?;
                Ok(Completion::default())
            }
            (JobKind::Training, ShardKind::Finalize) => train::finalize(&self.training, ctx).await,
        }
    }
}
