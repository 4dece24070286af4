use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::InstanceInput;
use crate::metrics::{Answer, Flip, InstanceOutcome, SideOutcome};
use crate::store::InstanceRecord;

/// One model's result on one instance, as stored and as listed by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
}

impl SideResult {
    pub(crate) fn outcome(&self) -> SideOutcome {
        SideOutcome {
            score: self.score,
            answer: match self.prediction {
                Some(choice) => Answer::Choice(choice),
                None => Answer::Text(self.output.clone().unwrap_or_default()),
            },
        }
    }
}

/// The metrics' view of a stored instance; None when the stored sides do not parse.
pub fn outcome_of(record: &InstanceRecord) -> Option<InstanceOutcome> {
    let old: SideResult = serde_json::from_value(record.old.clone()).ok()?;
    let new: SideResult = serde_json::from_value(record.new.clone()).ok()?;
    let tags = record
        .tags
        .as_object()
        .map(|tags| {
            tags.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(InstanceOutcome {
        id: record.id.clone(),
        gold: record.gold.and_then(|g| usize::try_from(g).ok()),
        tags,
        old: old.outcome(),
        new: new.outcome(),
    })
}

/// One instance as the API lists it (and `muscle eval --instances` writes it).
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    /// Position of the row in the dataset.
    pub index: i64,
    pub flip: Flip,
    /// Gold answer index (multiple choice).
    pub gold: Option<i64>,
    #[schema(value_type = Object)]
    pub tags: Value,
    /// The prompt the models were given (null when the dataset is no longer stored).
    pub prompt: Option<String>,
    /// Multiple choice: the choices, in index order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// Generation: the reference answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[schema(value_type = SideResult)]
    pub old: Value,
    #[schema(value_type = SideResult)]
    pub new: Value,
}

impl InstanceView {
    pub fn of(record: InstanceRecord, input: Option<InstanceInput>) -> Self {
        let (prompt, choices, targets) = match input {
            Some(i) => (Some(i.prompt), i.choices, i.targets),
            None => (None, None, None),
        };
        Self {
            prompt,
            choices,
            targets,
            flip: serde_json::from_value(Value::String(record.flip.clone())).unwrap_or(Flip::Tie),
            id: record.id,
            index: record.idx,
            gold: record.gold,
            tags: record.tags,
            old: record.old,
            new: record.new,
        }
    }
}
