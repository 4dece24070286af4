//! Evaluations with a recorded side: the recorded runs are looked up, checked against the task,
//! and their recorded requests become the evaluation's dataset, so the rest of the evaluation
//! (shards, instances, report) is the same as for two models.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::{chosen_filter, load_recorded, metric_name};
use crate::dataset::Item;
use crate::domain::{DatasetKind, SideName};
use crate::lmeval::RecordedInstance;
use crate::spec::{EvaluationSpec, PredictionsRef, Side};
use crate::store::{
    Dataset, DatasetRow, Lookup, NewDataset, Predictions, Store, StoreResult, lookup_predictions,
};
use crate::validation::FieldError;

/// The recorded run of one side, checked against the task; None (with errors) when unusable.
async fn recorded_side(
    store: &Store,
    spec: &EvaluationSpec,
    side: SideName,
    reference: &str,
    errors: &mut Vec<FieldError>,
) -> StoreResult<Option<(Predictions, String)>> {
    let side = side.as_str();
    let predictions = match lookup_predictions(store, reference).await? {
        Lookup::Found(p) => p,
        other => {
            errors.push(FieldError::field(
                format!("{side}.predictions"),
                other
                    .problem_with("recorded run", reference)
                    .unwrap_or_default(),
            ));
            return Ok(None);
        }
    };
    let kind = spec.task.dataset_kind();
    if predictions.kind != kind {
        errors.push(FieldError::field(
            "task.type",
            format!(
                "is {} but recorded run {} holds {} results",
                kind.as_str(),
                predictions.id,
                predictions.kind.as_str()
            ),
        ));
        return Ok(None);
    }
    let filter = match chosen_filter(&spec.task, &predictions) {
        Ok(filter) => filter,
        Err(message) => {
            errors.push(FieldError::field("task.filter", message));
            return Ok(None);
        }
    };
    let metric = metric_name(&spec.task);
    if kind == DatasetKind::Generation
        && !predictions
            .metrics
            .iter()
            .any(|m| m == metric || m == super::LISTING_METRIC)
    {
        errors.push(FieldError::field(
            "task.metric",
            format!(
                "recorded run {} has no per-sample {metric}; it has {}",
                predictions.id,
                predictions.metrics.join(", ")
            ),
        ));
        return Ok(None);
    }
    Ok(Some((predictions, filter)))
}

fn item_of(
    recorded: &RecordedInstance,
    slice_by: &[String],
    errors: &mut Vec<FieldError>,
) -> Option<Item> {
    let mut tags = BTreeMap::new();
    for field in slice_by {
        match recorded.doc.get(field) {
            None | Some(serde_json::Value::Null) => {
                errors.push(FieldError::field(
                    "options.slice_by",
                    format!("doc {} has no field {field:?}", recorded.doc_id),
                ));
                return None;
            }
            Some(serde_json::Value::String(s)) => {
                tags.insert(field.clone(), s.clone());
            }
            Some(other) => {
                tags.insert(field.clone(), other.to_string());
            }
        }
    }
    Some(if recorded.continuations.is_empty() {
        Item::Generation {
            prompt: recorded.prompt.clone(),
            targets: vec![recorded.target.clone()],
            tags,
        }
    } else {
        Item::MultipleChoice {
            prompt: recorded.prompt.clone(),
            // The task's delimiter (" ") goes back in front when a model is run on them.
            choices: recorded
                .continuations
                .iter()
                .map(|c| c.strip_prefix(' ').unwrap_or(c).to_string())
                .collect(),
            answer: recorded.gold.unwrap_or(0),
            tags,
        }
    })
}

