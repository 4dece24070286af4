use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::harness::check_regex;
use super::{
    DatasetRef, EndpointApi, ExactMatchRules, Extract, Preset, SamplingSpec, Side, check_name,
};
use crate::callback::CallbackSpec;
use crate::domain::{DatasetKind, SideName};
use crate::engine::Bos;
use crate::metrics::{GateCheck, validate_gate};
use crate::models::Resolver;
use crate::validation::{Errors, FieldError};

/// The body of POST /v1/evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// The model in production, or its run recorded elsewhere (`{"predictions": ID}`).
    pub old: Side,
    /// The candidate model, or its recorded run.
    pub new: Side,
    /// An uploaded dataset's id or name (`{"path": ...}` is accepted by `muscle eval` only).
    /// Not needed when a side is a recorded run: its recorded requests are the instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetRef>,
    pub task: TaskSpec,
    #[serde(default)]
    pub options: EvalOptions,
    /// Release gate: every check must pass for the report's verdict to pass.
    #[serde(default)]
    pub gate: Vec<GateCheck>,
    /// Called (a signed POST of this evaluation) when it ends; the server's allowed hosts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSpec {
    /// One scored continuation per choice; the prediction is the best summed log-probability.
    MultipleChoice {
        /// Put between the prompt and each choice.
        #[serde(default = "default_delimiter")]
        delimiter: String,
        #[serde(default)]
        score: McScore,
    },
    /// Greedy decoding, scored against the row's target(s); with `sampling`, also K sampled
    /// outputs per instance and side.
    Generation {
        #[serde(default = "default_max_new_tokens")]
        max_new_tokens: u32,
        /// Generation stops at the first of these; the output is cut before it.
        #[serde(default)]
        stop: Vec<String>,
        #[serde(default)]
        metric: GenerationMetric,
        /// A score change within this tolerance is a tie, not a flip.
        #[serde(default)]
        tolerance: f64,
        /// exact_match normalisation.
        #[serde(default)]
        ignore_case: bool,
        #[serde(default)]
        ignore_punctuation: bool,
        #[serde(default)]
        ignore_whitespace: bool,
        /// Recorded runs: which lm-eval filter's answers to compare (`strict-match`,
        /// `flexible-extract`, ...), needed when a run holds several; with the gsm8k preset it
        /// also picks the answer extraction.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
        /// The answer compared: a regex filter applied to the output (lm-eval's filters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extract: Option<Extract>,
        /// exact_match as lm-eval's: overrides ignore_case, ignore_punctuation and
        /// ignore_whitespace above and adds regexes_to_ignore.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exact_match: Option<ExactMatchRules>,
        /// Greedy decoding never repeats an n-gram of this size of prompt + output
        /// (transformers' NoRepeatNGramLogitsProcessor); 0: off.
        #[serde(default)]
        no_repeat_ngram_size: u32,
        /// `gsm8k` or `samsum`: fills in what the fields above leave unset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preset: Option<Preset>,
        /// Also draw `samples` outputs per instance and side at this temperature, top-p and
        /// top-k (transformers' order), scored like the greedy one: the report's `sampled`
        /// section and each instance's verdict.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sampling: Option<SamplingSpec>,
    },
}

/// The effective rules of a generation task, presets applied.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRules {
    pub max_new_tokens: u32,
    pub stop: Vec<String>,
    pub metric: GenerationMetric,
    pub extract: Option<Extract>,
    pub exact_match: ExactMatchRules,
    pub no_repeat_ngram_size: u32,
    pub sampling: Option<SamplingSpec>,
}

