//! Dataset files: JSON lines of multiple-choice or generation rows, validated whole before
//! anything is stored.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::{DatasetKind, DatasetRow};
use crate::validation::FieldError;

/// Stop listing after this many bad lines: enough to fix a file, bounded for a huge one.
const MAX_REPORTED_ERRORS: usize = 1000;

/// A validated row as stored: `targets` always a list, `tags` values as strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Item {
    MultipleChoice {
        prompt: String,
        choices: Vec<String>,
        answer: usize,
        #[serde(default)]
        tags: BTreeMap<String, String>,
    },
    Generation {
        prompt: String,
        targets: Vec<String>,
        #[serde(default)]
        tags: BTreeMap<String, String>,
    },
}

impl Item {
    pub fn tags(&self) -> &BTreeMap<String, String> {
        match self {
            Self::MultipleChoice { tags, .. } | Self::Generation { tags, .. } => tags,
        }
    }

    pub fn prompt(&self) -> &str {
        match self {
            Self::MultipleChoice { prompt, .. } | Self::Generation { prompt, .. } => prompt,
        }
    }
}

#[derive(Debug)]
pub struct ParsedDataset {
    pub kind: DatasetKind,
    pub rows: Vec<DatasetRow>,
    pub sha256: String,
}

/// How an uploaded file is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum DatasetFormat {
    /// muscle's rows: `{id, prompt, choices, answer, tags}` or `{id, prompt, target(s), tags}`.
    #[default]
    #[serde(rename = "muscle")]
    Muscle,
    /// An lm-evaluation-harness `samples_<task>_<date>.jsonl` (`--log_samples`): its rendered
    /// requests become the prompts, `doc_id` the row ids.
    #[serde(rename = "lm-eval")]
    LmEval,
}

/// Reads a file in `format`; `slice_by` (lm-eval only) names `doc` fields to tag rows with.
pub fn parse_dataset(
    body: &[u8],
    format: DatasetFormat,
    slice_by: &[String],
) -> Result<ParsedDataset, Vec<FieldError>> {
    match format {
        DatasetFormat::LmEval => crate::lmeval::samples_dataset(body, slice_by),
        DatasetFormat::Muscle if !slice_by.is_empty() => Err(vec![FieldError::field(
            "slice_by",
            "applies to format lm-eval; muscle rows carry their own tags",
        )]),
        DatasetFormat::Muscle => parse_jsonl(body),
    }
}

