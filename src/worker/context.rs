use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

use crate::domain::InstanceRecord;
use crate::store::{Claim, Completion, Document, LeaseState, Store, StoreError};

/// Why a shard's work must stop before it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The job was cancelled.
    Cancelled,
    /// Another attempt owns the shard now (our lease expired).
    LeaseLost,
    /// This process is shutting down: the shard goes back to the queue.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("interrupted: {0:?}")]
    Interrupted(Interruption),
    /// `retry`: whether another attempt could succeed (a crash or an out-of-memory might not
    /// recur; a missing model folder will).
    #[error("{message}")]
    Failed { message: String, retry: bool },
}

impl ShardError {
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            retry: false,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            retry: true,
        }
    }
}

impl From<StoreError> for ShardError {
    fn from(error: StoreError) -> Self {
        Self::retryable(format!("store: {error}"))
    }
}

pub type ShardResult = Result<Completion, ShardError>;

/// What an executor gets for one claimed shard: the claim, the store, and a token that fires
/// when the work must stop.
pub struct ShardContext {
    pub claim: Claim,
    pub store: Arc<Store>,
    pub stop: CancellationToken,
    done: Arc<AtomicI64>,
    reason: Arc<AtomicU8>,
}

const NONE: u8 = 0;

impl ShardContext {
    pub(super) fn new(
        claim: Claim,
        store: Arc<Store>,
        stop: CancellationToken,
        done: Arc<AtomicI64>,
        reason: Arc<AtomicU8>,
    ) -> Self {
        Self {
            claim,
            store,
            stop,
            done,
            reason,
        }
    }

    pub(super) fn encode(reason: Interruption) -> u8 {
        match reason {
            Interruption::Cancelled => 1,
            Interruption::LeaseLost => 2,
            Interruption::Shutdown => 3,
        }
    }

    pub(super) fn decode(code: u8) -> Option<Interruption> {
        match code {
            1 => Some(Interruption::Cancelled),
            2 => Some(Interruption::LeaseLost),
            3 => Some(Interruption::Shutdown),
            _ => None,
        }
    }

    /// Records why work stops (the first reason wins) and fires the stop token.
    pub(super) fn interrupt(reason: &AtomicU8, stop: &CancellationToken, why: Interruption) {
        let _ =
            reason.compare_exchange(NONE, Self::encode(why), Ordering::SeqCst, Ordering::SeqCst);
        stop.cancel();
    }

    /// Err when the work must stop now; call between batches.
    pub fn check(&self) -> Result<(), ShardError> {
        if self.stop.is_cancelled() {
            let why =
                Self::decode(self.reason.load(Ordering::SeqCst)).unwrap_or(Interruption::Shutdown);
            return Err(ShardError::Interrupted(why));
        }
        Ok(())
    }

    /// Progress within the shard, sent with the next heartbeat.
    pub fn set_done(&self, done: i64) {
        self.done.store(done, Ordering::SeqCst);
    }

    fn lease(&self, state: LeaseState) -> Result<(), ShardError> {
        let why = match state {
            LeaseState::Held => return Ok(()),
            LeaseState::Lost => Interruption::LeaseLost,
            LeaseState::Cancelled => Interruption::Cancelled,
        };
        Self::interrupt(&self.reason, &self.stop, why);
        Err(ShardError::Interrupted(why))
    }

    /// Stores rows (fenced on the claim) and progress.
    pub async fn write_instances(
        &self,
        rows: &[InstanceRecord],
        done: i64,
    ) -> Result<(), ShardError> {
        let state = self
            .store
            .write_instances(&self.claim.fence, rows, done)
            .await?;
        self.set_done(done);
        self.lease(state)
    }

    pub async fn save_checkpoint(&self, checkpoint: &Document) -> Result<(), ShardError> {
        let state = self
            .store
            .save_checkpoint(&self.claim.fence, checkpoint)
            .await?;
        self.lease(state)
    }
}
