//! A run's history as the trainer records it, checkpoints keep it and the API shows it: one
//! entry per logged optimizer step and one per epoch's validation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One optimizer step's numbers (means over its micro-batches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainStep {
    /// 1-based epoch.
    pub epoch: u32,
    /// Optimizer steps done, this one included.
    pub step: u64,
    pub loss: f64,
    /// Cross-entropy part of the loss.
    pub ce: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Compatibility objective: the distillation part of the loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distil: Option<f64>,
    /// Compatibility objective: share of loss tokens whose teacher was the old model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_share: Option<f64>,
}

/// An epoch's end: its mean train loss and the validation cross-entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EpochEnd {
    pub epoch: u32,
    pub step: u64,
    pub train_loss: f64,
    pub validation_ce: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    /// Train loss at a logging step.
    Train(TrainStep),
    /// Validation cross-entropy at an epoch's end.
    Validation(EpochEnd),
}