impl TaskSpec {
    /// None for multiple choice.
    pub fn generation_rules(&self) -> Option<GenerationRules> {
        let Self::Generation {
            max_new_tokens,
            stop,
            metric,
            ignore_case,
            ignore_punctuation,
            ignore_whitespace,
            filter,
            extract,
            exact_match,
            no_repeat_ngram_size,
            preset,
            sampling,
            ..
        } = self
        else {
            return None;
        };
        let flags = ExactMatchRules {
            ignore_case: *ignore_case,
            ignore_punctuation: *ignore_punctuation,
            ignore_whitespace: *ignore_whitespace,
            regexes_to_ignore: Vec::new(),
        };
        Some(GenerationRules {
            max_new_tokens: *max_new_tokens,
            stop: match preset {
                Some(p) if stop.is_empty() => p.stop(),
                _ => stop.clone(),
            },
            metric: match preset {
                Some(Preset::Samsum) => GenerationMetric::Rouge1,
                _ => *metric,
            },
            extract: extract
                .clone()
                .or_else(|| preset.and_then(|p| p.extract(filter.as_deref()))),
            exact_match: exact_match
                .clone()
                .or_else(|| preset.map(Preset::exact_match))
                .unwrap_or(flags),
            no_repeat_ngram_size: match preset {
                Some(p) if *no_repeat_ngram_size == 0 => p.no_repeat_ngram_size(),
                _ => *no_repeat_ngram_size,
            },
            sampling: *sampling,
        })
    }

    /// The task's sampling, if it draws outputs.
    pub fn sampling(&self) -> Option<&SamplingSpec> {
        match self {
            Self::Generation { sampling, .. } => sampling.as_ref(),
            Self::MultipleChoice { .. } => None,
        }
    }

    pub fn dataset_kind(&self) -> DatasetKind {
        match self {
            Self::MultipleChoice { .. } => DatasetKind::MultipleChoice,
            Self::Generation { .. } => DatasetKind::Generation,
        }
    }
}

fn default_delimiter() -> String {
    " ".into()
}

