//! Job kinds. Each kind is one module implementing [`Kind`]: its typed spec, how it is planned
//! into shards, its work and finalize steps, and the document the API and its job-end callback
//! show. The queue stores a kind's spec as a [`Document`]; the worker loop and the callbacks
//! find the kind's code through [`registry`], the one place that lists the kinds.

mod evaluation;
pub mod submit;
mod training;
mod view;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use evaluation::{Evaluation, Evaluations};
pub use training::{Training, TrainingProgress, Trainings};
pub use view::{JobProgress, JobTimes};

use crate::domain::{JobKind, JobPlanning, ShardKind};
use crate::evaluation::{EvalRuntime, PartialReports};
use crate::models::Resolver;
use crate::store::{Completion, Job, NewJob, Store, StoreResult};
use crate::train::TrainRuntime;
use crate::worker::{Executor, ShardContext, ShardError, ShardResult};

/// What a worker host holds to run jobs: each kind's runtime.
pub struct Workers {
    pub resolver: Resolver,
    pub evaluation: EvalRuntime,
    pub training: TrainRuntime,
}

/// What reading a job's document takes.
#[derive(Clone)]
pub struct Readers {
    pub store: Arc<Store>,
    /// Evaluations' reports while they run.
    pub reports: Arc<PartialReports>,
}

#[async_trait]
pub trait Kind: Send + Sync + 'static {
    /// The spec stored with the job, read once per claim.
    type Spec: Serialize + DeserializeOwned + Send + Sync;
    /// What GET /v1/{kind}s/{id} answers and the job-end callback carries.
    type Document: Serialize + Send;

    /// The job of a spec over `rows` dataset rows: its work shards and finalize shard.
    fn plan(spec: &Self::Spec, rows: i64, planning: JobPlanning) -> NewJob;

    /// A work shard: the claim's range of the job.
    async fn work(
        workers: &Workers,
        ctx: &ShardContext,
        spec: &Self::Spec,
    ) -> Result<(), ShardError>;

    /// The finalize shard, once every work shard succeeded: what the job stores when it ends.
    async fn finalize(workers: &Workers, ctx: &ShardContext, spec: &Self::Spec) -> ShardResult;

    /// The job as the API shows it.
    async fn document(readers: &Readers, job: &Job) -> StoreResult<Self::Document>;
}

/// A kind's code with its types erased, as the registry hands it out.
#[async_trait]
pub trait AnyKind: Send + Sync {
    async fn run(&self, workers: &Workers, ctx: &ShardContext) -> ShardResult;
    /// The document as JSON, for a callback's body.
    async fn document_json(
        &self,
        readers: &Readers,
        job: &Job,
    ) -> anyhow::Result<serde_json::Value>;
}

struct Erased<K>(std::marker::PhantomData<K>);

#[async_trait]
impl<K: Kind> AnyKind for Erased<K> {
    async fn run(&self, workers: &Workers, ctx: &ShardContext) -> ShardResult {
        let spec: K::Spec = ctx
            .claim
            .spec
            .read()
            .map_err(|e| ShardError::fatal(format!("stored spec does not parse: {e}")))?;
        match ctx.claim.shard_kind {
            ShardKind::Work => {
                K::work(workers, ctx, &spec).await?;
                Ok(Completion::default())
            }
            ShardKind::Finalize => K::finalize(workers, ctx, &spec).await,
        }
    }

    async fn document_json(
        &self,
        readers: &Readers,
        job: &Job,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::to_value(K::document(readers, job).await?)?)
    }
}

/// Every job kind's code: the one line to add for a new kind.
pub fn registry(kind: JobKind) -> &'static dyn AnyKind {
    match kind {
        JobKind::Evaluation => &Erased::<Evaluations>(std::marker::PhantomData),
        JobKind::Training => &Erased::<Trainings>(std::marker::PhantomData),
    }
}

/// The worker loop's executor: each claim goes to its kind's code.
#[async_trait]
impl Executor for Workers {
    async fn run(&self, ctx: &ShardContext) -> ShardResult {
        registry(ctx.claim.job_kind).run(self, ctx).await
    }
}
