//! What a finished training stores: its history, best epoch, the adapter written and the
//! evaluations it queued.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::HistoryEntry;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingResult {
    pub history: Vec<HistoryEntry>,
    pub best_epoch: Option<u32>,
    pub best_validation_ce: Option<f64>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Epochs a reclaimed attempt resumed from.
    pub resumed_from_epochs: Vec<u32>,
    /// How the adapter was initialised.
    pub init: String,
    /// Name of the written adapter under MUSCLE_MODEL_DIR.
    pub adapter: String,
    /// With `evaluate`: the evaluations queued, by pair.
    pub evaluations: Option<QueuedEvaluations>,
}

/// Which two models an evaluation queued by a training compares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationPair {
    /// Compatibility objective: the old task model against the new one.
    OldVsNew,
    /// Compatibility objective: the old task model against the new base with the trained
    /// compatibility adapter.
    OldVsCompat,
    /// Task objective: the new model before and after training.
    BeforeVsAfter,
}

impl EvaluationPair {
    /// As the evaluation's name says it: "old vs new".
    pub fn label(self) -> &'static str {
        match self {
            Self::OldVsNew => "old vs new",
            Self::OldVsCompat => "old vs compat",
            Self::BeforeVsAfter => "before vs after",
        }
    }

    /// The key of the evaluation in the result, as JSON has it: "old_vs_new".
    pub fn key(self) -> &'static str {
        match self {
            Self::OldVsNew => "old_vs_new",
            Self::OldVsCompat => "old_vs_compat",
            Self::BeforeVsAfter => "before_vs_after",
        }
    }

    /// Whether this evaluation runs the trained adapter: its gate decides whether the training
    /// passed (the CLI's exit code).
    pub fn judges_the_adapter(self) -> bool {
        matches!(self, Self::OldVsCompat | Self::BeforeVsAfter)
    }
}

/// An evaluation a training queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueuedEvaluation {
    pub id: String,
}

pub type QueuedEvaluations = BTreeMap<EvaluationPair, QueuedEvaluation>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_named_alike_in_json_keys_and_labels() {
        for pair in [
            EvaluationPair::OldVsNew,
            EvaluationPair::OldVsCompat,
            EvaluationPair::BeforeVsAfter,
        ] {
            assert_eq!(serde_json::to_value(pair).unwrap(), pair.key());
            assert_eq!(pair.key().replace('_', " "), pair.label());
        }
    }
}
