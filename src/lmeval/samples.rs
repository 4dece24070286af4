//! lm-evaluation-harness `samples_<task>_<date>.jsonl` files (`--log_samples`), parsed strictly:
//! one line per (document, filter), responses stringified by the harness (`["-4.12", "False"]`).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::DatasetKind;
use crate::validation::{FieldError, NUL_MESSAGE, json_lines};

/// The most problems one upload reports.
const MAX_ERRORS: usize = 100;

/// What the harness asked the model and what it answered, for one (document, filter).
#[derive(Debug, Clone, PartialEq)]
pub enum Responses {
    /// `loglikelihood` requests, one per choice: (context, continuation), the summed
    /// log-probability and whether the continuation was the greedy one.
    Loglikelihood {
        requests: Vec<(String, String)>,
        loglikelihoods: Vec<f64>,
        is_greedy: Vec<bool>,
    },
    /// One `generate_until` request: the rendered context, its generation kwargs, the raw
    /// output and the output after the line's filter.
    Generation {
        context: String,
        generation_kwargs: Map<String, Value>,
        output: String,
        filtered: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplesKind {
    MultipleChoice,
    Generation,
}

impl SamplesKind {
    pub fn as_str(self) -> &'static str {
        self.dataset_kind().as_str()
    }

    /// The dataset kind of the same task.
    pub fn dataset_kind(self) -> DatasetKind {
        match self {
            Self::MultipleChoice => DatasetKind::MultipleChoice,
            Self::Generation => DatasetKind::Generation,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// 1-based line in the file.
    pub line: usize,
    pub doc_id: i64,
    pub doc: Map<String, Value>,
    /// `doc_to_target` as the harness recorded it (a string: an index or the answer text).
    pub target: String,
    pub responses: Responses,
    pub filter: String,
    /// The per-sample values of the metrics the line names (numbers only; a metric whose
    /// per-sample value is not a number, such as BLEU's (reference, prediction) pair, is absent).
    pub metrics: BTreeMap<String, f64>,
    pub doc_hash: String,
    pub prompt_hash: String,
    pub target_hash: String,
}

impl Sample {
    /// For multiple choice: the gold index, from a numeric target or a target equal to a choice.
    pub fn gold_index(&self) -> Option<usize> {
        let Responses::Loglikelihood { requests, .. } = &self.responses else {
            return None;
        };
        if let Ok(index) = self.target.trim().parse::<usize>() {
            return (index < requests.len()).then_some(index);
        }
        requests
            .iter()
            .position(|(_, choice)| choice.trim() == self.target.trim())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplesFile {
    pub kind: SamplesKind,
    /// The filters present, in the order first seen (`none` for multiple choice).
    pub filters: Vec<String>,
    /// Metric names the lines carry, in the order first seen.
    pub metrics: Vec<String>,
    pub samples: Vec<Sample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Argument {
    arg_0: Value,
    arg_1: Value,
}

/// The fields every line has; the rest are per-sample metric values.
const KNOWN: [&str; 11] = [
    "doc_id",
    "doc",
    "target",
    "arguments",
    "resps",
    "filtered_resps",
    "filter",
    "metrics",
    "doc_hash",
    "prompt_hash",
    "target_hash",
];

struct LineErrors<'a> {
    line: usize,
    errors: &'a mut Vec<FieldError>,
    before: usize,
}

impl LineErrors<'_> {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors
            .push(FieldError::line(self.line, field, message.into()));
    }

    fn clean(&self) -> bool {
        self.errors.len() == self.before
    }
}

/// Parses a whole samples file; every bad line is named (up to 100 problems).
pub fn parse_samples(body: &[u8]) -> Result<SamplesFile, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut kind: Option<(SamplesKind, usize)> = None;
    let mut filters: Vec<String> = Vec::new();
    let mut metrics: Vec<String> = Vec::new();
    let mut first_line: HashMap<(i64, String), usize> = HashMap::new();

    for (line, parsed) in json_lines(body) {
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let object = match parsed {
            Ok(object) => object,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let before = errors.len();
        let mut at = LineErrors {
            line,
            errors: &mut errors,
            before,
        };
        let Some(sample) = parse_line(object, &mut at) else {
            continue;
        };
        let this_kind = match sample.responses {
            Responses::Loglikelihood { .. } => SamplesKind::MultipleChoice,
            Responses::Generation { .. } => SamplesKind::Generation,
        };
        match kind {
            None => kind = Some((this_kind, line)),
            Some((first, first_at)) if first != this_kind => {
                at.add(
                    "resps",
                    format!(
                        "a {} response, but line {first_at} holds {} responses (one task per file)",
                        this_kind.as_str(),
                        first.as_str()
                    ),
                );
                continue;
            }
            Some(_) => {}
        }
        let key = (sample.doc_id, sample.filter.clone());
        if let Some(first) = first_line.get(&key) {
            at.add(
                "doc_id",
                format!(
                    "doc_id {} with filter {:?} is already on line {first}",
                    sample.doc_id, sample.filter
                ),
            );
            continue;
        }
        if !at.clean() {
            continue;
        }
        first_line.insert(key, line);
        if !filters.contains(&sample.filter) {
            filters.push(sample.filter.clone());
        }
        for name in sample.metrics.keys() {
            if !metrics.contains(name) {
                metrics.push(name.clone());
            }
        }
        samples.push(sample);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some((kind, _)) = kind else {
        return Err(vec![FieldError::field(
            "(file)",
            "holds no samples: pass a samples_<task>_<date>.jsonl file written with --log_samples",
        )]);
    };
    Ok(SamplesFile {
        kind,
        filters,
        metrics,
        samples,
    })
}

fn parse_line(mut object: Map<String, Value>, at: &mut LineErrors) -> Option<Sample> {
    for name in KNOWN {
        if !object.contains_key(name) {
            at.add(
                name,
                "is missing (is this an lm-evaluation-harness samples file?)",
            );
        }
    }
    if !at.clean() {
        return None;
    }
    let mut take = |name: &str| object.remove(name).unwrap_or(Value::Null);
    let doc_id = match take("doc_id") {
        Value::Number(n) if n.as_i64().is_some_and(|v| v >= 0) => n.as_i64(),
        _ => {
            at.add("doc_id", "must be a non-negative integer");
            None
        }
    };
    let doc = match take("doc") {
        Value::Object(doc) => Some(doc),
        _ => {
            at.add("doc", "must be an object (the processed document)");
            None
        }
    };
    let target = match take("target") {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => {
            at.add("target", "must be a string");
            None
        }
    };
    let filter = string(take("filter"), "filter", at);
    let hashes = ["doc_hash", "prompt_hash", "target_hash"].map(|name| {
        let value = string(take(name), name, at)?;
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(value)
        } else {
            at.add(name, "must be a hex SHA-256");
            None
        }
    });
    let names: Vec<String> = match take("metrics") {
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => {
            at.add("metrics", "must be a list of metric names");
            Vec::new()
        }
    };
    let arguments = take("arguments");
    let resps = take("resps");
    let filtered = take("filtered_resps");
    let responses = parse_responses(arguments, resps, filtered, at);

    let mut values = BTreeMap::new();
    for name in &names {
        match object.get(name) {
            None => at.add(name.clone(), "is listed in `metrics` but has no value"),
            Some(Value::Number(n)) => {
                values.insert(name.clone(), n.as_f64().unwrap_or(f64::NAN));
            }
            // A per-sample value that the metric aggregates later (bleu's pair, ...).
            Some(_) => {}
        }
    }
    let [doc_hash, prompt_hash, target_hash] = hashes;
    if !at.clean() {
        return None;
    }
    Some(Sample {
        line: at.line,
        doc_id: doc_id?,
        doc: doc?,
        target: target?,
        responses: responses?,
        filter: filter?,
        metrics: values,
        doc_hash: doc_hash?,
        prompt_hash: prompt_hash?,
        target_hash: target_hash?,
    })
}

fn string(value: Value, field: &str, at: &mut LineErrors) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => {
            at.add(field, NUL_MESSAGE);
            None
        }
        Value::String(s) => Some(s),
        _ => {
            at.add(field, "must be a string");
            None
        }
    }
}

/// `arguments` is `{"gen_args_0": {"arg_0": ..., "arg_1": ...}, ...}`, one entry per request.
fn requests(arguments: Value, at: &mut LineErrors) -> Option<Vec<Argument>> {
    let Value::Object(map) = arguments else {
        at.add(
            "arguments",
            "must be an object of gen_args_N entries (lm-eval 0.4.x)",
        );
        return None;
    };
    let mut out = Vec::with_capacity(map.len());
    for n in 0..map.len() {
        let key = format!("gen_args_{n}");
        let Some(value) = map.get(&key) else {
            at.add(
                "arguments",
                format!("has no {key} (keys must run from gen_args_0)"),
            );
            return None;
        };
        match serde_json::from_value::<Argument>(value.clone()) {
            Ok(argument) => out.push(argument),
            Err(e) => {
                at.add(format!("arguments.{key}"), e.to_string());
                return None;
            }
        }
    }
    if out.is_empty() {
        at.add("arguments", "holds no request");
        return None;
    }
    Some(out)
}

/// `["-4.12", "False"]`: a stringified (log-likelihood, is_greedy) pair.
fn loglikelihood(value: &Value) -> Option<(f64, bool)> {
    let [Value::String(ll), Value::String(greedy)] = value.as_array()?.as_slice() else {
        return None;
    };
    let ll: f64 = ll.parse().ok().filter(|v: &f64| !v.is_nan())?;
    let greedy = match greedy.as_str() {
        "True" => true,
        "False" => false,
        _ => return None,
    };
    Some((ll, greedy))
}

fn parse_responses(
    arguments: Value,
    resps: Value,
    filtered: Value,
    at: &mut LineErrors,
) -> Option<Responses> {
    let requests = requests(arguments, at)?;
    let (Value::Array(resps), Value::Array(filtered)) = (resps, filtered) else {
        at.add("resps", "resps and filtered_resps must be lists");
        return None;
    };
    if resps.len() != requests.len() || filtered.len() != requests.len() {
        at.add(
            "filtered_resps",
            format!(
                "{} requests but {} resps and {} filtered_resps",
                requests.len(),
                resps.len(),
                filtered.len()
            ),
        );
        return None;
    }
    match &requests[0].arg_1 {
        Value::String(_) => {
            let mut pairs = Vec::with_capacity(requests.len());
            let mut loglikelihoods = Vec::with_capacity(requests.len());
            let mut is_greedy = Vec::with_capacity(requests.len());
            for (i, (request, response)) in requests.into_iter().zip(&filtered).enumerate() {
                let (Value::String(context), Value::String(continuation)) =
                    (request.arg_0, request.arg_1)
                else {
                    at.add(
                        format!("arguments.gen_args_{i}"),
                        "a loglikelihood request is (context, continuation), two strings",
                    );
                    return None;
                };
                let Some((ll, greedy)) = loglikelihood(response) else {
                    at.add(
                        format!("filtered_resps[{i}]"),
                        "must be a stringified (log-likelihood, is_greedy) pair like [\"-4.12\", \"False\"]",
                    );
                    return None;
                };
                if context.contains('\0') || continuation.contains('\0') {
                    at.add(format!("arguments.gen_args_{i}"), NUL_MESSAGE);
                    return None;
                }
                pairs.push((context, continuation));
                loglikelihoods.push(ll);
                is_greedy.push(greedy);
            }
            Some(Responses::Loglikelihood {
                requests: pairs,
                loglikelihoods,
                is_greedy,
            })
        }
        Value::Object(_) => {
            if requests.len() != 1 {
                at.add(
                    "arguments",
                    format!(
                        "{} generate_until requests; one per line is supported (repeats: 1)",
                        requests.len()
                    ),
                );
                return None;
            }
            let request = requests.into_iter().next()?;
            let (Value::String(context), Value::Object(generation_kwargs)) =
                (request.arg_0, request.arg_1)
            else {
                at.add(
                    "arguments.gen_args_0",
                    "a generate_until request is (context, generation kwargs)",
                );
                return None;
            };
            if context.contains('\0') {
                at.add("arguments.gen_args_0.arg_0", NUL_MESSAGE);
                return None;
            }
            let output = match resps.into_iter().next() {
                Some(Value::Array(items)) => match items.as_slice() {
                    [Value::String(text)] => text.clone(),
                    _ => {
                        at.add("resps[0]", "must hold one generated string");
                        return None;
                    }
                },
                _ => {
                    at.add("resps[0]", "must be a list holding the generated string");
                    return None;
                }
            };
            let filtered = match filtered.into_iter().next() {
                Some(Value::String(text)) => text,
                _ => {
                    at.add("filtered_resps[0]", "must be the filtered output, a string");
                    return None;
                }
            };
            Some(Responses::Generation {
                context,
                generation_kwargs,
                output,
                filtered,
            })
        }
        _ => {
            at.add(
                "arguments.gen_args_0.arg_1",
                "must be a continuation (string) or generation kwargs (object)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(side: &str, task: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/lmeval/{side}/samples_{task}.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn reads_the_harness_multiple_choice_file() {
        let file = parse_samples(&fixture("old", "muscle_mc")).unwrap();
        assert_eq!(file.kind, SamplesKind::MultipleChoice);
        assert_eq!(file.filters, ["none"]);
        assert_eq!(file.metrics, ["acc", "acc_norm"]);
        assert_eq!(file.samples.len(), 24);
        let first = &file.samples[0];
        assert_eq!(first.doc_id, 0);
        assert_eq!(first.doc["activity_label"], "Cooking");
        let Responses::Loglikelihood {
            requests,
            loglikelihoods,
            ..
        } = &first.responses
        else {
            panic!("multiple choice")
        };
        assert_eq!(requests.len(), 4);
        assert_eq!(requests[1].1, " tree");
        assert!(
            requests[0]
                .0
                .ends_with("Cooking: What goes with the tree?\nAnswer:")
        );
        assert_eq!(loglikelihoods[1], -23.95610237121582);
        assert_eq!(first.gold_index(), Some(1));
        // The recorded acc is the argmax of the recorded log-likelihoods against the gold.
        for sample in &file.samples {
            let Responses::Loglikelihood { loglikelihoods, .. } = &sample.responses else {
                unreachable!()
            };
            let best = (0..loglikelihoods.len())
                .max_by(|&a, &b| loglikelihoods[a].total_cmp(&loglikelihoods[b]))
                .unwrap();
            let acc = f64::from(u8::from(Some(best) == sample.gold_index()));
            assert_eq!(sample.metrics["acc"], acc, "line {}", sample.line);
        }
    }

    #[test]
    fn reads_the_harness_generation_file_with_its_filters() {
        let file = parse_samples(&fixture("old", "muscle_gsm")).unwrap();
        assert_eq!(file.kind, SamplesKind::Generation);
        assert_eq!(file.filters, ["strict-match", "flexible-extract"]);
        assert_eq!(file.samples.len(), 32);
        let Responses::Generation {
            generation_kwargs,
            filtered,
            ..
        } = &file.samples[0].responses
        else {
            panic!("generation")
        };
        assert_eq!(generation_kwargs["max_gen_toks"], 24);
        assert_eq!(filtered, "[invalid]");
        let samsum = parse_samples(&fixture("new", "muscle_samsum")).unwrap();
        assert_eq!(samsum.metrics, ["rouge1"]);
    }

    #[test]
    fn every_bad_line_is_named() {
        let good = fixture("old", "muscle_mc");
        let first = std::str::from_utf8(&good).unwrap().lines().next().unwrap();
        let mut v: Value = serde_json::from_str(first).unwrap();
        let mut bad_ll = v.clone();
        bad_ll["filtered_resps"][0] = serde_json::json!(["-4.1", "maybe"]);
        let mut no_hash = v.clone();
        no_hash.as_object_mut().unwrap().remove("prompt_hash");
        v["doc_id"] = serde_json::json!(-3);
        let body = format!(
            "{first}\n{bad_ll}\nnot json\n{no_hash}\n{v}\n{first}\n",
            bad_ll = bad_ll,
            no_hash = no_hash,
            v = v
        );
        let errors = parse_samples(body.as_bytes()).unwrap_err();
        let at: Vec<(Option<usize>, &str)> =
            errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            at,
            [
                (Some(2), "filtered_resps[0]"),
                (Some(3), "(line)"),
                (Some(4), "prompt_hash"),
                (Some(5), "doc_id"),
                (Some(6), "doc_id"),
            ],
            "{errors:?}"
        );
        assert!(errors[4].message.contains("already on line 1"));
        assert!(
            parse_samples(b"\n\n").unwrap_err()[0]
                .message
                .contains("no samples")
        );
    }
}
