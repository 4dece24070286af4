//! One evaluated instance as the workers store it and the reports, listings and exports read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::metrics::{Answer, Flip, InstanceOutcome, SideOutcome, Verdict};

/// One model's result on one instance, as stored and as listed by the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SideResult {
    /// Index of the chosen answer (multiple choice).
    pub prediction: Option<usize>,
    /// Whether the prediction is the gold answer (multiple choice) or scored 1 (generation).
    pub correct: Option<bool>,
    /// Summed continuation log-probability of each choice (multiple choice).
    pub scores: Option<Vec<f64>>,
    /// The generated text (generation).
    pub output: Option<String>,
    /// The answer taken from the output by the task's filter (`extract`, lm-eval's filters),
    /// which the metric scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// 1/0 for multiple choice; the metric's value for generation.
    pub score: f64,
    /// With `options.noise_floor`, on the old side: the score of the old model's second run
    /// (another batch size, reversed order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_score: Option<f64>,
    /// With `task.sampling`: the K outputs drawn after the greedy one, each scored as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<SampledOutput>,
    /// With `task.sampling`: the mean score of the samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
}

/// One sampled output and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SampledOutput {
    pub output: String,
    /// The answer the task's filter took from the output, which the metric scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    pub score: f64,
}

impl SideResult {
    pub fn outcome(&self) -> SideOutcome {
        SideOutcome {
            score: self.score,
            samples: self.samples.iter().map(|s| s.score).collect(),
            answer: match self.prediction {
                Some(choice) => Answer::Choice(choice),
                None => Answer::Text(self.output.clone().unwrap_or_default()),
            },
        }
    }
}

/// A dataset row's tags (`topic: physics`), each value a string.
pub type Tags = BTreeMap<String, String>;

/// One evaluated instance: both models' results and the flip between them.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Position of the row in the dataset.
    pub idx: i64,
    pub id: String,
    pub flip: Flip,
    /// Gold label of a multiple-choice instance.
    pub gold: Option<i64>,
    pub tags: Tags,
    pub old: SideResult,
    pub new: SideResult,
    /// Slice names (`answer=1`, `topic=physics`) the instance belongs to, for filtering.
    pub slices: Vec<String>,
    /// With sampling, once the evaluation has finished: whether the sampled outputs changed
    /// reliably.
    pub sampled: Option<InstanceSampled>,
}

/// An instance's reliable change across its sampled outputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceSampled {
    pub verdict: Verdict,
    /// Fisher's exact test (0/1 scores) or Welch's t (continuous), Benjamini-Hochberg adjusted
    /// across the evaluation's instances; a verdict other than `none` needs q < 0.05.
    pub q_value: f64,
}

impl InstanceRecord {
    /// The metrics' view of the instance.
    pub fn outcome(&self) -> InstanceOutcome {
        InstanceOutcome {
            id: self.id.clone(),
            gold: self.gold.and_then(|g| usize::try_from(g).ok()),
            tags: self.tags.clone(),
            old: self.old.outcome(),
            new: self.new.outcome(),
        }
    }
}
