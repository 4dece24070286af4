//! A samples file as a muscle dataset: the harness's rendered requests (few-shot examples and
//! task preprocessing included) become the prompts, so a model runs on exactly what lm-eval asked.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::samples::{Responses, parse_samples};
use crate::dataset::{Item, ParsedDataset, Rows};
use crate::store::DatasetRow;
use crate::validation::FieldError;

/// Turns the samples into dataset rows, one per document (the lines of other filters repeat
/// the same request). `slice_by` names `doc` fields that become the rows' tags.
pub fn samples_dataset(body: &[u8], slice_by: &[String]) -> Result<ParsedDataset, Vec<FieldError>> {
    let file = parse_samples(body)?;
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for sample in &file.samples {
        if !seen.insert(sample.doc_id) {
            continue;
        }
        let mut tags = BTreeMap::new();
        for field in slice_by {
            match sample.doc.get(field) {
                None | Some(Value::Null) => errors.push(FieldError::line(
                    sample.line,
                    format!("doc.{field}"),
                    "is not in this document (named by slice_by)",
                )),
                Some(Value::String(s)) => {
                    tags.insert(field.clone(), s.clone());
                }
                Some(other) => {
                    tags.insert(field.clone(), other.to_string());
                }
            }
        }
        let item = match &sample.responses {
            Responses::Loglikelihood { requests, .. } => {
                let context = &requests[0].0;
                if requests.iter().any(|(c, _)| c != context) {
                    errors.push(FieldError::line(
                        sample.line,
                        "arguments",
                        "its requests have different contexts (a partial-evaluation task such \
                         as winogrande): compare the recorded runs instead of re-running them",
                    ));
                    continue;
                }
                // lm-eval's target_delimiter " " starts every continuation; muscle puts the
                // task's delimiter (" " by default) between prompt and choice.
                let Some(choices) = requests
                    .iter()
                    .map(|(_, c)| c.strip_prefix(' ').map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                else {
                    errors.push(FieldError::line(
                        sample.line,
                        "arguments",
                        "a continuation does not start with lm-eval's default target_delimiter \" \"",
                    ));
                    continue;
                };
                let Some(answer) = sample.gold_index() else {
                    errors.push(FieldError::line(
                        sample.line,
                        "target",
                        format!(
                            "{:?} is neither a choice index nor one of the {} choices",
                            sample.target,
                            choices.len()
                        ),
                    ));
                    continue;
                };
                Item::MultipleChoice {
                    prompt: context.clone(),
                    choices,
                    answer,
                    tags,
                }
            }
            Responses::Generation { context, .. } => Item::Generation {
                prompt: context.clone(),
                targets: vec![sample.target.clone()],
                tags,
            },
        };
        rows.push(DatasetRow::new(
            rows.len() as i64,
            sample.doc_id.to_string(),
            &item,
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let kind = file.kind.dataset_kind();
    // The same file with other slice_by fields is another dataset.
    let mut hash = Sha256::new();
    hash.update(body);
    hash.update(b"\0format=lm-eval\0slice_by=");
    hash.update(slice_by.join(",").as_bytes());
    Ok(ParsedDataset {
        kind,
        rows: Rows::Built(rows),
        sha256: hex::encode(hash.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DatasetKind;

    fn fixture(task: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/lmeval/old/samples_{task}.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn multiple_choice_rows_are_the_rendered_requests() {
        let parsed = samples_dataset(&fixture("muscle_mc"), &["activity_label".into()]).unwrap();
        assert_eq!(parsed.kind, DatasetKind::MultipleChoice);
        assert_eq!(parsed.rows.len(), 24);
        let rows = parsed.rows.iter().collect::<Vec<_>>();
        let item = rows[0].item().unwrap();
        let Item::MultipleChoice {
            prompt,
            choices,
            answer,
            tags,
        } = item
        else {
            panic!("multiple choice")
        };
        // Two few-shot examples, then the question.
        assert_eq!(prompt.matches("\n\n").count(), 2);
        assert!(prompt.ends_with("Cooking: What goes with the tree?\nAnswer:"));
        assert_eq!(choices[1], "tree");
        assert_eq!(answer, 1);
        assert_eq!(tags["activity_label"], "Cooking");
        assert_eq!(parsed.rows.iter().collect::<Vec<_>>()[0].id, "0");
    }

    #[test]
    fn generation_rows_are_one_per_document_whatever_the_filters() {
        let parsed = samples_dataset(&fixture("muscle_gsm"), &[]).unwrap();
        assert_eq!(parsed.kind, DatasetKind::Generation);
        assert_eq!(parsed.rows.len(), 16);
        let rows = parsed.rows.iter().collect::<Vec<_>>();
        let item = rows[3].item().unwrap();
        assert!(item.prompt().starts_with("Question: "));
        assert!(item.prompt().ends_with("\nAnswer:"));
    }

    #[test]
    fn an_unknown_slice_field_is_named_on_its_line() {
        let errors = samples_dataset(&fixture("muscle_mc"), &["nosuch".into()]).unwrap_err();
        assert_eq!(errors.len(), 24);
        assert_eq!(
            (errors[0].line, errors[0].field.as_str()),
            (Some(1), "doc.nosuch")
        );
        let a = samples_dataset(&fixture("muscle_mc"), &[]).unwrap().sha256;
        let b = samples_dataset(&fixture("muscle_mc"), &["activity_label".into()])
            .unwrap()
            .sha256;
        assert_ne!(a, b);
    }
}
