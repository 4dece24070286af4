//! A side of an evaluation that is a run recorded elsewhere: its stored per-sample results are
//! used as they are, matched to the instances by doc_id.

use std::collections::HashMap;

use crate::domain::SideResult;
use crate::engine::McResult;
use crate::lmeval::RecordedInstance;
use crate::spec::{GenerationMetric, McScore, TaskSpec};
use crate::store::{Predictions, Store, StoreResult};
use crate::worker::ShardError;

/// The filter whose lines a comparison reads: the task's, or the run's only one.
pub fn chosen_filter(task: &TaskSpec, predictions: &Predictions) -> Result<String, String> {
    let asked = match task {
        TaskSpec::Generation { filter, .. } => filter.clone(),
        TaskSpec::MultipleChoice { .. } => None,
    };
    match (asked, predictions.filters.as_slice()) {
        (Some(filter), filters) if filters.contains(&filter) => Ok(filter),
        (Some(filter), filters) => Err(format!(
            "{filter:?} is not a filter of recorded run {}; it has {}",
            predictions.id,
            filters.join(", ")
        )),
        (None, [only]) => Ok(only.clone()),
        (None, filters) => Err(format!(
            "recorded run {} holds the filters {}: name one in task.filter",
            predictions.id,
            filters.join(", ")
        )),
    }
}

/// The per-sample metric a task compares, as lm-eval names it.
pub fn metric_name(task: &TaskSpec) -> &'static str {
    match task {
        TaskSpec::MultipleChoice {
            score: McScore::Acc,
            ..
        } => "acc",
        TaskSpec::MultipleChoice {
            score: McScore::AccNorm,
            ..
        } => "acc_norm",
        TaskSpec::Generation { metric, .. } => match metric {
            GenerationMetric::ExactMatch => "exact_match",
            GenerationMetric::Rouge1 => "rouge1",
            GenerationMetric::RougeL => "rougeL",
        },
    }
}

/// The recorded lines of one run under one filter, by doc_id.
pub async fn load_recorded(
    store: &Store,
    predictions: &str,
    filter: &str,
) -> StoreResult<HashMap<String, RecordedInstance>> {
    by_doc(store.prediction_rows(predictions, filter).await?)
}

/// As `load_recorded`, for these doc_ids only (a shard's).
pub async fn load_recorded_for(
    store: &Store,
    predictions: &str,
    filter: &str,
    doc_ids: &[String],
) -> StoreResult<HashMap<String, RecordedInstance>> {
    by_doc(
        store
            .prediction_rows_for(predictions, filter, doc_ids)
            .await?,
    )
}

fn by_doc(
    rows: Vec<crate::store::PredictionRow>,
) -> StoreResult<HashMap<String, RecordedInstance>> {
    let mut out = HashMap::new();
    for row in rows {
        let instance = row
            .instance()
            .map_err(|e| crate::store::StoreError::Corrupt(format!("prediction row: {e}")))?;
        out.insert(row.doc_id, instance);
    }
    Ok(out)
}

/// One instance's side from its recorded line.
pub fn recorded_result(
    recorded: &RecordedInstance,
    task: &TaskSpec,
) -> Result<SideResult, ShardError> {
    let metric = metric_name(task);
    // A run imported from muscle's own listing records the side's score under one name.
    let value = recorded
        .metrics
        .get(metric)
        .or_else(|| recorded.metrics.get(super::LISTING_METRIC))
        .copied();
    match task {
        TaskSpec::MultipleChoice { score, .. } => {
            let lls = &recorded.loglikelihoods;
            // The engine's own acc / acc_norm choice (acc_norm divides by the choice's length
            // in characters, without the delimiter, as lm-eval does).
            let choices: Vec<String> = recorded
                .continuations
                .iter()
                .map(|c| c.strip_prefix(' ').unwrap_or(c).to_string())
                .collect();
            let picked = McResult::from_scores(&choices, lls.clone(), vec![false; lls.len()]);
            let prediction = match score {
                McScore::Acc => picked.acc_pred,
                McScore::AccNorm => picked.acc_norm_pred,
            };
            let correct = match value {
                Some(v) => v >= 1.0,
                None => Some(prediction) == recorded.gold,
            };
            Ok(SideResult {
                prediction: Some(prediction),
                correct: Some(correct),
                scores: Some(lls.clone()),
                output: None,
                answer: None,
                score: if correct { 1.0 } else { 0.0 },
                ..Default::default()
            })
        }
        TaskSpec::Generation { .. } => {
            let score = value.ok_or_else(|| {
                ShardError::fatal(format!(
                    "doc {}: the recorded run has no per-sample {metric}",
                    recorded.doc_id
                ))
            })?;
            Ok(SideResult {
                prediction: None,
                correct: Some(score >= 1.0),
                scores: None,
                output: recorded.raw_output.clone(),
                answer: (recorded.filter != "none")
                    .then(|| recorded.output.clone())
                    .flatten(),
                score,
                ..Default::default()
            })
        }
    }
}