/// Validates every line of a JSONL body; any bad line rejects the whole file.
pub fn parse_jsonl(body: &[u8]) -> Result<ParsedDataset, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    let mut kind: Option<(DatasetKind, usize)> = None;
    let mut first_line_of_id: HashMap<String, usize> = HashMap::new();

    for (line, parsed) in crate::validation::json_lines(body) {
        if errors.len() >= MAX_REPORTED_ERRORS {
            break;
        }
        let object = match parsed {
            Ok(object) => object,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let nul = crate::validation::nul_paths_in(&object);
        if !nul.is_empty() {
            for field in nul {
                errors.push(FieldError::line(
                    line,
                    field,
                    crate::validation::NUL_MESSAGE,
                ));
            }
            continue;
        }
        let before = errors.len();
        let id = row_id(&object, line, &mut errors);
        let item = parse_item(&object, line, &mut errors);
        if let Some(id) = &id
            && let Some(first) = first_line_of_id.get(id)
        {
            errors.push(FieldError::line(
                line,
                "id",
                format!("duplicate id {id:?} (first used on line {first})"),
            ));
        }
        let Some(item) = item else { continue };
        let row_kind = match item {
            Item::MultipleChoice { .. } => DatasetKind::MultipleChoice,
            Item::Generation { .. } => DatasetKind::Generation,
        };
        match kind {
            None => kind = Some((row_kind, line)),
            Some((dataset_kind, first)) if dataset_kind != row_kind => errors.push(FieldError::line(
                line,
                if row_kind == DatasetKind::Generation { "target" } else { "choices" },
                format!(
                    "this row is {} but line {first} made the dataset {}; one file holds one kind",
                    row_kind.as_str(),
                    dataset_kind.as_str()
                ),
            )),
            Some(_) => {}
        }
        if errors.len() > before {
            continue;
        }
        let id = id.unwrap_or_else(|| line.to_string());
        first_line_of_id.insert(id.clone(), line);
        let body = serde_json::to_value(&item).map_err(|e| {
            vec![FieldError::line(
                line,
                "(line)",
                format!("cannot store row: {e}"),
            )]
        })?;
        rows.push(DatasetRow {
            idx: rows.len() as i64,
            id,
            body,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some((kind, _)) = kind else {
        return Err(vec![FieldError::field("body", "the dataset has no rows")]);
    };
    Ok(ParsedDataset {
        kind,
        rows,
        sha256: hex::encode(Sha256::digest(body)),
    })
}

fn row_id(
    object: &Map<String, Value>,
    line: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Some(_) => {
            errors.push(FieldError::line(
                line,
                "id",
                "must be a non-empty string or an integer",
            ));
            None
        }
    }
}

fn parse_item(
    object: &Map<String, Value>,
    line: usize,
    errors: &mut Vec<FieldError>,
) -> Option<Item> {
    let before = errors.len();
    let mut fail =
        |field: &str, message: String| errors.push(FieldError::line(line, field, message));
    let prompt = match object.get("prompt") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            fail("prompt", "must be a string".into());
            None
        }
        None => {
            fail("prompt", "is required".into());
            None
        }
    };
    let tags = parse_tags(object.get("tags"), &mut fail);
    let has_choices = object.contains_key("choices") || object.contains_key("answer");
    let has_target = object.contains_key("target") || object.contains_key("targets");
    let item = match (has_choices, has_target) {
        (true, true) => {
            fail(
                "choices",
                "a row has either choices/answer (multiple choice) or target/targets (generation), not both"
                    .into(),
            );
            None
        }
        (false, false) => {
            fail(
                "choices",
                "a row needs choices and answer (multiple choice) or target/targets (generation)"
                    .into(),
            );
            None
        }
        (true, false) => {
            let choices = parse_choices(object.get("choices"), &mut fail);
            let answer = match (object.get("answer"), &choices) {
                (None, _) => {
                    fail("answer", "is required with choices".into());
                    None
                }
                (Some(Value::Number(n)), Some(choices)) => match n.as_u64() {
                    Some(a) if (a as usize) < choices.len() => Some(a as usize),
                    _ => {
                        fail(
                            "answer",
                            format!(
                                "must be an index from 0 to {} (the row has {} choices)",
                                choices.len() - 1,
                                choices.len()
                            ),
                        );
                        None
                    }
                },
                (Some(Value::Number(_)), None) => None,
                (Some(_), _) => {
                    fail("answer", "must be an integer index into choices".into());
                    None
                }
            };
            match (prompt.clone(), choices, answer) {
                (Some(prompt), Some(choices), Some(answer)) => Some(Item::MultipleChoice {
                    prompt,
                    choices,
                    answer,
                    tags: tags.clone().unwrap_or_default(),
                }),
                _ => None,
            }
        }
        (false, true) => {
            let targets = match (object.get("target"), object.get("targets")) {
                (Some(_), Some(_)) => {
                    fail("targets", "give target or targets, not both".into());
                    None
                }
                (Some(Value::String(t)), None) => Some(vec![t.clone()]),
                (Some(_), None) => {
                    fail("target", "must be a string".into());
                    None
                }
                (None, Some(Value::Array(list)))
                    if !list.is_empty() && list.iter().all(Value::is_string) =>
                {
                    Some(
                        list.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect(),
                    )
                }
                _ => {
                    fail("targets", "must be a non-empty list of strings".into());
                    None
                }
            };
            match (prompt.clone(), targets) {
                (Some(prompt), Some(targets)) => Some(Item::Generation {
                    prompt,
                    targets,
                    tags: tags.clone().unwrap_or_default(),
                }),
                _ => None,
            }
        }
    };
    if errors.len() > before { None } else { item }
}

fn parse_choices(
    value: Option<&Value>,
    fail: &mut impl FnMut(&str, String),
) -> Option<Vec<String>> {
    match value {
        Some(Value::Array(list)) if list.len() >= 2 && list.iter().all(Value::is_string) => Some(
            list.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        ),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            fail(
                "choices",
                format!("needs at least 2 choices, has {}", list.len()),
            );
            None
        }
        None => {
            fail("choices", "is required with answer".into());
            None
        }
        Some(_) => {
            fail("choices", "must be a list of strings".into());
            None
        }
    }
}