fn default_max_new_tokens() -> u32 {
    64
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum McScore {
    /// argmax of the summed log-probabilities.
    #[default]
    Acc,
    /// argmax of the log-probability per character of the choice.
    AccNorm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum GenerationMetric {
    #[default]
    #[serde(rename = "exact_match")]
    ExactMatch,
    #[serde(rename = "rouge1")]
    Rouge1,
    #[serde(rename = "rougeL")]
    RougeL,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvalOptions {
    /// Largest number of sequences in one forward pass.
    pub batch_size: u32,
    /// Largest number of tokens (padding included) in one forward pass.
    pub max_batch_tokens: u32,
    /// `"auto"` (default): BOS as the tokenizer's post-processor adds it, as
    /// lm-evaluation-harness 0.4.10+ does; `true`: always the BOS id first; `false`: never.
    /// A prompt that already starts with the BOS token never gets a second one.
    pub add_bos: AddBos,
    /// Also run the old model a second time in another batch size and order, and report its
    /// self-flip rate next to nfr.
    pub noise_floor: bool,
    /// Instances per shard (the unit that one worker claims); the server's default when absent.
    pub shard_size: Option<u32>,
    /// Seed of the paired bootstrap.
    pub seed: u64,
    pub bootstrap_resamples: u32,
    /// Slices smaller than this are marked `small`.
    pub min_slice_size: u64,
    /// Most slices a report lists (1 to 1000); beyond it the worst by nfr and the largest are
    /// kept and the rest counted in `slices_omitted`.
    pub max_slices: u32,
    /// Recorded runs: `doc` fields whose values become the instances' tags (slices).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slice_by: Vec<String>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            max_batch_tokens: 8192,
            add_bos: AddBos::default(),
            noise_floor: false,
            shard_size: None,
            seed: 0,
            bootstrap_resamples: 1000,
            min_slice_size: 30,
            max_slices: crate::metrics::DEFAULT_MAX_SLICES as u32,
            slice_by: Vec::new(),
        }
    }
}

/// `options.add_bos`: `"auto"`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AddBos {
    /// true: always the BOS id first; false: never.
    Flag(bool),
    /// "auto": what the tokenizer's post-processor adds.
    Policy(BosPolicy),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BosPolicy {
    Auto,
}

impl Default for AddBos {
    fn default() -> Self {
        Self::Policy(BosPolicy::Auto)
    }
}

impl AddBos {
    pub fn engine(self) -> Bos {
        match self {
            Self::Flag(true) => Bos::Always,
            Self::Flag(false) => Bos::Never,
            Self::Policy(BosPolicy::Auto) => Bos::Auto,
        }
    }
}

impl EvaluationSpec {
    pub fn side(&self, side: SideName) -> &Side {
        match side {
            SideName::Old => &self.old,
            SideName::New => &self.new,
        }
    }

    pub fn side_mut(&mut self, side: SideName) -> &mut Side {
        match side {
            SideName::Old => &mut self.old,
            SideName::New => &mut self.new,
        }
    }

    /// Every check that needs no database: fields, bounds, the gate, the model folders.
    pub fn check(&self, resolver: &Resolver) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        check_name(&self.name, &mut errors);
        self.old.check("old", resolver, &mut errors);
        self.new.check("new", resolver, &mut errors);
        check_task(&self.task, "task", &mut errors);
        for side in [SideName::Old, SideName::New] {
            if let Some(endpoint) = self.side(side).endpoint()
                && endpoint.api == EndpointApi::Chat
                && matches!(self.task, TaskSpec::MultipleChoice { .. })
            {
                errors.add(
                    format!("{}.endpoint.api", side.as_str()),
                    "\"chat\" answers carry no log-probabilities of the prompt, which multiple \
                     choice scores; use \"completions\" (token ids with echo), or a generation task",
                );
            }
        }
        let options = &self.options;
        if !(1..=1024).contains(&options.batch_size) {
            errors.add("options.batch_size", "must be from 1 to 1024");
        }
        if options.max_batch_tokens < 16 {
            errors.add("options.max_batch_tokens", "must be at least 16");
        }
        if options.shard_size == Some(0) {
            errors.add("options.shard_size", "must be at least 1");
        }
        if options.bootstrap_resamples > 100_000 {
            errors.add("options.bootstrap_resamples", "must be at most 100000");
        }
        if !(1..=MAX_SLICES_LIMIT).contains(&options.max_slices) {
            errors.add(
                "options.max_slices",
                format!("must be from 1 to {MAX_SLICES_LIMIT}"),
            );
        }
        if options.slice_by.len() > MAX_SLICE_BY {
            errors.add("options.slice_by", format!("at most {MAX_SLICE_BY} fields"));
        }
        check_gate(&self.gate, "gate", &mut errors);
        self.check_sampling(&mut errors);
        errors.into_result(())
    }

    /// Sampling needs both sides run (recorded runs hold one output per instance), and gate
    /// checks on `sampled.*` need sampling.
    fn check_sampling(&self, errors: &mut Errors) {
        if self.task.sampling().is_some() {
            for side in [SideName::Old, SideName::New] {
                if self.side(side).predictions().is_some() {
                    errors.add(
                        "task.sampling",
                        format!(
                            "{} is a recorded run, which holds one output per instance: sampled \
                             outputs need both sides run here (a model folder) or served (an \
                             endpoint)",
                            side.as_str()
                        ),
                    );
                }
            }
            return;
        }
        for (i, check) in self.gate.iter().enumerate() {
            if check.metric.starts_with("sampled.") {
                errors.add(
                    format!("gate[{i}].metric"),
                    format!(
                        "{} needs sampled outputs: give the generation task a \"sampling\" \
                         object",
                        check.metric
                    ),
                );
            }
        }
    }
}

/// Upper bound of `options.max_slices`.
const MAX_SLICES_LIMIT: u32 = 1000;
const MAX_SLICE_BY: usize = 16;
/// Entries of a release gate.
pub const MAX_GATE_CHECKS: usize = 100;
const MAX_STOP_STRINGS: usize = 32;
const MAX_REGEXES: usize = 32;
/// Characters of one regular expression.
const MAX_REGEX_CHARS: usize = 1000;

