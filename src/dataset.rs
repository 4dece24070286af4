//! Dataset files: JSON lines of multiple-choice or generation rows, validated whole before
//! anything is stored.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::DatasetKind;
use crate::store::DatasetRow;
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
    pub rows: Rows,
    pub sha256: String,
}

/// A validated dataset's rows: either the lines of a muscle-format body, read again row by
/// row as they are stored (so a large upload never exists as a second, bigger copy), or rows
/// already built.
#[derive(Debug, Clone)]
pub enum Rows {
    Lines { body: Bytes, count: usize },
    Built(Vec<DatasetRow>),
}

/// A dataset row is stored as its item's compact JSON text.
impl DatasetRow {
    pub fn new(idx: i64, id: String, item: &Item) -> Self {
        let body = serde_json::value::to_raw_value(item).expect("an item has only string keys");
        Self::with_body(idx, id, body)
    }

    pub fn item(&self) -> serde_json::Result<Item> {
        serde_json::from_str(self.json())
    }
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Self::Lines { count, .. } => *count,
            Self::Built(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = DatasetRow> + Send + '_> {
        match self {
            Self::Built(rows) => Box::new(rows.iter().cloned()),
            Self::Lines { body, .. } => Box::new(
                crate::validation::json_lines(body)
                    .filter_map(|(line, parsed)| {
                        let object = parsed.ok()?;
                        let mut ignored = Vec::new();
                        let id = row_id(&object, line, &mut ignored);
                        let item = parse_item(&object, line, &mut ignored)?;
                        Some((id.unwrap_or_else(|| line.to_string()), item))
                    })
                    .enumerate()
                    .map(|(idx, (id, item))| DatasetRow::new(idx as i64, id, &item)),
            ),
        }
    }
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
    body: &Bytes,
    format: DatasetFormat,
    slice_by: &[String],
) -> Result<ParsedDataset, Vec<FieldError>> {
    match format {
        DatasetFormat::LmEval => crate::lmeval::samples_dataset(body, slice_by),
        DatasetFormat::Muscle if !slice_by.is_empty() => Err(vec![FieldError::field(
            "slice_by",
            "applies to format lm-eval; muscle rows carry their own tags",
        )]),
        DatasetFormat::Muscle => parse_jsonl(body.clone()),
    }
}

/// Validates every line of a JSONL body; any bad line rejects the whole file.
pub fn parse_jsonl(body: Bytes) -> Result<ParsedDataset, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut count = 0;
    let mut kind: Option<(DatasetKind, usize)> = None;
    let mut first_use = FirstUse::default();

    for (line, parsed) in crate::validation::json_lines(&body) {
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
            && let Some(first) = first_use.line_of(&body, id)
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
        if let Some(id) = &id {
            first_use.insert(id, line);
        }
        count += 1;
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some((kind, _)) = kind else {
        return Err(vec![FieldError::field("body", "the dataset has no rows")]);
    };
    Ok(ParsedDataset {
        kind,
        sha256: hex::encode(Sha256::digest(&body)),
        rows: Rows::Lines { body, count },
    })
}

/// Which line first used each explicit row id, held as 64-bit hashes rather than the ids (a
/// million ids would otherwise cost more than the upload). A hash seen before is confirmed
/// against the id on that line, read again; ids whose hash collides with another's are kept
/// whole.
#[derive(Default)]
struct FirstUse {
    by_hash: HashMap<u64, usize>,
    collided: HashMap<String, usize>,
}

impl FirstUse {
    fn hash(id: &str) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
    }

    /// The line that used `id` before, if one did.
    fn line_of(&self, body: &[u8], id: &str) -> Option<usize> {
        if let Some(line) = self.collided.get(id) {
            return Some(*line);
        }
        let line = *self.by_hash.get(&Self::hash(id))?;
        (id_on_line(body, line).as_deref() == Some(id)).then_some(line)
    }

    /// Records the first use of an id that [`Self::line_of`] did not find.
    fn insert(&mut self, id: &str, line: usize) {
        match self.by_hash.entry(Self::hash(id)) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(line);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(id.to_string(), line);
            }
        }
    }
}