fn parse_tags(
    value: Option<&Value>,
    fail: &mut impl FnMut(&str, String),
) -> Option<BTreeMap<String, String>> {
    let object = match value {
        None | Some(Value::Null) => return Some(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => {
            fail("tags", "must be an object of string values".into());
            return None;
        }
    };
    let mut tags = BTreeMap::new();
    for (key, value) in object {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                fail(
                    &format!("tags.{key}"),
                    "must be a string, number or boolean".into(),
                );
                return None;
            }
        };
        if key.contains('=') {
            fail(
                &format!("tags.{key}"),
                "a tag key cannot contain '='".into(),
            );
            return None;
        }
        tags.insert(key.clone(), text);
    }
    Some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(body: &str) -> Vec<(Option<usize>, String)> {
        parse_jsonl(body.as_bytes())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.field))
            .collect()
    }

    #[test]
    fn multiple_choice_rows_are_normalised() {
        let body = "{\"id\": \"q1\", \"prompt\": \"2+2=\", \"choices\": [\"3\", \"4\"], \"answer\": 1, \"tags\": {\"level\": 1}}\n\n{\"prompt\": \"x\", \"choices\": [\"a\", \"b\", \"c\"], \"answer\": 0, \"extra\": true}\n";
        let parsed = parse_jsonl(body.as_bytes()).unwrap();
        assert_eq!(parsed.kind, DatasetKind::MultipleChoice);
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].id, "q1");
        assert_eq!(parsed.rows[1].id, "3", "default id is the line number");
        assert_eq!(parsed.rows[1].idx, 1);
        let item: Item = serde_json::from_value(parsed.rows[0].body.clone()).unwrap();
        assert_eq!(
            item,
            Item::MultipleChoice {
                prompt: "2+2=".into(),
                choices: vec!["3".into(), "4".into()],
                answer: 1,
                tags: [("level".to_string(), "1".to_string())].into(),
            }
        );
        assert_eq!(parsed.sha256.len(), 64);
    }

    #[test]
    fn generation_rows_take_target_or_targets() {
        let body = "{\"prompt\": \"a\", \"target\": \"b\"}\n{\"id\": 7, \"prompt\": \"c\", \"targets\": [\"d\", \"e\"]}";
        let parsed = parse_jsonl(body.as_bytes()).unwrap();
        assert_eq!(parsed.kind, DatasetKind::Generation);
        let item: Item = serde_json::from_value(parsed.rows[1].body.clone()).unwrap();
        assert!(matches!(item, Item::Generation { ref targets, .. } if targets.len() == 2));
        assert_eq!(parsed.rows[1].id, "7");
    }

    #[test]
    fn every_bad_line_is_reported_with_its_field() {
        let body = [
            r#"{"id": "a", "prompt": "p", "choices": ["x", "y"], "answer": 1}"#,
            r#"{"id": "b", "prompt": "p", "choices": ["x", "y"], "answer": 2}"#,
            r#"{"id": "a", "prompt": "p", "choices": ["x", "y"], "answer": 0}"#,
            r#"{"prompt": "p", "choices": ["x", "y"]"#,
            r#"{"prompt": 3, "choices": ["x", "y"], "answer": 0}"#,
            r#"{"prompt": "p", "target": "t"}"#,
            r#"[1, 2]"#,
            r#"{"prompt": "p", "choices": ["x"], "answer": 0}"#,
            r#"{"prompt": "p", "choices": ["x", "y"], "answer": "1"}"#,
            r#"{"prompt": "p"}"#,
            r#"{"prompt": "p", "choices": ["x", "y"], "answer": 0, "tags": {"k": [1]}}"#,
        ]
        .join("\n");
        assert_eq!(
            errors_of(&body),
            vec![
                (Some(2), "answer".into()),
                (Some(3), "id".into()),
                (Some(4), "(line)".into()),
                (Some(5), "prompt".into()),
                (Some(6), "target".into()),
                (Some(7), "(line)".into()),
                (Some(8), "choices".into()),
                (Some(9), "answer".into()),
                (Some(10), "choices".into()),
                (Some(11), "tags.k".into()),
            ]
        );
    }

    #[test]
    fn invalid_utf8_and_empty_files_are_refused() {
        let mut body = br#"{"prompt": "p", "target": "t"}"#.to_vec();
        body.extend_from_slice(b"\n{\"prompt\": \"\xff\", \"target\": \"t\"}");
        let errors = parse_jsonl(&body).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(2));
        assert!(errors[0].message.contains("UTF-8"));

        let errors = parse_jsonl(b"\n  \n").unwrap_err();
        assert_eq!(errors[0].field, "body");
        assert!(parse_jsonl(b"").is_err());
    }
}
