//! One model's recorded result on one (document, filter), as stored for comparisons.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::samples::{Responses, Sample};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedInstance {
    pub doc_id: String,
    pub filter: String,
    /// The rendered context of the (first) request.
    pub prompt: String,
    /// Multiple choice: the continuations as asked (delimiter included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continuations: Vec<String>,
    /// Multiple choice: the gold index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<usize>,
    pub target: String,
    /// Multiple choice: the recorded summed log-likelihood of each continuation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loglikelihoods: Vec<f64>,
    /// Generation: the output after the line's filter, and before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<String>,
    /// Per-sample metric values as recorded (`acc`, `acc_norm`, `exact_match`, ...).
    pub metrics: BTreeMap<String, f64>,
    pub doc: Map<String, Value>,
    pub doc_hash: String,
    pub prompt_hash: String,
    pub target_hash: String,
}

/// A recorded run's line is stored as its instance's JSON text.
impl crate::store::PredictionRow {
    pub fn new(idx: i64, instance: &RecordedInstance) -> Self {
        let body = serde_json::value::to_raw_value(instance)
            .expect("a recorded instance has only string keys");
        Self::with_body(idx, instance.doc_id.clone(), instance.filter.clone(), body)
    }

    pub fn instance(&self) -> serde_json::Result<RecordedInstance> {
        serde_json::from_str(self.json())
    }
}

impl RecordedInstance {
    pub fn of(sample: &Sample) -> Self {
        let gold = sample.gold_index();
        let (prompt, continuations, loglikelihoods, output, raw_output) = match &sample.responses {
            Responses::Loglikelihood {
                requests,
                loglikelihoods,
                ..
            } => (
                requests[0].0.clone(),
                requests.iter().map(|(_, c)| c.clone()).collect(),
                loglikelihoods.clone(),
                None,
                None,
            ),
            Responses::Generation {
                context,
                output,
                filtered,
                ..
            } => (
                context.clone(),
                Vec::new(),
                Vec::new(),
                Some(filtered.clone()),
                Some(output.clone()),
            ),
        };
        Self {
            doc_id: sample.doc_id.to_string(),
            filter: sample.filter.clone(),
            prompt,
            continuations,
            gold,
            target: sample.target.clone(),
            loglikelihoods,
            output,
            raw_output,
            metrics: sample.metrics.clone(),
            doc: sample.doc.clone(),
            doc_hash: sample.doc_hash.clone(),
            prompt_hash: sample.prompt_hash.clone(),
            target_hash: sample.target_hash.clone(),
        }
    }
}

/// The lines of a parsed samples file as stored rows, in file order.
pub fn recorded_rows(file: &super::SamplesFile) -> Vec<crate::store::PredictionRow> {
    let instances: Vec<RecordedInstance> = file.samples.iter().map(RecordedInstance::of).collect();
    rows_of(&instances)
}

/// Recorded instances as stored rows, in order.
pub fn rows_of(instances: &[RecordedInstance]) -> Vec<crate::store::PredictionRow> {
    instances
        .iter()
        .enumerate()
        .map(|(idx, instance)| crate::store::PredictionRow::new(idx as i64, instance))
        .collect()
}