/// For an evaluation with a recorded side: checks the sides, stores the dataset of the recorded
/// requests (the instances both runs hold, in the first run's order) and points the spec at it
/// and at the runs' ids. Returns None when no side is recorded or when `errors` got entries.
pub async fn prepare_recorded(
    store: &Store,
    spec: &mut EvaluationSpec,
    errors: &mut Vec<FieldError>,
) -> StoreResult<Option<Dataset>> {
    let (old_ref, new_ref) = (
        spec.old.predictions().map(str::to_string),
        spec.new.predictions().map(str::to_string),
    );
    if old_ref.is_none() && new_ref.is_none() {
        return Ok(None);
    }
    if spec.dataset.is_some() {
        errors.push(FieldError::field(
            "dataset",
            "a recorded run brings its own instances (its recorded requests); remove dataset",
        ));
    }
    if spec.options.noise_floor && old_ref.is_some() {
        errors.push(FieldError::field(
            "options.noise_floor",
            "reruns the old model, which a recorded run cannot do",
        ));
    }
    let mut sides = Vec::new();
    for (side, reference) in SideName::BOTH.into_iter().zip([&old_ref, &new_ref]) {
        if let Some(reference) = reference {
            sides.push((
                side,
                recorded_side(store, spec, side, reference, errors).await?,
            ));
        }
    }
    if !errors.is_empty() || sides.iter().any(|(_, s)| s.is_none()) {
        return Ok(None);
    }
    let sides: Vec<(SideName, Predictions, String)> = sides
        .into_iter()
        .filter_map(|(side, found)| found.map(|(p, f)| (side, p, f)))
        .collect();
    let (_, base, base_filter) = &sides[0];
    let base_rows = load_recorded(store, &base.id, base_filter).await?;
    let other = match sides.get(1) {
        Some((_, p, f)) => Some(load_recorded(store, &p.id, f).await?),
        None => None,
    };
    let mut ordered: Vec<&RecordedInstance> = base_rows.values().collect();
    ordered.sort_by(|a, b| doc_id_order(&a.doc_id).cmp(&doc_id_order(&b.doc_id)));
    let mut rows = Vec::new();
    for recorded in ordered {
        if other
            .as_ref()
            .is_some_and(|o| !o.contains_key(&recorded.doc_id))
        {
            continue;
        }
        let Some(item) = item_of(recorded, &spec.options.slice_by, errors) else {
            break;
        };
        rows.push(DatasetRow::new(
            rows.len() as i64,
            recorded.doc_id.clone(),
            &item,
        ));
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push(FieldError::field(
            "new.predictions",
            "the two recorded runs share no doc_id",
        ));
    }
    if !errors.is_empty() {
        return Ok(None);
    }
    for (side, predictions, _) in &sides {
        let reference = Side::Predictions(PredictionsRef {
            predictions: predictions.id.clone(),
        });
        *spec.side_mut(*side) = reference;
    }
    let mut hash = Sha256::new();
    for (_, predictions, filter) in &sides {
        hash.update(predictions.sha256.as_bytes());
        hash.update(filter.as_bytes());
    }
    hash.update(spec.options.slice_by.join(",").as_bytes());
    let sha256 = hex::encode(hash.finalize());
    let name = format!("recorded:{}", base.name);
    if let Some(existing) = store
        .datasets_named(&name, 10)
        .await?
        .into_iter()
        .find(|d| d.sha256 == sha256)
    {
        return Ok(Some(existing));
    }
    let dataset = store
        .insert_dataset(
            &NewDataset {
                name,
                kind: spec.task.dataset_kind(),
                sha256,
            },
            &mut rows.into_iter(),
        )
        .await?;
    Ok(Some(dataset))
}

/// The order documents are compared and listed in: numeric doc_ids by number, then the others
/// by their text (never by a hash map's order, which changes from one process to the next).
fn doc_id_order(id: &str) -> (i64, &str) {
    (id.parse::<i64>().unwrap_or(i64::MAX), id)
}

/// What the report says about two recorded runs that do not line up: doc_ids on one side only,
/// and documents whose recorded prompt or document differ.
pub fn alignment_warnings(
    old: &HashMap<String, RecordedInstance>,
    new: &HashMap<String, RecordedInstance>,
) -> Vec<String> {
    fn listed(mut ids: Vec<&String>) -> String {
        ids.sort_by(|a, b| doc_id_order(a).cmp(&doc_id_order(b)));
        let shown: Vec<&str> = ids.iter().take(10).map(|s| s.as_str()).collect();
        let more = ids.len().saturating_sub(10);
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }
    let mut warnings = Vec::new();
    fn only<'a>(
        a: &'a HashMap<String, RecordedInstance>,
        b: &HashMap<String, RecordedInstance>,
    ) -> Vec<&'a String> {
        a.keys().filter(|k| !b.contains_key(*k)).collect()
    }
    for (side, ids) in SideName::BOTH
        .into_iter()
        .zip([only(old, new), only(new, old)])
    {
        let side = side.as_str();
        if !ids.is_empty() {
            warnings.push(format!(
                "{} doc_id(s) only in the {side} run, not compared: {}",
                ids.len(),
                listed(ids)
            ));
        }
    }
    for (what, differs) in [
        (
            "prompt_hash",
            (|a: &RecordedInstance, b: &RecordedInstance| a.prompt_hash != b.prompt_hash)
                as fn(&RecordedInstance, &RecordedInstance) -> bool,
        ),
        ("doc_hash", |a, b| a.doc_hash != b.doc_hash),
    ] {
        let ids: Vec<&String> = old
            .iter()
            .filter(|(k, a)| new.get(*k).is_some_and(|b| differs(a, b)))
            .map(|(k, _)| k)
            .collect();
        if !ids.is_empty() {
            warnings.push(format!(
                "{} document(s) with a different {what} in the two runs (they did not see the \
                 same {}): {}",
                ids.len(),
                if what == "prompt_hash" {
                    "prompt"
                } else {
                    "document"
                },
                listed(ids)
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_ordered_by_number_then_by_text() {
        let mut ids = vec!["q2", "10", "q1", "2", "q10"];
        ids.sort_by(|a, b| doc_id_order(a).cmp(&doc_id_order(b)));
        assert_eq!(ids, ["2", "10", "q1", "q10", "q2"]);
    }
}