/// The explicit id on a (1-based) line of the body.
fn id_on_line(body: &[u8], line: usize) -> Option<String> {
    let text = body.split(|&b| b == b'\n').nth(line - 1)?;
    let object: Map<String, Value> = serde_json::from_slice(text).ok()?;
    row_id(&object, line, &mut Vec::new())
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
        parse_jsonl(Bytes::copy_from_slice(body.as_bytes()))
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.field))
            .collect()
    }

    #[test]
    fn multiple_choice_rows_are_normalised() {
        let body = "{\"id\": \"q1\", \"prompt\": \"2+2=\", \"choices\": [\"3\", \"4\"], \"answer\": 1, \"tags\": {\"level\": 1}}\n\n{\"prompt\": \"x\", \"choices\": [\"a\", \"b\", \"c\"], \"answer\": 0, \"extra\": true}\n";
        let parsed = parse_jsonl(Bytes::copy_from_slice(body.as_bytes())).unwrap();
        assert_eq!(parsed.kind, DatasetKind::MultipleChoice);
        let rows = parsed.rows.iter().collect::<Vec<_>>();
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, "q1");
        assert_eq!(rows[1].id, "3", "default id is the line number");
        assert_eq!(rows[1].idx, 1);
        let item = rows[0].item().unwrap();
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
        let parsed = parse_jsonl(Bytes::copy_from_slice(body.as_bytes())).unwrap();
        assert_eq!(parsed.kind, DatasetKind::Generation);
        let rows = parsed.rows.iter().collect::<Vec<_>>();
        let item = rows[1].item().unwrap();
        assert!(matches!(item, Item::Generation { ref targets, .. } if targets.len() == 2));
        assert_eq!(rows[1].id, "7");
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
        let errors = parse_jsonl(body.into()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(2));
        assert!(errors[0].message.contains("UTF-8"));

        let errors = parse_jsonl(Bytes::from_static(b"\n  \n")).unwrap_err();
        assert_eq!(errors[0].field, "body");
        assert!(parse_jsonl(Bytes::new()).is_err());
    }

    #[test]
    fn ids_whose_hashes_collide_are_still_told_apart() {
        let body = br#"{"id": "a", "prompt": "p", "target": "t"}"#;
        // As if "b" hashed like "a": the index points "b" at line 1, whose id is "a".
        let mut first_use = FirstUse::default();
        first_use.by_hash.insert(FirstUse::hash("b"), 1);
        assert_eq!(first_use.line_of(body, "b"), None);
        first_use.insert("b", 3);
        assert_eq!(first_use.line_of(body, "b"), Some(3));
        assert_eq!(first_use.collided.len(), 1);
    }

    #[test]
    fn duplicate_ids_far_apart_name_the_first_line() {
        let mut body = String::new();
        for i in 0..5000 {
            body.push_str(&format!(
                "{{\"id\": {i}, \"prompt\": \"p\", \"target\": \"t\"}}\n"
            ));
        }
        body.push_str("{\"id\": \"17\", \"prompt\": \"p\", \"target\": \"t\"}\n");
        let errors = parse_jsonl(body.into()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(5001));
        assert!(
            errors[0].message.contains("first used on line 18"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn stored_rows_are_read_again_from_the_body_in_order() {
        let body = "{\"prompt\": \"a\", \"target\": \"b\"}\n\n{\"id\": \"x\", \"prompt\": \"c\", \"target\": \"d\", \"tags\": {\"k\": 2}}\n";
        let parsed = parse_jsonl(body.into()).unwrap();
        let rows: Vec<DatasetRow> = parsed.rows.iter().collect();
        assert_eq!(parsed.rows.len(), rows.len());
        assert_eq!((rows[0].idx, rows[0].id.as_str()), (0, "1"));
        assert_eq!((rows[1].idx, rows[1].id.as_str()), (1, "x"));
        assert_eq!(
            rows[1].json(),
            r#"{"prompt":"c","targets":["d"],"tags":{"k":"2"}}"#
        );
    }
}
