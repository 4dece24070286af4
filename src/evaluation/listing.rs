//! muscle's own instance listing (`GET .../instances`, `muscle eval --instances`) as a recorded
//! run: one side of an earlier evaluation, compared later without re-running its model.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::DatasetKind;
use crate::domain::SideResult;
use crate::lmeval::RecordedInstance;
use crate::validation::{FieldError, json_lines};

/// The per-sample value a listing records: the side's score under the evaluation's metric.
pub const LISTING_METRIC: &str = "score";

#[derive(Deserialize)]
struct ListingLine {
    id: String,
    #[serde(default)]
    gold: Option<i64>,
    #[serde(default)]
    tags: Map<String, Value>,
    prompt: Option<String>,
    #[serde(default)]
    choices: Option<Vec<String>>,
    #[serde(default)]
    targets: Option<Vec<String>>,
    old: SideResult,
    new: SideResult,
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Reads the lines of a listing, keeping `side` (`old` or `new`); every bad line is named.
pub fn parse_listing(
    body: &[u8],
    side: &str,
) -> Result<(DatasetKind, Vec<RecordedInstance>), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut kind: Option<DatasetKind> = None;
    let mut seen = HashSet::new();
    for (line, object) in json_lines(body) {
        if errors.len() >= 100 {
            break;
        }
        let parsed = object.and_then(|object| {
            serde_json::from_value::<ListingLine>(Value::Object(object))
                .map_err(|e| FieldError::line(line, "(line)", e.to_string()))
        });
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let Some(prompt) = parsed.prompt else {
            errors.push(FieldError::line(
                line,
                "prompt",
                "is null: the evaluation's dataset was no longer stored when this was listed",
            ));
            continue;
        };
        let result = if side == "old" {
            parsed.old
        } else {
            parsed.new
        };
        let this = if parsed.choices.is_some() {
            DatasetKind::MultipleChoice
        } else {
            DatasetKind::Generation
        };
        if *kind.get_or_insert(this) != this {
            errors.push(FieldError::line(
                line,
                "choices",
                "one task per file: multiple choice and generation lines are mixed",
            ));
            continue;
        }
        if !seen.insert(parsed.id.clone()) {
            errors.push(FieldError::line(
                line,
                "id",
                format!("{:?} is listed twice", parsed.id),
            ));
            continue;
        }
        let choices = parsed.choices.unwrap_or_default();
        if this == DatasetKind::MultipleChoice
            && result.scores.as_ref().map(Vec::len) != Some(choices.len())
        {
            errors.push(FieldError::line(
                line,
                format!("{side}.scores"),
                "must hold one score per choice",
            ));
            continue;
        }
        let target = parsed
            .targets
            .as_ref()
            .and_then(|t| t.first().cloned())
            .or_else(|| parsed.gold.map(|g| g.to_string()))
            .unwrap_or_default();
        out.push(RecordedInstance {
            doc_id: parsed.id,
            filter: "none".into(),
            prompt_hash: sha(&prompt),
            doc_hash: sha(&format!("{prompt}\u{0}{}", choices.join("\u{0}"))),
            target_hash: sha(&target),
            prompt,
            continuations: choices.iter().map(|c| format!(" {c}")).collect(),
            gold: parsed.gold.and_then(|g| usize::try_from(g).ok()),
            target,
            loglikelihoods: result.scores.clone().unwrap_or_default(),
            output: result.answer.clone().or_else(|| result.output.clone()),
            raw_output: result.output.clone(),
            metrics: BTreeMap::from([(LISTING_METRIC.to_string(), result.score)]),
            doc: parsed.tags,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    match kind {
        Some(kind) => Ok((kind, out)),
        None => Err(vec![FieldError::field("(file)", "holds no instances")]),
    }
}