pub(crate) fn check_task(task: &TaskSpec, field: &str, errors: &mut Errors) {
    if let TaskSpec::Generation {
        max_new_tokens,
        stop,
        tolerance,
        sampling,
        ..
    } = task
    {
        if let Some(sampling) = sampling {
            sampling.check(&format!("{field}.sampling"), errors);
        }
        if !(1..=4096).contains(max_new_tokens) {
            errors.add(format!("{field}.max_new_tokens"), "must be from 1 to 4096");
        }
        if stop.iter().any(String::is_empty) {
            errors.add(format!("{field}.stop"), "stop strings must not be empty");
        }
        if stop.len() > MAX_STOP_STRINGS {
            errors.add(
                format!("{field}.stop"),
                format!("at most {MAX_STOP_STRINGS} stop strings"),
            );
        }
        if let Some(rules) = task.generation_rules() {
            if let Some(extract) = &rules.extract {
                check_bounded_regex(&extract.regex, &format!("{field}.extract.regex"), errors);
            }
            let ignored = &rules.exact_match.regexes_to_ignore;
            if ignored.len() > MAX_REGEXES {
                errors.add(
                    format!("{field}.exact_match.regexes_to_ignore"),
                    format!("at most {MAX_REGEXES} regular expressions"),
                );
            } else {
                for (i, pattern) in ignored.iter().enumerate() {
                    check_bounded_regex(
                        pattern,
                        &format!("{field}.exact_match.regexes_to_ignore[{i}]"),
                        errors,
                    );
                }
            }
            if rules.no_repeat_ngram_size > 16 {
                errors.add(
                    format!("{field}.no_repeat_ngram_size"),
                    "must be from 0 to 16",
                );
            }
        }
        if !tolerance.is_finite() || !(0.0..1.0).contains(tolerance) {
            errors.add(
                format!("{field}.tolerance"),
                "must be at least 0 and below 1",
            );
        }
    }
}

fn check_bounded_regex(pattern: &str, field: &str, errors: &mut Errors) {
    if pattern.chars().count() > MAX_REGEX_CHARS {
        errors.add(field, format!("at most {MAX_REGEX_CHARS} characters"));
    } else {
        check_regex(pattern, field, errors);
    }
}

