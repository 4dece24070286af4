//! What the model was asked for a listed instance (its prompt, and its choices or targets),
//! read from the evaluation's dataset, so a flip can be read where it is listed.

use std::collections::HashMap;

use crate::dataset::Item;
use crate::domain::InstanceRecord;
use crate::spec::{DatasetRef, EvaluationSpec};
use crate::store::{Store, StoreResult};

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInput {
    pub prompt: String,
    /// Multiple choice.
    pub choices: Option<Vec<String>>,
    /// Generation: the reference answers, any of which counts.
    pub targets: Option<Vec<String>>,
}

impl From<Item> for InstanceInput {
    fn from(item: Item) -> Self {
        match item {
            Item::MultipleChoice {
                prompt, choices, ..
            } => Self {
                prompt,
                choices: Some(choices),
                targets: None,
            },
            Item::Generation {
                prompt, targets, ..
            } => Self {
                prompt,
                choices: None,
                targets: Some(targets),
            },
        }
    }
}

/// The inputs of `records` (instances of the evaluation of `spec`) by dataset position; empty
/// when the evaluation names no uploaded dataset.
pub async fn inputs_of(
    store: &Store,
    spec: &EvaluationSpec,
    records: &[InstanceRecord],
) -> StoreResult<HashMap<i64, InstanceInput>> {
    let Some(DatasetRef::Id(dataset)) = &spec.dataset else {
        return Ok(HashMap::new());
    };
    let indices: Vec<i64> = records.iter().map(|r| r.idx).collect();
    Ok(store
        .dataset_rows_at(dataset, &indices)
        .await?
        .into_iter()
        .filter_map(|row| {
            let item = row.item().ok()?;
            Some((row.idx, InstanceInput::from(item)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn generation_rows_give_their_targets_and_no_choices() {
        let input = InstanceInput::from(Item::Generation {
            prompt: "2 + 2 =".into(),
            targets: vec!["4".into(), "four".into()],
            tags: BTreeMap::new(),
        });
        assert_eq!(input.prompt, "2 + 2 =");
        assert_eq!(input.choices, None);
        assert_eq!(input.targets, Some(vec!["4".into(), "four".into()]));
    }
}
