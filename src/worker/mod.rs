//! Workers: claim a shard, run it under a heartbeat, write its outcome fenced on the claim.

mod context;
mod redact;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::stats::{JobLabels, Stats};
use crate::store::{Claim, LeaseState, Store};

pub use context::{Interruption, ShardContext, ShardError, ShardResult};
pub use redact::PathRedactor;

/// Does the work of one claimed shard.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn run(&self, ctx: &ShardContext) -> ShardResult;
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub lease: Duration,
    pub poll: Duration,
    /// Applied to failure messages before they are stored (and shown by the API).
    pub redactor: PathRedactor,
}

/// One worker loop: claims until `shutdown` fires, then lets the shard in hand stop between
/// batches and gives it back to the queue.
pub async fn run_worker(
    id: String,
    store: Arc<Store>,
    executor: Arc<dyn Executor>,
    stats: Arc<Stats>,
    config: WorkerConfig,
    shutdown: CancellationToken,
    running: Arc<AtomicUsize>,
) {
    running.fetch_add(1, Ordering::SeqCst);
    tracing::info!(worker = %id, "worker started");
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match store.claim(&id, config.lease).await {
            Ok(Some(claim)) => {
                failures = 0;
                let span = tracing::info_span!(
                    "shard",
                    worker = %id,
                    job.id = %claim.fence.job_id,
                    job.kind = claim.job_kind.as_str(),
                    shard = claim.fence.shard,
                    attempt = claim.fence.attempt,
                );
                run_claim(claim, &store, executor.as_ref(), &stats, &config, &shutdown)
                    .instrument(span)
                    .await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(config.poll) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Err(error) => {
                failures += 1;
                let backoff = config.poll * 2u32.saturating_pow(failures.min(6));
                tracing::warn!(worker = %id, %error, ?backoff, "claim failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
    running.fetch_sub(1, Ordering::SeqCst);
    tracing::info!(worker = %id, "worker stopped");
}

async fn run_claim(
    claim: Claim,
    store: &Arc<Store>,
    executor: &dyn Executor,
    stats: &Stats,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) {
    let fence = claim.fence.clone();
    let job_kind = claim.job_kind;
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicI64::new(claim.done));
    let reason = Arc::new(AtomicU8::new(0));
    tracing::info!(start = claim.start, end = claim.end, "claimed");

    // Runs until the executor returns: a shutdown only asks the executor to stop, and the
    // lease is kept alive until it reaches a batch boundary.
    let finished = CancellationToken::new();
    let heartbeat = {
        let store = store.clone();
        let fence = fence.clone();
        let stop = stop.clone();
        let done = done.clone();
        let reason = reason.clone();
        let finished = finished.clone();
        let shutdown = shutdown.clone();
        let lease = config.lease;
        tokio::spawn(async move {
            let mut shutdown_seen = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(lease / 3) => {}
                    _ = finished.cancelled() => return,
                    _ = shutdown.cancelled(), if !shutdown_seen => {
                        shutdown_seen = true;
                        ShardContext::interrupt(&reason, &stop, Interruption::Shutdown);
                        continue;
                    }
                }
                match store
                    .heartbeat(&fence, done.load(Ordering::SeqCst), lease)
                    .await
                {
                    Ok(LeaseState::Held) => {}
                    Ok(LeaseState::Lost) => {
                        ShardContext::interrupt(&reason, &stop, Interruption::LeaseLost);
                        return;
                    }
                    Ok(LeaseState::Cancelled) => {
                        ShardContext::interrupt(&reason, &stop, Interruption::Cancelled);
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "heartbeat failed"),
                }
            }
        })
    };

    let ctx = ShardContext::new(claim, store.clone(), stop, done, reason);
    let result = executor.run(&ctx).await;
    finished.cancel();
    let _ = heartbeat.await;

    let outcome = match result {
        Ok(completion) => match store.complete_shard(&fence, &completion).await {
            Ok(LeaseState::Held) => "succeeded",
            Ok(state) => {
                tracing::warn!(
                    ?state,
                    "finished, but the claim no longer held; result dropped"
                );
                "lost"
            }
            Err(error) => {
                tracing::error!(%error, "could not record completion; the lease will expire");
                "error"
            }
        },
        Err(ShardError::Interrupted(Interruption::Shutdown)) => {
            match store.release_shard(&fence).await {
                Ok(_) => tracing::info!("released for another worker"),
                Err(error) => tracing::warn!(%error, "release failed; the lease will expire"),
            }
            "released"
        }
        Err(ShardError::Interrupted(why)) => {
            tracing::info!(?why, "stopped");
            match why {
                Interruption::Cancelled => "cancelled",
                _ => "lost",
            }
        }
        Err(ShardError::Failed { message, retry }) => {
            tracing::warn!(%message, retry, "shard failed");
            let message = config.redactor.redact(&message);
            if let Err(error) = store.fail_shard(&fence, &message, retry).await {
                tracing::error!(%error, "could not record the failure; the lease will expire");
            }
            "failed"
        }
    };
    tracing::info!(outcome, "shard done");
    stats
        .shards_finished
        .get_or_create(&JobLabels {
            kind: job_kind.as_str().into(),
            status: outcome.into(),
        })
        .inc();
}
