//! One instance as the API lists it, with its prompt and both models' results.

use serde::Serialize;
use utoipa::ToSchema;

use super::InstanceInput;
use crate::domain::{InstanceRecord, InstanceSampled, SideResult, Tags};
use crate::metrics::Flip;

/// One instance as the API lists it (and `muscle eval --instances` writes it).
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    /// Position of the row in the dataset.
    pub index: i64,
    pub flip: Flip,
    /// Gold answer index (multiple choice).
    pub gold: Option<i64>,
    /// The dataset row's tags.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub tags: Tags,
    /// The prompt the models were given (null when the dataset is no longer stored).
    pub prompt: Option<String>,
    /// Multiple choice: the choices, in index order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// Generation: the reference answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    pub old: SideResult,
    pub new: SideResult,
    /// With sampling, once the evaluation has finished: the instance's reliable change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled: Option<InstanceSampled>,
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
            flip: record.flip,
            id: record.id,
            index: record.idx,
            gold: record.gold,
            tags: record.tags,
            old: record.old,
            new: record.new,
            sampled: record.sampled,
        }
    }
}