pub(crate) fn check_gate(gate: &[GateCheck], field: &str, errors: &mut Errors) {
    if gate.len() > MAX_GATE_CHECKS {
        errors.add(field, format!("at most {MAX_GATE_CHECKS} checks"));
        return;
    }
    if let Err(gate_errors) = validate_gate(gate) {
        for error in gate_errors {
            errors.add(
                format!("{field}[{}].{}", error.index, error.field),
                error.message,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{GSM8K_FLEXIBLE, parse_body};

    fn models() -> (tempfile::TempDir, Resolver) {
        let root = tempfile::tempdir().unwrap();
        for name in ["old", "new"] {
            crate::spec::write_test_model(&root.path().join(name));
        }
        let resolver = Resolver::server(root.path());
        (root, resolver)
    }

    #[test]
    fn defaults_are_filled_in() {
        let spec: EvaluationSpec = parse_body(
            br#"{"old": {"model": "old"}, "new": {"model": "new"}, "dataset": "d", "task": {"type": "multiple_choice"}}"#,
        )
        .unwrap();
        assert_eq!(
            spec.task,
            TaskSpec::MultipleChoice {
                delimiter: " ".into(),
                score: McScore::Acc
            }
        );
        assert_eq!(spec.options, EvalOptions::default());
        let (_root, resolver) = models();
        spec.check(&resolver).unwrap();
    }

    #[test]
    fn every_bad_field_is_named() {
        let spec: EvaluationSpec = parse_body(
            br#"{"name": "", "old": {"model": "olde"}, "new": {"model": "new", "adapter": "../x"},
                "dataset": "d", "task": {"type": "generation", "max_new_tokens": 0, "stop": [""], "tolerance": 2},
                "options": {"batch_size": 0},
                "gate": [{"metric": "nfr", "max": 0.05}, {"metric": "nfrr", "max": 0.1}]}"#,
        )
        .unwrap();
        let (_root, resolver) = models();
        let fields: Vec<String> = spec
            .check(&resolver)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "name",
                "old.model",
                "new.adapter",
                "task.max_new_tokens",
                "task.stop",
                "task.tolerance",
                "options.batch_size",
                "gate[1].metric",
            ]
        );
    }

    #[test]
    fn presets_fill_in_what_is_left_unset_and_bad_regexes_are_named() {
        let spec: EvaluationSpec = parse_body(
            br#"{"old": {"model": "old"}, "new": {"model": "new"}, "dataset": "d",
                "task": {"type": "generation", "preset": "gsm8k", "filter": "flexible-extract"}}"#,
        )
        .unwrap();
        let rules = spec.task.generation_rules().unwrap();
        assert_eq!(rules.stop, ["Question:", "</s>", "<|im_end|>"]);
        let extract = rules.extract.unwrap();
        assert_eq!(
            (extract.regex.as_str(), extract.group_select),
            (GSM8K_FLEXIBLE, -1)
        );
        assert!(rules.exact_match.ignore_case);
        let samsum: EvaluationSpec = parse_body(
            br#"{"old": {"model": "old"}, "new": {"model": "new"}, "dataset": "d",
                "task": {"type": "generation", "preset": "samsum", "stop": ["END"]}}"#,
        )
        .unwrap();
        let rules = samsum.task.generation_rules().unwrap();
        assert_eq!(
            (rules.stop, rules.no_repeat_ngram_size),
            (vec!["END".to_string()], 2)
        );
        assert_eq!(rules.metric, GenerationMetric::Rouge1);

        let bad: EvaluationSpec = parse_body(
            br#"{"old": {"model": "old"}, "new": {"model": "new"}, "dataset": "d",
                "task": {"type": "generation", "extract": {"regex": "(unclosed"},
                         "exact_match": {"regexes_to_ignore": [",", "[z-a]"]}}}"#,
        )
        .unwrap();
        let (_root, resolver) = models();
        let fields: Vec<String> = bad
            .check(&resolver)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "task.extract.regex",
                "task.exact_match.regexes_to_ignore[1]"
            ]
        );
    }

    #[test]
    fn lists_beyond_their_bounds_are_named() {
        let many = |n: usize, item: &str| vec![item; n].join(", ");
        let body = format!(
            r#"{{"old": {{"model": "old"}}, "new": {{"model": "new"}}, "dataset": "d",
                "task": {{"type": "generation", "stop": [{}],
                          "exact_match": {{"regexes_to_ignore": [{}]}}, "extract": {{"regex": "{}"}}}},
                "options": {{"slice_by": [{}], "max_slices": 0}},
                "gate": [{}]}}"#,
            many(33, "\"x\""),
            many(33, "\",\""),
            "a".repeat(1001),
            many(17, "\"id\""),
            many(101, r#"{"metric": "nfr", "max": 0.1}"#),
        );
        let spec: EvaluationSpec = parse_body(body.as_bytes()).unwrap();
        let (_root, resolver) = models();
        let errors = spec.check(&resolver).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "task.stop",
                "task.extract.regex",
                "task.exact_match.regexes_to_ignore",
                "options.max_slices",
                "options.slice_by",
                "gate",
            ]
        );
        assert!(
            errors
                .iter()
                .all(|e| e.message.starts_with("at most") || e.message.starts_with("must be from"))
        );
    }

    #[test]
    fn sampling_needs_both_sides_run_and_gates_on_sampled_need_sampling() {
        let (_root, resolver) = models();
        let recorded: EvaluationSpec = parse_body(
            br#"{"old": {"predictions": "p1"}, "new": {"model": "new"}, "dataset": "d",
                "task": {"type": "generation",
                         "sampling": {"samples": 4, "temperature": 0.7}}}"#,
        )
        .unwrap();
        let errors = recorded.check(&resolver).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "task.sampling");
        assert!(errors[0].message.starts_with("old is a recorded run"));
        let sampled: EvaluationSpec = parse_body(
            br#"{"old": {"model": "old"}, "new": {"model": "new"}, "dataset": "d",
                "task": {"type": "generation", "sampling": {"samples": 4, "temperature": 0.7}},
                "gate": [{"metric": "sampled.reliably_worse", "max": 0}]}"#,
        )
        .unwrap();
        sampled.check(&resolver).unwrap();
        let rules = sampled.task.generation_rules().unwrap();
        let sampling = rules.sampling.unwrap();
        assert_eq!(
            (sampling.top_p, sampling.top_k, sampling.seed),
            (1.0, None, 0)
        );
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        let errors = parse_body::<EvaluationSpec>(
            br#"{"old": {"model": "a"}, "new": {"model": "b"}, "dataset": "d", "task": {"type": "multiple_choice", "score": "f1"}}"#,
        )
        .unwrap_err();
        assert_eq!(errors[0].field, "task");
        let errors = parse_body::<EvaluationSpec>(
            br#"{"old": {"model": "a"}, "new": {"model": "b"}, "dataset": "d", "task": {"type": "multiple_choice"}, "gates": []}"#,
        )
        .unwrap_err();
        assert!(errors[0].message.contains("gates"));
    }
}
